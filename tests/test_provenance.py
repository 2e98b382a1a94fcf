"""Provenance (dail.provenance) and the refusals built on it; prompts too long for the model's context.

Two tiny random models with the embedded tokenizer, A (conftest's tiny_model_dir) and B (same shapes,
other weights): traces and adapters made with A are refused by stages that load B, with one line
naming both; traces and adapters without a record are refused the same way (unless expand starts
afresh); corrupt adapters are one line too; a problem whose prompt cannot fit the context is
skipped and counted by expand and eval without being decoded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dail import models, provenance
from dail.cli import app
from dail.config import EvalConfig, ExpandConfig, TrainConfig
from dail.data import DataError, Problem, Trace, read_jsonl, write_jsonl
from dail.rundir import provenance_path

from conftest import hand_trace, save_tiny_llama, write_provenance

pytestmark = pytest.mark.usefixtures("one_thread")

CONTEXT = 2048  # tiny_model_dir's max_position_embeddings


@pytest.fixture(scope="module")
def model_b(tmp_path_factory, tiny_model_dir) -> str:
    """Model B: tiny_model_dir's architecture and tokenizer, other random weights."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-b"), tiny_model_dir, seed=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model_dir) -> dict[str, str]:
    """problems.jsonl and traces.jsonl (2 kept traces) with model A's provenance beside them."""
    root = tmp_path_factory.mktemp("prov-data")
    problems = [Problem(id=f"p{i}", problem=f"What is {i} + 1?", solution=f"{i} + 1 = {i + 1}.", answer=str(i + 1))
                for i in range(2)]
    write_jsonl(root / "problems.jsonl", problems)
    write_jsonl(root / "traces.jsonl", [hand_trace(p.id, [10, 11, 12]) for p in problems])
    model, tok = models.load(tiny_model_dir)
    provenance.write(provenance_path(root / "traces.jsonl"), provenance.record(tiny_model_dir, model, tok))
    return {"problems": str(root / "problems.jsonl"), "traces": str(root / "traces.jsonl")}


def _train_cfg(model: str, data: dict, out: Path, **kw) -> TrainConfig:
    base = dict(model=model, traces=data["traces"], problems=data["problems"], out=str(out), objective="nll",
                batch_size=2, max_steps=1, lora={"r": 2}, device="cpu", dtype="float32")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def adapter_a(tmp_path_factory, tiny_model_dir, data) -> str:
    """An adapter trained (one step) on model A, with its provenance.json."""
    from dail.train import run

    out = tmp_path_factory.mktemp("adapter-a")
    run(_train_cfg(tiny_model_dir, data, out))
    return str(out)


def _one_line(text: str) -> None:
    assert "\n" not in text.strip() and "Traceback" not in text


# --------------------------------------------------------------------------- the record


def test_fingerprint_is_stable_across_loads_and_dtypes_and_differs_between_weights(tiny_model_dir, model_b):
    a1, tok = models.load(tiny_model_dir)
    a2, _ = models.load(tiny_model_dir)
    a_bf16, _ = models.load(tiny_model_dir, dtype="bfloat16")
    b, tok_b = models.load(model_b)
    fa = provenance.weights_fingerprint(a1)
    assert fa == provenance.weights_fingerprint(a2) == provenance.weights_fingerprint(a_bf16)
    assert fa != provenance.weights_fingerprint(b)
    rec = provenance.record(tiny_model_dir, a1, tok)
    assert rec["tokenizer"]["vocab_size"] == len(tok)
    assert rec["tokenizer"]["hash"] == provenance.tokenizer_hash(tok_b)  # same tokenizer, saved twice


def test_provenance_path_follows_the_config_rule():
    assert provenance_path("runs/x/traces.jsonl") == Path("runs/x/traces.provenance.json")
    assert provenance_path("runs/x/adapter/dail") == Path("runs/x/adapter/dail/provenance.json")


# --------------------------------------------------------------------------- train


def test_train_refuses_traces_of_another_model_naming_both(tmp_path, tiny_model_dir, model_b, data):
    from dail.train import run

    with pytest.raises(provenance.ProvenanceError) as e:
        run(_train_cfg(model_b, data, tmp_path / "out"))
    msg = str(e.value)
    _one_line(msg)
    assert data["traces"] in msg and repr(tiny_model_dir) in msg and repr(model_b) in msg and "weights" in msg


def test_train_refuses_traces_without_a_record_before_the_model_loads(tmp_path, tiny_model_dir, data, monkeypatch):
    from dail.train import run

    traces = shutil.copy(data["traces"], tmp_path / "traces.jsonl")  # the rows without their record
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(provenance.ProvenanceError) as e:
        run(_train_cfg(tiny_model_dir, {**data, "traces": str(traces)}, tmp_path / "out"))
    _one_line(str(e.value))
    assert f"{traces}: traces without a provenance record" in str(e.value) and "dail expand --fresh" in str(e.value)


def test_train_writes_the_adapter_provenance(adapter_a, tiny_model_dir, data):
    rec = provenance.read(provenance_path(adapter_a))
    traces_rec = provenance.read(provenance_path(data["traces"]))
    assert rec["model"]["spec"] == tiny_model_dir and provenance.differences(rec, traces_rec) == []
    assert rec["prompts"] is not None


def test_train_cli_refuses_token_ids_past_the_vocabulary_with_file_and_line(tmp_path, tiny_model_dir, data):
    traces = tmp_path / "traces.jsonl"  # recorded as model A's: only its ids are wrong
    write_jsonl(traces, [hand_trace("p0", [10, 11]), hand_trace("p1", [10, 10**6])])
    shutil.copy(provenance_path(data["traces"]), provenance_path(traces))
    result = CliRunner().invoke(app, ["train", "--model", tiny_model_dir, "--traces", str(traces),
                                      "--problems", data["problems"], "--out", str(tmp_path / "out"),
                                      "--objective", "nll", "--max-steps", "1", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert f"{traces}:2" in result.output and "1000000" in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------- eval --adapter


def test_eval_cli_refuses_an_adapter_of_another_base_in_one_line(tmp_path, adapter_a, model_b, tiny_model_dir, data):
    result = CliRunner().invoke(app, ["eval", "--model", model_b, "--adapter", adapter_a, "--data", data["problems"],
                                      "--out", str(tmp_path / "eval"), "--n", "1", "--k", "1", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert adapter_a in text and repr(tiny_model_dir) in text and repr(model_b) in text
    assert not (tmp_path / "eval" / "samples.jsonl").exists()


def test_an_adapter_without_provenance_is_refused_like_one_of_another_base(tmp_path, adapter_a, tiny_model_dir):
    copy = shutil.copytree(adapter_a, tmp_path / "adapter")
    (copy / "provenance.json").unlink()  # the right base, but nothing says so
    with pytest.raises(models.AdapterError) as e:
        models.load(tiny_model_dir, adapter=copy)
    _one_line(str(e.value))
    assert str(copy) in str(e.value) and "provenance.json is missing" in str(e.value) and "dail train" in str(e.value)


def test_adapter_of_another_shape_is_one_line_even_when_its_record_is_wrong(tmp_path, adapter_a, tiny_model_dir):
    wide = save_tiny_llama(tmp_path / "wide", tiny_model_dir, seed=2, hidden=48)
    copy = shutil.copytree(adapter_a, tmp_path / "adapter")
    model, tok = models.load(wide)
    write_provenance(copy, wide, model, tok)  # a record that lies: only loading the weights can tell
    with pytest.raises(models.AdapterError) as e:
        models.load(wide, adapter=copy)
    _one_line(str(e.value))
    assert str(copy) in str(e.value) and repr(wide) in str(e.value) and "size mismatch" in str(e.value)


@pytest.mark.parametrize("damage", ["truncated-weights", "no-peft-type"])
def test_a_corrupt_adapter_is_one_line(tmp_path, adapter_a, tiny_model_dir, damage):
    copy = shutil.copytree(adapter_a, tmp_path / "adapter")
    if damage == "truncated-weights":
        weights = copy / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        config = json.loads((copy / "adapter_config.json").read_text())
        del config["peft_type"]
        (copy / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(models.AdapterError) as e:
        models.load(tiny_model_dir, adapter=copy)
    _one_line(str(e.value))
    assert str(copy) in str(e.value)


def test_the_right_adapter_loads(adapter_a, tiny_model_dir):
    model, _ = models.load(tiny_model_dir, adapter=adapter_a)
    assert hasattr(model, "disable_adapter")


# --------------------------------------------------------------------------- too long for the context


@pytest.fixture
def long_problems(tmp_path) -> str:
    rows = [Problem(id="short", problem="What is 2 + 3?", solution="2 + 3 = 5.", answer="5"),
            Problem(id="long", problem="What is " + "2 + " * 3000 + "3?", solution="Add them.", answer="6003")]
    write_jsonl(tmp_path / "problems.jsonl", rows)
    return str(tmp_path / "problems.jsonl")


@pytest.fixture
def decoded(monkeypatch) -> list[int]:
    """Prompt lengths the engine is asked to decode from; fails on one that cannot fit the context."""
    from dail.engine import Engine

    lengths: list[int] = []
    real = Engine.generate

    def spy(self, prompts, keys, choose, *, max_new_tokens, **kw):
        for rows in prompts:
            lengths.append(max(len(r) for r in rows))
            assert lengths[-1] + max_new_tokens <= CONTEXT, "a too-long prompt reached the engine"
        return real(self, prompts, keys, choose, max_new_tokens=max_new_tokens, **kw)

    monkeypatch.setattr(Engine, "generate", spy)
    return lengths


def test_expand_skips_and_counts_a_too_long_problem(tmp_path, tiny_model_dir, long_problems, decoded):
    from dail.expand import run

    out = tmp_path / "traces.jsonl"
    cfg = ExpandConfig(model=tiny_model_dir, data=long_problems, out=str(out), n=2, keep="all-correct",
                       device="cpu", sampling={"max_new_tokens": 4})
    summary = run(cfg)
    assert summary["too_long"] == 1 and summary["too_long_ids"] == ["long"]
    assert summary["traces"] == 2 and decoded
    rows = read_jsonl(out, Trace)
    assert {r.problem_id for r in rows} == {"short"}
    log = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert log[-1]["too_long_ids"] == ["long"]
    assert provenance.read(provenance_path(out))["model"]["spec"] == tiny_model_dir
    assert run(cfg)["too_long"] == 1  # a rerun counts it again, decodes nothing
    assert read_jsonl(out, Trace) == rows


def test_eval_skips_and_counts_a_too_long_problem(tmp_path, tiny_model_dir, long_problems, decoded):
    from dail.evaluate import run

    cfg = EvalConfig(model=tiny_model_dir, data=long_problems, out=str(tmp_path / "eval"), n=2, k=[1, 2],
                     device="cpu", sampling={"max_new_tokens": 4, "top_p": 1.0}, force_answer_tokens=2)
    metrics = run(cfg)
    assert metrics["n_too_long"] == 1 and metrics["too_long_ids"] == ["long"]
    assert metrics["n_problems"] == 1 and metrics["n_samples"] == 2 and decoded
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["n_too_long"] == 1
    assert run(cfg)["n_too_long"] == 1  # the rerun has no samples to add, and still counts it


def test_eval_with_every_problem_too_long_is_a_data_error(tmp_path, tiny_model_dir, long_problems, decoded):
    from dail.evaluate import run

    cfg = EvalConfig(model=tiny_model_dir, data=long_problems, out=str(tmp_path / "eval"), n=1, k=[1],
                     device="cpu", sampling={"max_new_tokens": 2040})
    with pytest.raises(DataError, match="too long"):
        run(cfg)
    assert not decoded


def _expand_one_of_two(tmp_path: Path, model: str) -> ExpandConfig:
    """Traces of the first of two problems, expanded with `model`; the config (limit 1) that made them."""
    from dail.expand import run

    rows = [Problem(id=f"q{i}", problem=f"What is {i} + 3?", solution="Add.", answer=str(i + 3)) for i in range(2)]
    write_jsonl(tmp_path / "problems.jsonl", rows)
    cfg = ExpandConfig(model=model, data=str(tmp_path / "problems.jsonl"), out=str(tmp_path / "traces.jsonl"),
                       n=1, limit=1, keep="all-correct", device="cpu", sampling={"max_new_tokens": 2})
    run(cfg)
    return cfg


def test_expand_refuses_to_add_to_traces_of_other_weights(tmp_path, tiny_model_dir, model_b):
    from dail.expand import run

    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    cfg = _expand_one_of_two(tmp_path, str(model_dir))
    shutil.rmtree(model_dir)
    shutil.copytree(model_b, model_dir)  # same name, other weights
    with pytest.raises(provenance.ProvenanceError, match="different weights"):
        run(cfg.model_copy(update={"limit": None}))  # more problems: a resume that would add rows


def test_expand_refuses_to_add_to_traces_without_a_record_unless_fresh(tmp_path, tiny_model_dir, monkeypatch):
    from dail.expand import run

    cfg = _expand_one_of_two(tmp_path, tiny_model_dir)
    provenance_path(cfg.out).unlink()  # rows nothing says the origin of
    real = models.load
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(provenance.ProvenanceError) as e:
        run(cfg.model_copy(update={"limit": None}))  # a resume that would add rows
    _one_line(str(e.value))
    assert f"{provenance_path(cfg.out)} is missing" in str(e.value) and "--fresh" in str(e.value)
    monkeypatch.setattr(models, "load", real)
    assert run(cfg.model_copy(update={"limit": None}), fresh=True)["traces"] == 2
    assert provenance.read(provenance_path(cfg.out))["model"]["spec"] == tiny_model_dir
