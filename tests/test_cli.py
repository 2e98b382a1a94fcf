"""The command line: every stage's subcommand is listed; unbuilt ones say so plainly."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from dail.cli import app

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
