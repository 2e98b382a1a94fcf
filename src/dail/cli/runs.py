"""The commands that chain stages: `dail run`, `study` and `demo`, and what they draw when done."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..config import ConfigError
from .common import (DeviceOpt, DtypeOpt, FreshOpt, ModelOpt, OutDirOpt, SeedOpt, app, console, fail, find_demo_config,
                     stage_config, user_errors)


def _tokenizer(model: str):
    """The model's tokenizer, or None when it cannot be had here (the display then shows plain text)."""
    try:
        from transformers import AutoTokenizer

        from ..models import resolve

        return AutoTokenizer.from_pretrained(resolve(model).path)
    except Exception:  # a display nicety: never fail a finished run over it
        return None


def _run(config: Path, overrides: dict[str, Any], fresh: bool = False) -> dict:
    from .. import ui
    from ..config import RunConfig
    from ..pipeline import plan, run as run_pipeline, run_dir

    cfg = stage_config(RunConfig, config, overrides)
    events = ui.RunEvents(plan(cfg))
    try:
        with user_errors(run_dir(cfg).root):  # a run refused before any stage leaves no empty folder
            result = run_pipeline(cfg, on_event=events, progress=events.progress, fresh=fresh)
    finally:
        events.close()
    ui.console.print(ui.run_table(cfg.name, result["table"]))
    if result.get("four_traces"):
        ui.console.print(ui.four_traces(result["four_traces"], _tokenizer(cfg.model)))
    console.print(f"report: {result['report']}  ({result['seconds']:.0f} s)")
    return result


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="Run config TOML, or a preset by name "
                                         "(demo, paper-qwen2.5-7b, ...).")],
    name: Annotated[Optional[str], typer.Option(help="Override the run name.")] = None,
    out_dir: OutDirOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    fresh: FreshOpt = False,
) -> None:
    """A full experiment into runs/NAME/: select, waypoints, expand, train, eval, report.

    Each stage is skipped when complete, so a rerun resumes; --fresh deletes the run directory first.
    Flags override the config's keys of the same name.
    """
    _run(config, {"name": name, "out_dir": out_dir, "model": model, "seed": seed, "device": device, "dtype": dtype},
         fresh=fresh)


@app.command()
def study(
    config: Annotated[Path, typer.Option("--config", "-c", help="Study config TOML, or a preset by name "
                                         "(testbed-study).")],
    out_dir: OutDirOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    readme: Annotated[Optional[Path], typer.Option(help="Fill the <!-- study:KEY --> tables of this markdown file "
                                                   "from the finished study.")] = None,
) -> None:
    """One run per seed plus DAIL's tau/gamma sweeps; tables and plots of the mean and spread across seeds.

    --device and --dtype set those of every run (the \\[run] table's keys).
    """
    from ..study import StudyConfig, run as run_study

    cfg = stage_config(StudyConfig, config, {"out_dir": out_dir, "run.device": device, "run.dtype": dtype})
    with user_errors(cfg.root):
        summary = run_study(cfg, _study_runner(cfg))
        if readme is not None:
            from ..data import atomic_write_text
            from ..study import fill_readme

            try:
                atomic_write_text(readme, fill_readme(readme.read_text(encoding="utf-8"), summary))
            except ValueError as e:
                raise ConfigError(f"{readme}: {e}") from None
    console.print(f"study: {cfg.root / 'study.md'}  plots: {cfg.root / 'plots'}")


def _study_runner(cfg):
    """The study's `run_one`: each run drawn like `dail run`'s, under a line saying which run of how many it is."""
    import time

    from .. import ui
    from ..pipeline import plan, run as run_pipeline
    from ..study import plan as study_plan

    runs = ui.Countdown("run", len(study_plan(cfg)))

    def run_one(label: str, run_cfg) -> dict:
        ui.announce(runs.begin(label))
        events, started = ui.RunEvents(plan(run_cfg)), time.monotonic()
        try:
            result = run_pipeline(run_cfg, on_event=events, progress=events.progress)
        finally:
            events.close()
        if events.worked:  # a run found complete says nothing about how long the next will take
            runs.took(time.monotonic() - started)
        return result

    return run_one


def _demo_config() -> Path:
    path = find_demo_config()
    if path is not None:
        return path
    fail("dail/presets/demo.toml is missing from this install: reinstall dail, or `dail run --config FILE`")


@app.command()
def demo(
    out_dir: OutDirOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    fresh: FreshOpt = False,
) -> None:
    """The seven-row comparison on the shipped test-bed model and its splits (configs/demo.toml).

    Resumes like `dail run`; --fresh deletes the demo's run directory first.
    """
    _run(_demo_config(), {"out_dir": out_dir, "device": device, "dtype": dtype}, fresh=fresh)
