"""Experiment trackers: names checked against accelerate's, a missing package named, none by default, and a run's
pass@k read back from the TensorBoard event file (a training run's steps: tests/test_train.py)."""

from __future__ import annotations

import pytest

from dail import trackers
from dail.config import ConfigError, RunConfig, TrainConfig, load_config


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the TensorBoard event files in `logdir`, as (step, value) pairs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_no_tracker_by_default():
    assert TrainConfig(problems="p", out="o").report_to == []
    assert RunConfig(name="r", train_data="arith-train", eval_data=["arith-test"]).report_to == []
    assert trackers.accelerator_kwargs([], "o") == {}


def test_an_unknown_tracker_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"report_to.*unknown tracker\(s\) \['tensorbord'\]"):
        load_config(TrainConfig, None, {"problems": "p", "out": "o", "report_to": ["tensorbord"]})
    run = {"name": "r", "train_data": "arith-train", "eval_data": ["arith-test"]}
    with pytest.raises(ConfigError, match=r"report_to.*unknown tracker\(s\) \['tb'\]"):
        load_config(RunConfig, None, {**run, "report_to": ["tb"]})
    # a run's trackers are the run's, for its training and its results alike: not a [train] key
    with pytest.raises(ConfigError, match="unknown key 'train.report_to'"):
        load_config(RunConfig, None, {**run, "train.report_to": ["tensorboard"]})
    assert load_config(TrainConfig, None, {"problems": "p", "out": "o", "report_to": ["wandb", "all"]}).report_to \
        == ["wandb", "all"]  # known names load on a machine without their packages


def test_a_tracker_not_installed_names_its_pip_package(monkeypatch):
    monkeypatch.setattr("accelerate.tracking._available_trackers", [])
    with pytest.raises(ConfigError, match="report_to: .*'tensorboard', 'wandb'.* pip install tensorboard wandb"):
        trackers.require_installed(["tensorboard", "wandb"])
    trackers.require_installed(["all"])  # whatever is installed, possibly nothing
    trackers.require_installed([])


def test_hparams_are_flat_scalars():
    cfg = TrainConfig(problems="p", out="o", lora={"target_modules": ["q_proj"]}, report_to=["tensorboard"])
    flat = trackers.hparams(cfg)
    assert flat["lr"] == cfg.lr and flat["lora.r"] == cfg.lora.r and flat["lora.target_modules"] == '["q_proj"]'
    assert "max_steps" not in flat and not any(k.startswith("prompts.") for k in flat)
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())


def test_a_runs_pass_at_k_reads_back_from_tensorboard(tmp_path):
    table = {"base": {"arith-test": {"pass_at_k": {"1": 0.125, "4": 0.3}, "mean_tokens": 41.5}},
             "dail": {"arith-test": {"pass_at_k": {"1": 0.25, "4": 0.7}, "mean_tokens": 30.25},
                      "aime24": {"pass_at_k": {"1": 0.0, "4": 1 / 3}, "mean_tokens": 812.0}}}
    config = RunConfig(name="r", train_data="arith-train", eval_data=["arith-test", "aime24"])
    trackers.log_results(["tensorboard"], tmp_path, table, config)
    got = _scalars(tmp_path / trackers.PROJECT)
    want = {f"eval/{split}/{method}/pass@{k}": v for method, splits in table.items() for split, row in splits.items()
            for k, v in row["pass_at_k"].items()}
    want |= {f"eval/{split}/{method}/mean_tokens": row["mean_tokens"] for method, splits in table.items()
             for split, row in splits.items()}
    assert set(got) == set(want)
    for tag, value in want.items():
        assert got[tag] == [(0, pytest.approx(value, rel=1e-7))], tag  # float32 in the event file

    # A run whose results change logs again: the tracker run holds the new values only.
    table["dail"]["arith-test"]["pass_at_k"]["1"] = 0.5
    trackers.log_results(["tensorboard"], tmp_path, table, config)
    assert _scalars(tmp_path / trackers.PROJECT)["eval/arith-test/dail/pass@1"] == [(0, 0.5)]
