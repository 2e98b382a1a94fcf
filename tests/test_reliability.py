"""Nothing silent: one writer per output (a second one stops, naming the file and the holder's pid),
a traces file with a key written twice is refused, and a resume never mixes two settings (expand,
eval and `dail run` list each changed setting as `name: old -> new`; `--fresh` starts over)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dail import distributed as dist
from dail import pipeline
from dail.cli import app
from dail.config import ConfigError, EvalConfig, ExpandConfig, RunConfig, save_config, to_toml
from dail.data import DataError, Problem, read_traces, write_jsonl
from dail.distributed import OutputInUse, OutputLock, ShardedJsonl
from dail.evaluate import run as evaluate
from dail.expand import run as expand

from conftest import word_llama, word_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def keys_of(path: Path) -> list[tuple[str, int]]:
    return [(r["problem_id"], r["sample"]) for r in map(json.loads, path.read_text().splitlines())]


# --------------------------------------------------------------------------------------------------
# one writer per output


def test_a_second_sink_on_one_output_stops_before_writing(tmp_path):
    out = tmp_path / "rows.jsonl"
    keys = [("a", 0), ("a", 1), ("b", 0)]
    with ShardedJsonl(out, keys) as first:
        first.put(0, {"problem_id": "a", "sample": 0})
        # flock locks belong to an open file: a second open in this very process is a second writer.
        with pytest.raises(OutputInUse, match=re.escape(f"{out}: another process (pid {os.getpid()}) is writing")):
            ShardedJsonl(out, keys)
        first.put(1, {"problem_id": "a", "sample": 1})
        first.put(2, {"problem_id": "b", "sample": 0})
    assert not OutputLock(out).file.exists()  # released, and its file removed
    with ShardedJsonl(out, keys) as again:  # the output is free again: nothing left to do
        assert again.todo == []
    assert keys_of(out) == keys


def test_a_lock_held_by_another_process_names_its_pid_and_dies_with_it(tmp_path, holder):
    out = tmp_path / "rows.jsonl"
    proc = holder(out)
    with pytest.raises(OutputInUse) as err:
        ShardedJsonl(out, [("a", 0)])
    assert str(out) in str(err.value) and f"pid {proc.pid}" in str(err.value)
    assert not out.exists()  # refused before anything was opened
    proc.kill()  # no clean-up of its own: the kernel drops a dead holder's flock
    proc.wait()
    with ShardedJsonl(out, [("a", 0)]) as sink:
        sink.put(0, {"problem_id": "a", "sample": 0})
    assert keys_of(out) == [("a", 0)]


def test_each_rank_locks_its_part_and_rank_zero_the_output(tmp_path, monkeypatch):
    out = tmp_path / "rows.jsonl"
    monkeypatch.setattr(dist.ranks, "world_size", lambda: 2)
    monkeypatch.setattr(dist.ranks, "barrier", lambda: None)
    monkeypatch.setattr(dist.ranks, "gather", lambda obj: [obj])
    monkeypatch.setattr(dist.ranks, "rank", lambda: 1)
    sink = ShardedJsonl(out, [("a", 0), ("b", 0)])
    assert [lock.path for lock in sink._locks] == [dist.part_path(out, 1, 2)]
    sink.release()
    monkeypatch.setattr(dist.ranks, "rank", lambda: 0)
    sink = ShardedJsonl(out, [("a", 0), ("b", 0)])
    assert [lock.path for lock in sink._locks] == [out, dist.part_path(out, 0, 2)]
    sink.release()


def test_remove_output_deletes_the_file_its_parts_and_config_unless_in_use(tmp_path, holder):
    out = tmp_path / "rows.jsonl"
    files = [out, dist.part_path(out, 0, 2), dist.part_path(out, 1, 2), tmp_path / "rows.config.toml"]
    for path in files:
        path.write_text("x\n")
    keep = tmp_path / "other.jsonl"
    keep.write_text("x\n")
    assert dist.has_rows(out)
    proc = holder(out)
    with pytest.raises(OutputInUse, match=f"pid {proc.pid}"):
        dist.remove_output(out, files[-1])
    assert all(path.exists() for path in files)
    proc.kill()
    proc.wait()
    dist.remove_output(out, files[-1])
    assert not any(path.exists() for path in files) and keep.exists() and not dist.has_rows(out)


def test_train_refuses_an_adapter_directory_in_use(tmp_path, holder):
    from dail.config import TrainConfig
    from dail.train import run as train

    out = tmp_path / "adapter"
    proc = holder(out)
    with pytest.raises(OutputInUse, match=f"pid {proc.pid}"):
        train(TrainConfig(problems="arith-train", objective="sft-expert", out=str(out), device="cpu"))
    assert not out.exists()


def test_traces_with_a_key_written_twice_are_refused_by_name(tmp_path):
    row = {"problem_id": "q0", "sample": 1, "seed": 0, "text": "x", "token_ids": [1], "source": "L",
           "logprob_learner": [-1.0], "logprob_privileged": [-1.0], "finish": "eos"}
    path = tmp_path / "traces.jsonl"
    write_jsonl(path, [row, {**row, "sample": 2}, row])
    with pytest.raises(DataError, match=r"1 duplicate key\(s\): \('q0', 1\) in rows 1 and 3"):
        read_traces(path)


# --------------------------------------------------------------------------------------------------
# expand: one writer, one setting


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """A one-layer word-level model (conftest's `word_llama`) and three problems; `loads` counts model loads."""
    tokenizer = word_tokenizer()
    model = word_llama(tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, max_position_embeddings=256)
    loads = []
    monkeypatch.setattr("dail.models.load", lambda name, **kw: loads.append(name) or (model, tokenizer))
    problems = [Problem(id=f"q{i}", problem="what is two plus three ?", solution="the answer is \\boxed{5}",
                        answer="5") for i in range(3)]
    write_jsonl(tmp_path / "problems.jsonl", problems)
    cfg = ExpandConfig(data=str(tmp_path / "problems.jsonl"), out=str(tmp_path / "run" / "traces.jsonl"), n=2,
                       batch_size=6, seed=5, device="cpu", sampling={"max_new_tokens": 4})
    return cfg, loads


def test_expand_while_another_process_writes_stops_at_once(stage, holder):
    cfg, loads = stage
    proc = holder(cfg.out)
    with pytest.raises(OutputInUse, match=rf"pid {proc.pid}"):
        expand(cfg)
    assert loads == [] and not Path(cfg.out).exists()


def test_expand_resume_with_another_seed_stops_before_loading_the_model(stage, monkeypatch):
    cfg, loads = stage
    expand(cfg.model_copy(update={"limit": 2}))
    rows = Path(cfg.out).read_bytes()
    saved = Path(cfg.out).with_suffix(".config.toml").read_text()

    def no_model(*_, **__):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("dail.models.load", no_model)
    with pytest.raises(ConfigError) as err:
        expand(cfg.model_copy(update={"seed": 6, "tau": 0.5,
                                      "sampling": cfg.sampling.model_copy(update={"max_new_tokens": 5})}))
    message = str(err.value)
    for change in ("seed: 5 -> 6", "tau: 0.8 -> 0.5", "sampling.max_new_tokens: 4 -> 5", "--fresh"):
        assert change in message
    assert "limit" not in message and "batch_size" not in message
    assert Path(cfg.out).read_bytes() == rows  # nothing appended, the config not rewritten
    assert Path(cfg.out).with_suffix(".config.toml").read_text() == saved


def test_expand_resume_may_change_limit_batch_size_and_device(stage):
    cfg, loads = stage
    expand(cfg.model_copy(update={"limit": 2}))
    expand(cfg.model_copy(update={"batch_size": 1}))  # the third problem is added
    assert keys_of(Path(cfg.out)) == [(f"q{i}", s) for i in range(3) for s in range(2)]


def test_expand_fresh_starts_over(stage):
    cfg, loads = stage
    expand(cfg)
    other = cfg.model_copy(update={"seed": 6})
    expand(other, fresh=True)
    traces = read_traces(cfg.out, kept_only=False)
    assert len(traces) == 6 and {t.seed for t in traces} == {6}
    assert 'seed = 6' in Path(cfg.out).with_suffix(".config.toml").read_text()


def test_expand_cli_says_what_changed_in_one_line_and_fresh_starts_over(stage, tmp_path):
    cfg, loads = stage
    path = tmp_path / "expand.toml"
    save_config(cfg, path)
    assert CliRunner().invoke(app, ["expand", "--config", str(path)]).exit_code == 0
    result = CliRunner().invoke(app, ["expand", "--config", str(path), "--seed", "6"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "seed: 5 -> 6" in result.output and "--fresh" in result.output
    result = CliRunner().invoke(app, ["expand", "--config", str(path), "--seed", "6", "--fresh"])
    assert result.exit_code == 0, result.output
    assert {t.seed for t in read_traces(cfg.out, kept_only=False)} == {6}


# --------------------------------------------------------------------------------------------------
# eval


def test_eval_resume_lists_old_and_new_values_and_fresh_starts_over(tmp_path, tiny_model_dir):
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "int", "problem": "What is 2 + 3?", "answer": "5"}) + "\n")
    cfg = EvalConfig(model=tiny_model_dir, data=str(tmp_path / "p.jsonl"), out=str(tmp_path / "o"), n=1, k=[1],
                     device="cpu", sampling={"max_new_tokens": 4}, force_answer_tokens=2)
    evaluate(cfg)
    with pytest.raises(ConfigError) as err:
        evaluate(cfg.model_copy(update={"seed": 1, "presence_penalty": 1.5}))
    assert "seed: 0 -> 1" in str(err.value) and "presence_penalty: 0.0 -> 1.5" in str(err.value)
    assert "--fresh" in str(err.value)
    evaluate(cfg.model_copy(update={"seed": 1}), fresh=True)
    rows = [json.loads(line) for line in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [1]


# --------------------------------------------------------------------------------------------------
# dail run


class Stop(Exception):
    """Raised by the first stage: the test is about what happens before any stage runs."""


def _stages_stop(monkeypatch):
    def stop(self, *args, **kwargs):
        raise Stop

    monkeypatch.setattr(pipeline._Stages, "__call__", stop)


@pytest.fixture
def run_cfg(tmp_path) -> RunConfig:
    return RunConfig(name="r", out_dir=str(tmp_path / "runs"), train_data="arith-train", eval_data=["arith-test"],
                     device="cpu")


def test_run_with_a_changed_seed_stops_and_keeps_the_config(run_cfg, monkeypatch):
    root = pipeline.run_dir(run_cfg)
    root.root.mkdir(parents=True)
    root.config.write_text(to_toml(run_cfg))
    with pytest.raises(ConfigError) as err:
        pipeline.run(run_cfg.model_copy(update={"seed": 1}))
    assert "seed: 0 -> 1" in str(err.value) and "--fresh" in str(err.value)
    assert root.config.read_text() == to_toml(run_cfg)


def test_run_may_change_where_and_how_it_runs(run_cfg, monkeypatch):
    root = pipeline.run_dir(run_cfg)
    root.root.mkdir(parents=True)
    root.config.write_text(to_toml(run_cfg))
    _stages_stop(monkeypatch)
    moved = RunConfig.model_validate({**run_cfg.model_dump(), "device": "auto", "launcher": "accelerate",
                                      "num_processes": 2, "methods": ["base"], "eval": {"batch_size": 3}})
    with pytest.raises(Stop):  # past the check: the first stage was reached
        pipeline.run(moved)
    digests = {"arith-train": "bundled:arith-train", "arith-test": "bundled:arith-test"}  # the run adds them
    assert root.config.read_text() == to_toml(moved.model_copy(update={"data_digests": digests}))


def test_run_fresh_removes_only_a_run_directory(run_cfg, monkeypatch):
    root = pipeline.run_dir(run_cfg)
    root.root.mkdir(parents=True)
    (root.root / "traces.jsonl").write_text("old\n")
    with pytest.raises(ConfigError, match="not a run directory"):
        pipeline.run(run_cfg, fresh=True)
    assert (root.root / "traces.jsonl").exists()
    root.config.write_text(to_toml(run_cfg))
    _stages_stop(monkeypatch)
    with pytest.raises(Stop):
        pipeline.run(run_cfg.model_copy(update={"seed": 1}), fresh=True)
    assert not (root.root / "traces.jsonl").exists() and "seed = 1" in root.config.read_text()


def test_two_runs_of_one_directory(run_cfg, holder):
    proc = holder(pipeline.run_dir(run_cfg).root)
    result = CliRunner().invoke(app, ["run", "--config", str(_toml(run_cfg))])
    assert result.exit_code == 1 and f"pid {proc.pid}" in result.output and "Traceback" not in result.output


def _toml(cfg: RunConfig) -> Path:
    path = Path(cfg.out_dir).parent / "run.toml"
    path.write_text(to_toml(cfg))
    return path


def test_a_training_resume_with_other_settings_stops_before_the_model_loads(tmp_path, monkeypatch):
    from dail.config import TrainConfig, save_config
    from dail.train import fit

    out = tmp_path / "adapter"
    (out / "checkpoints" / "step-2").mkdir(parents=True)
    (out / "checkpoints" / "step-2" / "state.json").write_text("{}")
    saved = TrainConfig(problems="arith-train", objective="sft-expert", out=str(out), lr=1e-4, resume=True)
    save_config(saved, out / "config.toml")
    monkeypatch.setattr("dail.models.load_tokenizer", lambda *a, **k: pytest.fail("loaded before the check"))
    with pytest.raises(ConfigError) as info:
        fit(saved.model_copy(update={"lr": 2e-4, "grad_accum": 2}))
    assert "lr: 0.0001 -> 0.0002" in str(info.value) and "grad_accum" not in str(info.value)


def test_expand_resume_over_other_data_at_the_same_path_stops(stage, monkeypatch):
    from dail.data import read_problems

    cfg, loads = stage
    expand(cfg)
    problems = read_problems(cfg.data)
    write_jsonl(cfg.data, [p.model_copy(update={"problem": p.problem + " again"}) for p in problems])  # same ids
    monkeypatch.setattr("dail.models.load", lambda *_, **__: pytest.fail("the model was loaded"))
    with pytest.raises(ConfigError, match=r"data_digest: \S+ -> \S+"):
        expand(cfg)


def test_run_over_a_changed_data_file_stops(tmp_path, monkeypatch):
    from dail.datasets import resolve_problems

    data = tmp_path / "train.jsonl"
    write_jsonl(data, resolve_problems("arith-train")[:3])
    cfg = RunConfig(name="d", out_dir=str(tmp_path / "runs"), train_data=str(data), eval_data=["arith-test"],
                    device="cpu")
    _stages_stop(monkeypatch)
    with pytest.raises(Stop):
        pipeline.run(cfg)  # records the data's digest in config.toml, then stops at the first stage
    with pytest.raises(Stop):
        pipeline.run(cfg)  # the same data: goes on
    write_jsonl(data, resolve_problems("arith-train")[3:6])
    with pytest.raises(ConfigError, match=f"data changed since the run used it \\({data}: "):
        pipeline.run(cfg)
