"""The command groups: `dail data` (validate, generate, import) and `dail testbed` (build, probe)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..config import ExpandConfig, load_config
from .common import (ConfigOpt, LimitOpt, OutOpt, SeedOpt, console, data_app, find_demo_config, stage_config,
                     testbed_app, user_errors)

# --------------------------------------------------------------------------- data


@data_app.command("validate")
def data_validate(file: Annotated[Path, typer.Argument(help="Problems JSONL to check.")]) -> None:
    """Check a problems file; print a summary or the first error (exit 1)."""
    from ..data import validate_file

    with user_errors():
        summary = validate_file(file)
    table = Table(title=f"{file}", show_header=False)
    table.add_row("rows", str(summary["rows"]))
    for field, count in summary["fields_present"].items():
        table.add_row(f"with {field}", str(count))
    table.add_row("verifiable", f"{summary['verifiable']} ({summary['verifiable_share']:.0%})")
    table.add_row("multiple choice", str(summary["multiple_choice"]))
    Console().print(table)


@data_app.command("generate")
def data_generate(
    out: OutOpt,
    n: Annotated[int, typer.Option(min=1, max=100_000, help="Number of problems.")] = 100,
    seed: SeedOpt = 0,
    prefix: Annotated[str, typer.Option(help="Id prefix.")] = "arith",
) -> None:
    """Generate multi-step arithmetic word problems with didactic expert solutions.

    Writes --out: the problems JSONL.
    """
    from ..data import check_output, write_jsonl
    from ..datasets import generate

    with user_errors():
        check_output(out)
        write_jsonl(out, generate(n, seed, prefix=prefix))
    console.print(f"wrote {n} problems to {out}")


@data_app.command("import")
def data_import(
    name: Annotated[str, typer.Argument(help="A known set (e.g. aime-2025, e1-verifiable, gpqa-diamond) or "
                                        "hub:owner/name[:config]\\[@split][?problem=COLUMN&answer=COLUMN&...].")],
    out: OutOpt = None,
) -> None:
    """Fetch a problem set from the Hugging Face Hub into the cache (and --out), and say what it holds.

    Writes --out, when given: the problems as JSONL.
    """
    from ..data import check_output, write_jsonl
    from ..datasets.hub import import_set

    with user_errors():
        if out is not None:
            check_output(out)
        got = import_set(name)
        if out is not None:
            write_jsonl(out, got.problems)
    verifiable = sum(p.verifiable for p in got.problems)
    dropped = ", ".join(f"{k} {v}" for k, v in got.dropped.items()) or "none"
    console.print(f"{name}: {len(got.problems)} problems ({verifiable} with an answer) from {got.repo}@{got.revision}; "
                  f"left out: {dropped}" + (f"; wrote {out}" if out else ""))


# --------------------------------------------------------------------------- test-bed


@testbed_app.command("build")
def testbed_build(
    out: OutOpt,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    steps: Annotated[Optional[int], typer.Option(help="Steps of pretraining phase 1.")] = None,
) -> None:
    """Build the test-bed from a seed: tokenizer, model trained from scratch, splits (resumes a killed build).

    Writes --out: a directory of model/, data/*.jsonl and build.json. --seed seeds the splits, the corpus and
    the weights.
    """
    from .. import ui
    from ..testbed.build import BuildConfig, build, phases

    cfg = stage_config(BuildConfig, config, {"seed": seed, "steps": steps})
    with user_errors(), ui.progress("pretrain") as update:
        done = build(cfg, out, on_step=lambda r: update(r["step"], sum(ph.steps for ph in phases(cfg))))
    console.print(f"test-bed written to {done}: model {done / 'model'}, splits {done / 'data'}")


@testbed_app.command("probe")
def testbed_probe(
    build: Annotated[Optional[Path], typer.Option(help="A directory written by `dail testbed build` (default: the shipped one).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="A run config whose \\[expand] section the "
                                                   "rollouts use (default: configs/demo.toml's settings).")] = None,
    limit: LimitOpt = 24,
    n: Annotated[int, typer.Option(min=1, help="Base-model samples per problem (pass@1 and pass@N).")] = 16,
    split: Annotated[str, typer.Option(help="Split of the build to probe.")] = "val",
    out: OutOpt = None,
    figure: Annotated[Optional[Path], typer.Option(help="Also draw the first problem's four traces to this PNG.")] = None,
) -> None:
    """Measure the premise of a test-bed build: what mixing and the contrast have to act on (asserts nothing).

    Probes the first --limit problems of --split. Writes --out, when given: the measures as JSON.
    """
    import json

    from ..data import atomic_write_text
    from ..testbed import SHIPPED
    from ..testbed.probe import ProbeSizes, probe

    with user_errors():
        expand_cfg = _probe_expand(config)
        result = probe(build or SHIPPED, expand_cfg, ProbeSizes(problems=limit, samples=n, split=split),
                       figure=figure)
    text = json.dumps(result, indent=1)
    if out:
        atomic_write_text(out, text + "\n")
    console.print_json(text)


def _probe_expand(config: Optional[Path]) -> ExpandConfig | None:
    """The probe's expansion settings: a run config's [expand] section (the demo's when none is named)."""
    from ..config import RunConfig, section_values

    path = config or find_demo_config()
    if path is None:
        return None  # a broken install without its presets: ExpandConfig's defaults
    run = load_config(RunConfig, path)
    return ExpandConfig(**section_values(run.expand), seed=run.seed, data="-", out="-", prompts=run.prompts.model_dump())
