"""Shared fixtures and helpers: offline mode for every test, the embedded model's tokenizer, tiny
random models (on the embedded tokenizer, on a 97-token vocabulary, on a word-level tokenizer),
hand-written traces and their provenance records, another process holding a lock, and the comparison
of output rows that must hold on any CPU.

Test modules import the helpers from here (`from conftest import ...`), never from each other."""

from __future__ import annotations

import json
import math
import os
from html.parser import HTMLParser
from pathlib import Path

# Set before transformers is imported anywhere: tests never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest


@pytest.fixture(scope="session")
def embedded_path() -> str:
    """Directory of the embedded model's converted weights and tokenizer (converted once)."""
    from dail.models import resolve

    return resolve("smollm2-135m").path


@pytest.fixture(scope="session")
def tokenizer(embedded_path):
    """The embedded model's tokenizer (SmolLM2 chat template)."""
    from dail.models import load_tokenizer

    return load_tokenizer(embedded_path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_path) -> str:
    """A random-weight 2-layer Llama with the embedded tokenizer, saved like a real model."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), embedded_path)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: tiny models gain nothing from intra-op threads, and on a busy
    machine every op of a 2-thread pool waits for the slower thread (~5x slower under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli_commands() -> dict:
    """Every leaf command of `dail` by its words ('expand', 'data generate') -> its command object."""
    import typer

    from dail.cli import app

    def walk(cmd, words):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, (*words, name))
        else:
            yield " ".join(words), cmd

    return dict(walk(typer.main.get_command(app), ()))


# ---------------------------------------------------------------------------------------------
# Tiny random models

TINY_VOCAB = 97


def random_llama(vocab_size: int, *, seed: int = 0, attn: str | None = None, **config):
    """A Llama with seeded random weights: 2 layers, hidden 32, 4 heads (2 key/value), unless `config` says otherwise.

    Every tiny Llama of the tests comes from here, so one seed and one set of sizes give the same
    weights in every module that asks for them.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, **{**sizes, **config})
    if attn is not None:
        cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg)


def save_tiny_llama(path, tokenizer_dir: str, *, seed: int = 0, hidden: int = 32, **config) -> str:
    """A random Llama on the tokenizer in `tokenizer_dir` (its vocabulary and special ids, tied embeddings),
    saved with that tokenizer in `path` like a real model; returns `path`."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = random_llama(len(tok), seed=seed, hidden_size=hidden, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True, **config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def tiny_llama(attn: str = "sdpa"):
    """A 2-layer float64 Llama of vocabulary TINY_VOCAB with seeded random weights."""
    import torch

    return random_llama(TINY_VOCAB, attn=attn, max_position_embeddings=256).to(torch.float64).eval()


def tiny_qwen2():
    """A 2-layer float64 Qwen2 of vocabulary TINY_VOCAB with seeded random weights."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    config = Qwen2Config(vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return Qwen2ForCausalLM(config).to(torch.float64).eval()


# A word-level vocabulary for stage tests: every word of their problems, solutions and prompt templates.
WORDS = "<pad> </s> <unk> what is two plus three four five seven the answer boxed { } \\ expert solution " \
        "add to get so = + ? . , : here an write your own complete detailed step by reasoning for problem " \
        "filling in every skips do not mention put final within please reason and"


def word_tokenizer():
    """A word-level tokenizer over WORDS (no chat template): stage tests decode whole words, not bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(WORDS.split()))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def word_llama(tokenizer, **config):
    """A seeded random Llama (`random_llama`, context 512 unless given) over a word tokenizer's vocabulary."""
    return random_llama(len(tokenizer), **{"max_position_embeddings": 512, **config}).eval()


# ---------------------------------------------------------------------------------------------
# Traces written by hand


def hand_trace(problem_id: str, ids: list[int], *, sample: int = 0, text: str = "x", finish: str = "eos",
               kept: bool = True):
    """A `Trace` of the given token ids, every token the privileged model's with log-prob 0; a trace
    that is not kept is rejected as "wrong_answer"."""
    from dail.data import Trace

    n = len(ids)
    return Trace(problem_id=problem_id, sample=sample, seed=0, text=text, token_ids=ids, source="P" * n,
                 logprob_learner=[0.0] * n, logprob_privileged=[0.0] * n, finish=finish, kept=kept,
                 reject_reason=None if kept else "wrong_answer")


def write_provenance(target, spec: str, model, tokenizer) -> None:
    """Beside a traces file or in an adapter directory, the provenance record the stage that writes it would:
    what stages refuse to read or add to without one."""
    from dail import provenance
    from dail.rundir import provenance_path

    provenance.write(provenance_path(target), provenance.record(spec, model, tokenizer))


# Decode modes of dail.engine.Engine that must all give the same tokens as the slow references.
ENGINE_MODES = {
    "per-step": {},  # the CPU default: a host read every step, exact batch sizes
    "window-5-exact": {"sync_every": 5, "bucketed": False},
    "window-4-buckets": {"sync_every": 4, "bucketed": True},
    "graphs-emulated": {"sync_every": 16, "bucketed": True, "graphs": True},  # the GPU default's logic
}


def traced_graph_engine(model, **kw):
    """An Engine whose steps are captured and replayed the way CUDA graphs are, but on CPU.

    Each (bucket, choose) step is traced once into an aten graph (make_fx) and every later step
    replays that trace: the step's Python never runs again, so any value it computed on the host
    (a Python int step counter, a data-dependent branch) is frozen at capture time exactly as in a
    CUDA graph, and the tokens come out wrong. `captures` counts (bucket, choose) captures.
    """
    from types import SimpleNamespace

    from torch.fx.experimental.proxy_tensor import make_fx

    from dail.engine import Engine

    class TracedGraphs(Engine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.cuda_graphs = True  # the CPU constructor refuses it; the capture below needs no CUDA
            self.captures: list[int] = []

        def _capture(self, ws, groups, choose):
            saved = [x.clone() for x in ws.state()]
            traced = make_fx(lambda: self._step(ws, groups, choose))()  # tracing runs the step once
            for x, value in zip(ws.state(), saved):
                x.copy_(value)
            self.captures.append(groups)
            return SimpleNamespace(replay=traced)

    return TracedGraphs(model, **kw)


@pytest.fixture(params=list(ENGINE_MODES))
def engine_mode(request):
    """A factory `make(model, **kwargs) -> Engine` for one decode mode of ENGINE_MODES."""
    from dail.engine import Engine

    settings = dict(ENGINE_MODES[request.param])
    graphs = settings.pop("graphs", False)

    def make(model, **kwargs):
        return (traced_graph_engine if graphs else Engine)(model, **settings, **kwargs)

    return make


# ---------------------------------------------------------------------------------------------
# Output rows compared across machines

# Another CPU's kernels (AVX-512 BLAS, ATEN_CPU_CAPABILITY=default, another thread count) move a
# float64 result by a few ulps (~1e-16 of it), a real change by far more; the absolute floor covers
# log-probs near 0, where the ulps of the terms that cancelled are larger than the result's own.
ROW_RTOL = 1e-9
ROW_ATOL = 1e-12


def assert_same_rows(got: list, want: list, *, rtol: float = ROW_RTOL, atol: float = ROW_ATOL) -> None:
    """Rows equal in every discrete value, and in every float to 1e-9 relative with a 1e-12 absolute floor.

    Discrete means everything that is not a float: ids, sample indices, texts, token ids, sources,
    answers, flags, None, the number and order of rows, and each dict's keys in their order, at any
    depth of nesting. A float must be a float on both sides and within max(rtol * max(|a|, |b|),
    atol) (math.isclose; rtol = ROW_RTOL = 1e-9, atol = ROW_ATOL = 1e-12 unless given); NaN equals only NaN and an infinity only itself. The message names the
    row, its (problem_id, sample) when it has them, and the path to the first difference.
    """
    assert isinstance(got, list) and isinstance(want, list), "rows are lists"
    assert len(got) == len(want), f"{len(got)} rows, want {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        name = f"row {i}"
        if isinstance(w, dict) and "problem_id" in w:
            name += f" ({w['problem_id']}, sample {w.get('sample')})"
        _assert_same(g, w, name, rtol, atol)


def _assert_same(got, want, where: str, rtol: float, atol: float) -> None:
    # type() rather than isinstance: True must not pass for 1, nor 1 for 1.0
    assert type(got) is type(want), f"{where}: {got!r} ({type(got).__name__}) != {want!r} ({type(want).__name__})"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            _assert_same(got[key], want[key], f"{where}.{key}", rtol, atol)
    elif isinstance(want, list):
        assert len(got) == len(want), f"{where}: {len(got)} items != {len(want)}"
        for j, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{where}[{j}]", rtol, atol)
    elif isinstance(want, float):
        same = (math.isnan(got) and math.isnan(want)) or got == want or (
            math.isfinite(got) and math.isfinite(want) and math.isclose(got, want, rel_tol=rtol, abs_tol=atol))
        assert same, f"{where}: {got!r} != {want!r} (rtol {rtol}, atol {atol})"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def read_rows(path: Path) -> list:
    """The rows of a JSONL file; a line that is not JSON (a torn write) fails here."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def assert_same_jsonl(got: Path, want: Path, **tolerance) -> None:
    """Two JSONL files hold the same rows in the sense of `assert_same_rows`, each line ended by a newline."""
    for path in (got, want):
        text = Path(path).read_bytes()
        assert not text or text.endswith(b"\n"), f"{path}: last line not ended"
    try:
        assert_same_rows(read_rows(got), read_rows(want), **tolerance)
    except AssertionError as err:
        raise AssertionError(f"{got} differs from {want}: {err}") from None


# ---------------------------------------------------------------------------------------------
# HTML pages (report, viewer)

HTML_VOID = {"meta", "input", "img", "br", "hr", "link"}


class StrictHTML(HTMLParser):
    """Fails on a closing tag that does not match the open one; records text and scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in HTML_VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_html(path: Path) -> StrictHTML:
    parser = StrictHTML()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.stack == [], f"unclosed: {parser.stack}"
    assert "script" not in parser.tags  # every piece of data text was escaped
    return parser


@pytest.fixture
def holder():
    """`holder(path)`: another process holding the lock of `path` until the test ends (returns its Popen)."""
    import subprocess
    import sys

    procs = []

    def hold(path: Path) -> subprocess.Popen:
        code = ("import sys; from dail.distributed import OutputLock; "
                f"OutputLock({str(path)!r}).acquire(); print('locked', flush=True); sys.stdin.read()")
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def launch_two(tmp_path: Path, script: str, cfg) -> None:
    """Run `script` under `torch.distributed.run` with 2 CPU processes (gloo), its argument the config `cfg` as JSON."""
    import subprocess
    import sys

    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    (tmp_path / "launch.py").write_text(script)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp_path / "launch.py"), str(tmp_path / "cfg.json")],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
