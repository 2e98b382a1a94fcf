"""The command line: every DESIGN.md subcommand is listed; unbuilt ones say so plainly."""

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
    from dail.datasets import load_split

    monkeypatch.chdir(tmp_path)
    write_jsonl("p.jsonl", load_split("arith-train")[:2])
    (tmp_path / "mine").mkdir()  # the user's empty folder stays
    for args in (["expand", "--out", "mine/a/b/traces.jsonl"], ["eval", "--out", "mine/ev"],
                 ["train", "--traces", "p.jsonl", "--problems", "p.jsonl", "--out", "mine/ad"]):
        result = CliRunner().invoke(app, [*args, "--model", str(tmp_path / "no-model"), "--data" if args[0] != "train"
                                          else "--seed", "p.jsonl" if args[0] != "train" else "0", "--device", "cpu"])
        assert result.exit_code == 1 and "not found" in result.output, result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "p.jsonl"]
        assert list((tmp_path / "mine").iterdir()) == []
