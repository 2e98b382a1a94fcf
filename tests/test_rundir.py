"""The run directory's names: one rule for configs beside outputs, one short name per data spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dail.rundir import RunDir, RunLog, config_path, split_name


@pytest.mark.parametrize("spec, name", [
    ("arith-test", "arith-test"), ("data/aime24.jsonl", "aime24"), ("gpqa.json", "gpqa"),
    ("sets/aime24", "aime24"), ("/abs/path/x.jsonl", "x"),
])
def test_split_name(spec, name):
    assert split_name(spec) == name


def test_config_beside_every_output():
    assert config_path("runs/a/traces.jsonl") == Path("runs/a/traces.config.toml")
    assert config_path("runs/a/eval/dail/test") == Path("runs/a/eval/dail/test/config.toml")
    assert config_path("runs/a/adapter/dail") == Path("runs/a/adapter/dail/config.toml")


def test_layout_and_log(tmp_path):
    run = RunDir(tmp_path)
    assert run.eval_dir("dail", "data/aime24.jsonl") == tmp_path / "eval" / "dail" / "aime24"
    assert run.traces("traces-star.jsonl").parent == tmp_path and run.adapter("dail").parent.name == "adapter"
    assert run.stage_config("eval:dail/aime24") == tmp_path / "stages" / "eval-dail-aime24.toml"
    log = RunLog(run.log)
    log("expand:traces.jsonl", "start")
    log("run", "done", seconds=1.5)
    rows = [json.loads(line) for line in run.log.read_text().splitlines()]
    assert [set(r) for r in rows] == [{"time", "stage", "event"}, {"time", "stage", "event", "seconds"}]
