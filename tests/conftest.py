"""Shared fixtures: offline mode for every test, the embedded model's tokenizer, tiny models."""

from __future__ import annotations

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
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(embedded_path)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: tiny models gain nothing from intra-op threads, and on a busy
    machine every op of a 2-thread pool waits for the slower thread (~5x slower under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_VOCAB = 97


def tiny_llama(attn: str = "sdpa"):
    """A 2-layer float64 Llama of vocabulary TINY_VOCAB with seeded random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    config._attn_implementation = attn
    return LlamaForCausalLM(config).to(torch.float64).eval()


def tiny_qwen2():
    """A 2-layer float64 Qwen2 of vocabulary TINY_VOCAB with seeded random weights."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    config = Qwen2Config(vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return Qwen2ForCausalLM(config).to(torch.float64).eval()


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
