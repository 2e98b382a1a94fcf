"""The installed package is whole: a wheel of the checkout carries the presets, the shipped test-bed and
the bundled datasets, and outside the checkout `dail demo` and `--config NAME` find their configs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dail.cli import app
from dail.config import PRESETS, ConfigError, RunConfig, load_config, preset_names, resolve_config

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "dail"
# A record of the build, not read by any command: left out of the wheel on purpose.
NOT_SHIPPED = {"testbed/shipped/pretrain_log.jsonl"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built by pip from a copy of the checkout's sources."""
    # A copy: setuptools writes build/ and an egg-info into the tree it builds, and a stale build/lib
    # there could put files into the wheel that the checkout no longer has.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(out), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = out.glob("dail-*.whl")
    return path


@pytest.fixture(scope="module")
def unzipped(wheel, tmp_path_factory) -> Path:
    """The wheel's files as an install would lay them out (a site-packages of dail alone)."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site


def test_the_wheel_holds_every_module_and_data_file_of_the_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    package = {f"dail/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    missing = package - names - {f"dail/{n}" for n in NOT_SHIPPED}
    assert not missing, f"not in the wheel (pyproject.toml's package-data?): {sorted(missing)}"
    assert {f"dail/presets/{n}.toml" for n in ("demo", "paper-qwen2.5-7b", "paper-qwen3-8b")} <= names
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as z:
        assert "dail = dail.cli:main" in z.read(entry).decode()


def test_the_wheels_test_bed_is_the_one_build_json_records(unzipped):
    shipped = unzipped / "dail" / "testbed" / "shipped"
    files = json.loads((shipped / "build.json").read_text(encoding="utf-8"))["files"]
    assert any(f.startswith("model/") for f in files) and any(f.startswith("data/") for f in files)
    for name, sha in files.items():
        assert hashlib.sha256((shipped / name).read_bytes()).hexdigest() == sha, name


# Run in a fresh interpreter of the venv (its site-packages give the dependencies) with the unzipped
# wheel first on sys.path, from a folder outside the checkout.
CHECK = r"""
import json, sys
from pathlib import Path

site, checkout_src = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
# The venv's editable install adds the checkout's src/ after PYTHONPATH; drop it so only the wheel
# can provide dail (the caller still checks dail.__file__).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != checkout_src]

import dail
from typer.testing import CliRunner
from dail.cli import app
from dail.cli.common import find_demo_config
from dail.config import RunConfig, load_config, resolve_config
from dail.datasets import bundled_files
from dail.models import resolve

demo_path = find_demo_config()
demo = load_config(RunConfig, demo_path)
splits = bundled_files()
unknown = CliRunner().invoke(app, ["run", "--config", "no-such-preset"])
print(json.dumps({
    "dail": dail.__file__,
    "demo": [str(demo_path), demo.name],
    "paper": [load_config(RunConfig, n).name for n in ("paper-qwen2.5-7b", "paper-qwen2.5-7b.toml")],
    "paper_file": str(resolve_config("paper-qwen2.5-7b")),
    "model": resolve(demo.model).path,
    "data": [str(splits[s]) for s in (demo.train_data, *(e.data for e in demo.eval_splits()))],
    "unknown": [unknown.exit_code, unknown.output],
    "demo_help": CliRunner().invoke(app, ["demo", "--help"]).exit_code,
}))
"""


def test_outside_the_checkout_the_wheel_finds_the_demo_and_presets_by_name(unzipped, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(unzipped)}
    out = subprocess.run([sys.executable, "-c", CHECK, str(unzipped), str(REPO / "src")], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])

    def inside(path: str) -> bool:
        return Path(path).resolve().is_relative_to(unzipped.resolve())

    assert inside(got["dail"]), f"dail came from {got['dail']}, not the wheel"
    assert inside(got["demo"][0]) and got["demo"][1] == "demo"
    assert got["paper"] == ["paper-qwen2.5-7b"] * 2 and inside(got["paper_file"])
    assert inside(got["model"]) and got["data"] and all(inside(p) for p in got["data"])
    code, output = got["unknown"]
    assert code == 1 and "no-such-preset" in output and "paper-qwen2.5-7b" in output
    assert got["demo_help"] == 0


def test_a_preset_resolves_by_name_and_a_file_wins_over_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config("paper-qwen2.5-7b") == resolve_config("paper-qwen2.5-7b.toml") == \
        PRESETS / "paper-qwen2.5-7b.toml"
    assert {"demo", "paper-qwen2.5-7b", "paper-qwen3-8b", "testbed-study"} <= set(preset_names())
    (tmp_path / "demo.toml").write_text('name = "mine"\ntrain_data = "a"\neval_data = ["b"]\n')
    assert load_config(RunConfig, "demo.toml").name == "mine"  # the user's file, not the preset
    assert load_config(RunConfig, "demo").name == "demo"
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(RunConfig, "sub/paper-qwen2.5-7b.toml")  # a path with a folder is never a preset name


def test_an_unknown_config_name_is_one_line_listing_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--config", "paper-qwen9"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert "paper-qwen9" in line and all(name in line for name in preset_names())


def test_the_checkouts_configs_folder_is_the_packages_presets():
    """README's `dail run --config configs/NAME.toml` runs the package's presets from a checkout."""
    assert (REPO / "configs").resolve() == PRESETS.resolve()
