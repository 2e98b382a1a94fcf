"""Bad inputs, generated: every subcommand answers with one clear error, before any model loads.

For each stage that reads a problems or traces file, hypothesis writes a broken file (random bytes,
invalid JSON, rows with wrong types or missing fields, a BOM in front of any of these, an empty
file) or passes a directory instead, and for each stage it draws a bad flag. The invariants:

* exit code 1 (a user error) or 2 (a usage error), never a crash;
* no traceback in the output, and the message names the file or the flag;
* an output that existed before is byte for byte the same, and no new output appears;
* `dail.models.load` is never called: inputs are checked before the expensive work.

And the whole command line, read from the command tree rather than listed here: every command with
any of its options and arguments drawn, each given a value of the wrong kind for its type (negative,
huge, empty, not a number, a path that is not there, odd unicode). Whatever is drawn, the command
ends with exit code 0, 1 or 2 and never with an exception; an input that is never there (or a config
that cannot hold) keeps each one from starting real work.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dail.cli import app

from conftest import cli_commands

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

GOOD = {"id": "p1", "problem": "What is 2+3?", "solution": "2 + 3 = 5. \\boxed{5}", "answer": "5"}
TRACE = {"problem_id": "p1", "sample": 0, "seed": 0, "text": "ab", "token_ids": [5, 6], "source": "LP",
         "logprob_learner": [-0.1, -2.0], "logprob_privileged": [-0.3, -0.2], "finish": "eos"}

# Values of the wrong JSON type for any field of a problem or a trace.
WRONG = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _broken_row(good: dict) -> st.SearchStrategy[bytes]:
    """A row of `good`'s shape with one field missing, mistyped, or a key that is not in the schema."""
    fields = sorted(good)
    missing = st.sampled_from([f for f in fields if f in ("id", "problem", "problem_id", "text", "token_ids")]).map(
        lambda f: {k: v for k, v in good.items() if k != f})
    mistyped = st.tuples(st.sampled_from(fields), WRONG).filter(
        lambda fv: not (fv[0] in ("solution", "answer") and fv[1] is None)).map(lambda fv: {**good, fv[0]: fv[1]})
    unknown = st.text("abcdefghij", min_size=3, max_size=8).filter(lambda k: k not in good).map(
        lambda k: {**good, k: 1})
    return st.one_of(missing, mistyped, unknown).map(lambda row: (json.dumps(row) + "\n").encode())


def bad_files(good: dict) -> st.SearchStrategy[bytes]:
    """Contents of a JSONL file that no stage may accept."""
    invalid_json = st.sampled_from(['{"id": "p1", "problem": ', "not json", "[1, 2]", '"text"', "{'id': 1}",
                                    '{"id": "p1", "id": "p2"}']).map(lambda s: (s + "\n").encode())
    random_bytes = st.binary(min_size=1, max_size=64).filter(_not_utf8_jsonl)
    body = st.one_of(invalid_json, random_bytes, _broken_row(good), st.just(b""), st.just(b"\n\n"))
    good_line = (json.dumps(good) + "\n").encode()
    # A good row before the bad one: the error must still name the bad one's line.
    return st.tuples(st.booleans(), st.booleans(), body).map(
        lambda t: (b"\xef\xbb\xbf" if t[0] else b"") + (good_line if t[1] and t[2].strip() else b"") + t[2])


def _not_utf8_jsonl(b: bytes) -> bool:
    # Random bytes that happen to be a valid row are not a bad file (vanishingly rare, but exact).
    try:
        text = b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return "\x00" in text or not text.strip() or text.strip()[0] != "{"


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    if result.exit_code not in (1, 2):
        raise AssertionError(f"exit {result.exit_code} for {args}: {result.output}\n{result.exception!r}")
    return result.exit_code, result.output


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def no_model(monkeypatch):
    """`dail.models.load` raises: a test that reaches it has let a bad input through to the expensive work."""
    import dail.models

    def load(*args, **kwargs):
        raise AssertionError("a model was loaded for a bad input")

    monkeypatch.setattr(dail.models, "load", load)
    # The tokenizer is cheap but not free; train reads it before the data, once per example.
    monkeypatch.setattr(dail.models, "load_tokenizer", functools.lru_cache(dail.models.load_tokenizer))


@pytest.fixture
def work(tmp_path):
    """A fresh folder per hypothesis example, holding a good problems file and existing outputs."""
    def make() -> Path:
        d = Path(tempfile.mkdtemp(dir=tmp_path))
        (d / "good.jsonl").write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
        (d / "out.jsonl").write_text("existing output\n", encoding="utf-8")
        (d / "evalout").mkdir()
        (d / "evalout" / "metrics.json").write_text("{}\n", encoding="utf-8")
        (d / "trainout").mkdir()
        (d / "trainout" / "notes.txt").write_text("kept\n", encoding="utf-8")
        return d
    return make


def _stage_args(stage: str, d: Path, model: str, bad: Path) -> list[str]:
    """The command line of `stage` with `bad` as its input file."""
    return {
        "validate": ["data", "validate", str(bad)],
        "waypoints": ["waypoints", "--data", str(bad), "--out", str(d / "out.jsonl")],
        "expand": ["expand", "--model", model, "--data", str(bad), "--out", str(d / "out.jsonl"), "--device", "cpu"],
        "eval": ["eval", "--model", model, "--data", str(bad), "--out", str(d / "evalout"), "--n", "2", "--device", "cpu"],
        "select": ["select", "--model", model, "--data", str(bad), "--out", str(d / "out.jsonl"), "--device", "cpu"],
        "train-traces": ["train", "--model", model, "--traces", str(bad), "--problems", str(d / "good.jsonl"),
                         "--out", str(d / "trainout"), "--device", "cpu"],
        "train-problems": ["train", "--model", model, "--traces", str(d / "traces.jsonl"), "--problems", str(bad),
                           "--out", str(d / "trainout"), "--device", "cpu"],
    }[stage]


STAGES = ["validate", "waypoints", "expand", "eval", "select", "train-traces", "train-problems"]


@pytest.mark.parametrize("stage", STAGES)
def test_bad_input_files_fail_cleanly(stage, work, no_model, tiny_model_dir):
    good = TRACE if stage == "train-traces" else GOOD

    @FUZZ
    @given(content=bad_files(good), as_dir=st.booleans())
    def check(content: bytes, as_dir: bool):
        d = work()
        (d / "traces.jsonl").write_text(json.dumps(TRACE) + "\n", encoding="utf-8")
        bad = d / "bad.jsonl"
        if as_dir and stage != "validate" or as_dir and content == b"":
            bad.mkdir()
        else:
            bad.write_bytes(content)
        before = _snapshot(d)
        code, output = _run(_stage_args(stage, d, tiny_model_dir, bad))
        assert code == 1, output
        assert "Traceback" not in output
        assert str(bad) in output, output
        after = _snapshot(d)
        assert after == before, f"outputs changed: {set(after) ^ set(before) or 'contents'}"
        shutil.rmtree(d)

    check()


BAD_FLAGS = {
    "device": ["tpu", "gpu", "cuda:x", "cuda", "cuda:7"],
    "n": ["0", "-3", "two"],
    "batch-size": ["0", "-1"],
    "limit": ["0", "-2"],
    "seed": ["x"],
    "temperature": ["nan?", "-1"],
    "max-new-tokens": ["0", "many"],
}
STAGE_FLAGS = {
    "expand": [*BAD_FLAGS, "tau", "retries"],
    "eval": [*BAD_FLAGS, "k", "budgets"],
    "select": ["device", "n", "batch-size", "limit", "seed", "max-new-tokens"],
    "train": ["device", "batch-size", "seed", "lr", "epochs", "grad-accum"],
}
MORE = {"tau": ["-0.5", "x"], "retries": ["0", "99"], "k": ["0", "64", "1,x"], "budgets": ["-5", "0,8", "a"],
        "lr": ["zero"], "epochs": ["-1"], "grad-accum": ["0"]}


@pytest.mark.parametrize("stage", sorted(STAGE_FLAGS))
def test_bad_flags_fail_cleanly(stage, work, no_model, tiny_model_dir):
    choices = [(flag, value) for flag in STAGE_FLAGS[stage] for value in {**BAD_FLAGS, **MORE}[flag]]

    @FUZZ
    @given(flag_value=st.sampled_from(choices))
    def check(flag_value: tuple[str, str]):
        flag, value = flag_value
        d = work()
        (d / "traces.jsonl").write_text(json.dumps(TRACE) + "\n", encoding="utf-8")
        args = {
            "expand": ["expand", "--data", str(d / "good.jsonl"), "--out", str(d / "out.jsonl")],
            "eval": ["eval", "--data", str(d / "good.jsonl"), "--out", str(d / "evalout"), "--n", "4"],
            "select": ["select", "--data", str(d / "good.jsonl"), "--out", str(d / "out.jsonl")],
            "train": ["train", "--traces", str(d / "traces.jsonl"), "--problems", str(d / "good.jsonl"),
                      "--out", str(d / "trainout")],
        }[stage]
        if flag != "n" and stage in ("expand", "select", "eval") and "--n" not in args:
            args += ["--n", "2"]
        args += ["--model", tiny_model_dir, f"--{flag}", value]
        if flag != "device":
            args += ["--device", "cpu"]
        before = _snapshot(d)
        code, output = _run(args)
        assert "Traceback" not in output
        named = {flag, flag.replace("-", "_"), f"--{flag}"}
        assert any(name in output for name in named), output
        assert _snapshot(d) == before
        shutil.rmtree(d)

    check()


def test_eval_default_k_follows_n(tmp_path):
    from dail.config import EvalConfig, load_config

    assert load_config(EvalConfig, None, {"data": "d", "out": "o", "n": 2}).k == [1, 2]
    assert load_config(EvalConfig, None, {"data": "d", "out": "o", "n": 12}).k == [1, 2, 4, 8]
    assert load_config(EvalConfig, None, {"data": "d", "out": "o"}).k == [1, 2, 4, 8, 16]


def test_a_binary_file_in_a_real_process(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(bytes(range(256)))
    out = subprocess.run([sys.executable, "-m", "dail", "data", "validate", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr + out.stdout and str(bad) in out.stderr


def test_a_torn_tail_on_a_finished_eval_is_repaired_without_a_model(tmp_path, tiny_model_dir, monkeypatch):
    import dail.models
    from dail import evaluate
    from dail.config import EvalConfig, load_config

    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    cfg = load_config(EvalConfig, None, {"model": tiny_model_dir, "data": str(data), "out": str(tmp_path / "ev"),
                                         "n": 2, "device": "cpu", "sampling.max_new_tokens": 4})
    first = evaluate.run(cfg)
    samples = tmp_path / "ev" / "samples.jsonl"
    content = samples.read_bytes()
    with samples.open("ab") as f:
        f.write(b'{"problem_id": "p1", "sam')  # a kill mid-row, after every row was written
    monkeypatch.setattr(dail.models, "load", lambda *a, **k: pytest.fail("nothing was left to sample"))
    again = evaluate.run(cfg)
    assert samples.read_bytes() == content
    assert {k: v for k, v in again.items() if k != "versions"} == {k: v for k, v in first.items() if k != "versions"}


def test_a_failed_eval_leaves_no_directory_behind(tmp_path, no_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\xfe")
    code, output = _run(["eval", "--data", str(bad), "--out", str(tmp_path / "ev"), "--device", "cpu"])
    assert code == 1 and str(bad) in output and not (tmp_path / "ev").exists()


# --------------------------------------------------------------------------- every command, every option

# Values no option should take, by the option's type; every one must end in an answer, not a crash.
NASTY_TEXT = ["", " ", "missing/none.jsonl", "é/ü☃.jsonl", "\u202e\u200b", "😀", "a" * 300, "hub:nobody/none"]
NASTY = {
    int: ["-1", "0", "-99999999999999999999", "99999999999999999999", "", "x", "1.5", "٣"],
    float: ["-1", "0", "nan", "inf", "-inf", "1e999", "", "x", "1,5"],
    str: NASTY_TEXT,
}
# Per command, what makes it fail before any work whichever of its other options are drawn: a missing
# input, a config that cannot hold, an output that cannot be made. An option drawn replaces its anchor,
# and the values drawn for an input are never one that exists.
ANCHORS = {
    "waypoints": {"--data": "missing.jsonl", "--out": "w.jsonl"},
    "expand": {"--data": "missing.jsonl", "--out": "t.jsonl"},
    "eval": {"--data": "missing.jsonl", "--out": "ev"},
    "select": {"--data": "missing.jsonl", "--out": "s.jsonl"},
    "train": {"--traces": "missing.jsonl", "--problems": "missing.jsonl", "--out": "ad"},
    "rl": {"--data": "missing.jsonl", "--out": "rlo"},
    "hints": {"--data": "missing.jsonl", "--out": "h.jsonl"},
    "report": {"inputs": "missing-run"},
    "run": {"--config": "run.toml"},
    "study": {"--config": "study.toml"},
    "demo": {},  # its config is run.toml (patched in below)
    "data validate": {"file": "missing.jsonl"},
    "data generate": {"--out": "afile/x.jsonl"},  # under a file: cannot be made
    "data import": {"name": "no-such-set"},
    "testbed build": {"--config": "build.toml", "--out": "tb"},
    "testbed probe": {"--build": "missing-build"},
}
MODEL_STAGES = ("expand", "eval", "select", "train", "rl", "hints")


def _nasty(param) -> st.SearchStrategy[list[str]]:
    """How a drawn parameter appears on the command line: a flag, or the option (or argument) with a bad value."""
    if param.param_type_name == "option" and param.is_flag:
        return st.sampled_from([[o] for o in (*param.opts, *param.secondary_opts) if o.startswith("--")])
    annotation = param.type_descriptor.annotation
    values = NASTY.get(annotation, NASTY_TEXT)
    if param.param_type_name == "argument":
        return st.sampled_from(values).map(lambda v: [v])
    return st.sampled_from(values).map(lambda v: [param.opts[0], v])


def _line(name: str, drawn: dict[str, list[str]], model: str) -> list[str]:
    """The whole command line: the anchors not drawn over, then the drawn options, then the arguments."""
    anchors = {**ANCHORS[name], **({"--model": model} if name in MODEL_STAGES else {})}
    options = [x for key, value in anchors.items() if key.startswith("--") and key not in drawn for x in (key, value)]
    options += [x for key, v in drawn.items() if key.startswith("--") for x in v]
    arguments = [v[0] for key, v in drawn.items() if not key.startswith("--")]
    arguments += [value for key, value in anchors.items() if not key.startswith("--") and key not in drawn]
    return [*name.split(), *options, "--", *arguments] if arguments else [*name.split(), *options]


def _workspace(d: Path, model: str) -> None:
    """The files the anchors name: configs that hold until their data is read, a file to put nothing under."""
    (d / "afile").write_text("a file\n")
    run = (f'model = "{model}"\ntrain_data = "missing.jsonl"\neval_data = ["missing-eval.jsonl"]\n'
           'methods = ["base", "dail"]\ndevice = "cpu"\n')
    (d / "run.toml").write_text(f'name = "r"\nout_dir = "runs"\n{run}')
    (d / "study.toml").write_text(f'name = "s"\nout_dir = "studies"\nseeds = [0]\n[run]\n{run}')
    (d / "build.toml").write_text("stesp = 3\n")


COMMANDS = cli_commands()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_flag_value_ends_in_a_traceback(name, tmp_path, monkeypatch, no_model, tiny_model_dir):
    params = {p.opts[0] if p.param_type_name == "option" else p.name: p for p in COMMANDS[name].params
              if p.name != "help"}
    monkeypatch.setattr("dail.cli.runs.find_demo_config", lambda: Path("run.toml").resolve())

    @FUZZ
    @given(drawn=st.sets(st.sampled_from(sorted(params)), min_size=1).flatmap(
        lambda keys: st.fixed_dictionaries({k: _nasty(params[k]) for k in sorted(keys)})))
    def check(drawn: dict[str, list[str]]):
        d = Path(tempfile.mkdtemp(dir=tmp_path))
        _workspace(d, tiny_model_dir)
        args = _line(name, drawn, tiny_model_dir)
        with contextlib.chdir(d):  # only around the command: hypothesis resolves paths of its own
            result = CliRunner().invoke(app, args)
        crash = None if isinstance(result.exception, (SystemExit, type(None))) else result.exception
        assert crash is None and result.exit_code in (0, 1, 2), f"{args}: {result.output}\n{crash!r}"
        assert "Traceback" not in result.output, args
        shutil.rmtree(d, ignore_errors=True)

    check()
