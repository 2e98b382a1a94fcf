"""The command line: every stage's subcommand is listed; unbuilt ones say so plainly; one option vocabulary
across commands; where a run or a study stands as it goes."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from dail.cli import app

from conftest import cli_commands

STAGES = ["demo", "run", "study", "testbed", "data", "select", "waypoints", "expand", "train", "eval", "report"]


def test_help_lists_every_stage():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for stage in STAGES:
        assert f" {stage} " in result.output


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "dail", "--help"], capture_output=True, text=True, check=True)
    assert "expand" in out.stdout


def test_bad_config_is_one_line_not_a_traceback(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('data = "d"\nout = "o"\ntua = 1\n')
    result = CliRunner().invoke(app, ["expand", "--config", str(path)])
    assert result.exit_code == 1
    assert "unknown key 'tua'" in result.output and "Traceback" not in result.output


def test_help_and_config_loading_do_not_import_torch():
    # Layers point one way: the CLI shell, configs and the run directory are light; torch and
    # transformers come with the stage that needs them.
    code = ("import sys, dail.cli, dail.config, dail.rundir, dail.ui; "
            "from dail.cli import app; from typer.testing import CliRunner; "
            "assert CliRunner().invoke(app, ['--help']).exit_code == 0; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_failed_command_leaves_no_folder_it_made(tmp_path, monkeypatch):
    from dail.data import write_jsonl
    from dail.datasets import resolve_problems

    monkeypatch.chdir(tmp_path)
    write_jsonl("p.jsonl", resolve_problems("arith-train")[:2])
    (tmp_path / "mine").mkdir()  # the user's empty folder stays
    for args in (["expand", "--out", "mine/a/b/traces.jsonl"], ["eval", "--out", "mine/ev"],
                 ["train", "--traces", "p.jsonl", "--problems", "p.jsonl", "--out", "mine/ad"]):
        result = CliRunner().invoke(app, [*args, "--model", str(tmp_path / "no-model"), "--data" if args[0] != "train"
                                          else "--seed", "p.jsonl" if args[0] != "train" else "0", "--device", "cpu"])
        assert result.exit_code == 1 and "not found" in result.output, result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "p.jsonl"]
        assert list((tmp_path / "mine").iterdir()) == []


def test_the_run_table_keeps_every_number_whole_in_80_columns():
    from rich.console import Console

    from dail import ui

    ks = ["1", "2", "4", "8", "16", "32", "64"]
    row = lambda v: {"pass_at_k": {k: v + i / 1000 for i, k in enumerate(ks)}, "mean_tokens": 1234.0}  # noqa: E731
    results = {m: {"testbed-test": row(0.1), "testbed-val": row(0.5)}
               for m in ["base", "sft-expert", "star", "psd-nll", "dail-nll", "dail"]}
    console = Console(width=80, record=True)
    console.print(ui.run_table("demo", results))
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in console.export_text()
    assert any(line.split() == ["sft-expert", "testbed-val", *(f"{0.5 + i / 1000:.3f}" for i in range(7)), "1234"]
               for line in lines)
    assert lines[1].split() == ["method", "split", *(f"k={k}" for k in ks), "tokens"]


# --------------------------------------------------------------------------- one option vocabulary

VOCABULARY = ["--model", "--data", "--out", "--seed", "--device", "--dtype", "--batch-size", "--fresh", "--limit"]
SAMPLING = set(VOCABULARY)
# Which commands carry which of the vocabulary: exactly these (a new one means a new row here).
CARRIES = {
    "select": SAMPLING, "expand": SAMPLING, "eval": SAMPLING,
    "train": SAMPLING - {"--data", "--limit"},
    "rl": SAMPLING - {"--batch-size", "--limit"},
    "hints": SAMPLING,
    "waypoints": {"--data", "--out"},
    "report": {"--out"},
    "run": {"--model", "--seed", "--device", "--dtype", "--fresh"},
    "study": {"--device", "--dtype"},
    "demo": {"--device", "--dtype", "--fresh"},
    "data validate": set(),
    "data generate": {"--out", "--seed"},
    "data import": {"--out"},
    "testbed build": {"--out", "--seed"},
    "testbed probe": {"--out", "--limit"},
}
# Other spellings of the vocabulary's meanings: none may exist on any command.
SYNONYMS = {"--output", "--output-dir", "--outdir", "--out-file", "--output-file", "--out-path", "--dest",
            "--n-problems", "--num-problems", "--max-problems", "--problems-limit", "--first", "--head",
            "--bs", "--batch", "--batchsize", "--micro-batch-size", "--random-seed", "--rng-seed", "--rng",
            "--precision", "--torch-dtype", "--restart", "--overwrite", "--force", "--clean", "--from-scratch",
            "--model-path", "--model-name", "--model-id", "--base-model", "--dataset", "--input", "--split-file",
            "--gpu", "--cuda", "--cpu"}


def options(cmd) -> dict[str, object]:
    """Every option name of a command (both halves of --x/--no-x) -> its parameter."""
    return {name: p for p in cmd.params if p.param_type_name == "option" for name in (*p.opts, *p.secondary_opts)}


def test_every_vocabulary_option_means_one_thing_everywhere():
    seen: dict[str, dict[tuple, list[str]]] = {}
    for name, cmd in cli_commands().items():
        for opt, p in options(cmd).items():
            if opt in VOCABULARY:
                meaning = (p.type_descriptor.annotation, p.min, p.max, p.is_flag, p.help)
                seen.setdefault(opt, {}).setdefault(meaning, []).append(name)
    assert set(seen) == set(VOCABULARY)
    for opt, meanings in seen.items():
        assert len(meanings) == 1, f"{opt} differs across commands: {meanings}"


def test_each_command_carries_the_vocabulary_it_should():
    found = {name: set(options(cmd)) & SAMPLING for name, cmd in cli_commands().items()}
    assert set(found) == set(CARRIES), "a command is missing from CARRIES (or gone)"
    for name, carried in found.items():
        assert carried == CARRIES[name], f"{name}: missing {CARRIES[name] - carried}, extra {carried - CARRIES[name]}"


def test_no_command_spells_a_vocabulary_meaning_another_way():
    for name, cmd in cli_commands().items():
        assert not set(options(cmd)) & SYNONYMS, f"{name}: {set(options(cmd)) & SYNONYMS}"


# --------------------------------------------------------------------------- where a run or a study stands


def test_the_progress_line_counts_and_estimates():
    from dail import ui

    assert ui.clock(0) == "0:00" and ui.clock(252) == "4:12" and ui.clock(3600 + 62) == "1:01:02"
    # step 7 of 31 after three timed steps of 30, 60 and 90 s: mean 60 s, 25 steps left (this one too)
    assert ui.progress_line("stage", 7, 31, "train:dail", 252, [30, 60, 90]) == \
        "[stage 7/31] train:dail · elapsed 4:12 · est. left ~25:00"
    assert ui.progress_line("run", 1, 4, "seed 0", 0.4, []) == "[run 1/4] seed 0 · elapsed 0:00"


def test_a_skipped_stage_counts_as_done_but_not_in_the_estimate(monkeypatch):
    from dail import ui

    now = [100.0]
    monkeypatch.setattr(ui.time, "monotonic", lambda: now[0])
    steps = ui.Countdown("stage", 4)
    assert steps.skip("select") == "[stage 1/4] select: complete, skipped"
    now[0] += 10
    assert steps.begin("waypoints") == "[stage 2/4] waypoints · elapsed 0:10"
    steps.took(9)
    now[0] += 10
    assert steps.begin("expand:traces.jsonl") == "[stage 3/4] expand:traces.jsonl · elapsed 0:20 · est. left ~0:18"


def test_the_study_plan_is_the_runs_it_makes(tmp_path):
    from dail import study
    from dail.study import StudyConfig

    cfg = StudyConfig(name="s", out_dir=str(tmp_path), seeds=[0, 1], sweep_data="arith-test", tau=[0.8, 1.0],
                      gamma=[0.0], sweep_seeds=[0], run={"train_data": "arith-train", "eval_data": ["arith-test"],
                                                         "methods": ["base", "dail"]})
    labels = []

    def run_one(label, run_cfg):  # a finished run's numbers, without running it
        labels.append(label)
        row = {"pass_at_k": {"1": 0.5}, "mean_tokens": 10.0}
        return {"table": {m: {"arith-test": dict(row)} for m in run_cfg.methods}, "compute": {},
                "run_dir": str(tmp_path / run_cfg.name)}

    study.run(cfg, run_one)
    assert labels == study.plan(cfg) == ["seed 0", "seed 0: tau=1", "seed 0: gamma=0", "seed 1"]


def test_a_run_refused_before_any_stage_leaves_no_folder(tmp_path):
    from typer.testing import CliRunner

    from dail.cli import app

    config = tmp_path / "run.toml"
    config.write_text('name = "r"\ntrain_data = "hub:nobody/none"\neval_data = ["testbed-test"]\nmodel = "testbed"\n'
                      'device = "cpu"\n')
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--out-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "nobody/none" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()
