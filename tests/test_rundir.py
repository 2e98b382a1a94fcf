"""The run directory's names: one rule for configs beside outputs, one short name per data spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dail.rundir import AdapterDir, RunDir, RunLog, config_path, split_name


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
    log = RunLog(run.events)
    log("expand:traces.jsonl", "start")
    log("run", "done", seconds=1.5)
    rows = [json.loads(line) for line in run.events.read_text().splitlines()]
    assert [set(r) for r in rows] == [{"time", "stage", "event"}, {"time", "stage", "event", "seconds"}]


def test_only_the_layout_modules_spell_a_file_name_of_a_run():
    """A run's file names live in dail.rundir alone; other modules ask it (docstrings may name them)."""
    import ast

    import dail
    from dail.rundir import AdapterDir, CheckpointDir, EvalDir, ReportDir

    root = Path(dail.__file__).parent
    probe = Path("R")
    names = {p.name for p in (RunDir(probe).config, RunDir(probe).events, RunDir(probe).selected, RunDir(probe).waypoints,
                              RunDir(probe).metrics, *(RunDir(probe).traces(n) for n in (RunDir.MIXED, RunDir.PSD,
                                                                                       RunDir.STAR, RunDir.NEGATIVE)),
                              EvalDir(probe).samples, EvalDir(probe).metrics, AdapterDir(probe).log,
                              AdapterDir(probe).done, CheckpointDir(probe).state, CheckpointDir(probe).optimizer,
                              CheckpointDir(probe).scheduler, ReportDir(probe).html, ReportDir(probe).markdown,
                              ReportDir(probe).traces_html)}
    assert len(names) == 18
    spelt = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "rundir.py" or path.parent.name == "testbed" and path.name == "pretrain.py":
            continue  # the test-bed build's work directory is not a run's (its own names live there)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        spelt += [f"{path.relative_to(root)}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and n.value in names and id(n) not in docstrings]
    assert spelt == []


def test_no_stage_takes_another_stages_log_for_its_own(tmp_path):
    """The run's stage events and an expansion's summary go to events.jsonl; a training log is its adapter's own,
    so training into a directory that holds stage events starts (nothing to resume) instead of refusing."""
    from dail import checkpoint

    run = RunDir(tmp_path)
    RunLog(run.events)("expand:traces.jsonl", "summary", traces=3)
    assert checkpoint.prepare_out(tmp_path, resume=False) is None
    AdapterDir(tmp_path).log.write_text('{"step": 1}\n')
    with pytest.raises(Exception, match="already holds a training run"):
        checkpoint.prepare_out(tmp_path, resume=False)
    assert run.events != AdapterDir(tmp_path).log
