"""The `dail` command: one subcommand per stage, each a thin shell over the stage's `run(config)`.

Flags override the `--config` TOML; flags left unset keep the file's values (or the defaults).
Errors a user can fix (bad data, bad config, a model that is not there) are printed as one line
and exit with code 1 -- never a traceback. Heavy imports (torch, transformers) happen inside the
commands, so `dail --help` is instant.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich.console import Console
from rich.table import Table

from .config import (
    ConfigError,
    EvalConfig,
    ExpandConfig,
    SelectConfig,
    TrainConfig,
    WaypointsConfig,
    load_config,
)
from .data import DataError

app = typer.Typer(
    name="dail",
    help="DAIL: expand expert solutions into in-distribution traces, train with a contrastive objective, measure pass@k.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Problem files: validate and generate.", no_args_is_help=True)
app.add_typer(data_app, name="data")
testbed_app = typer.Typer(help="The test-bed: a model trained from scratch and splits where the method's premise holds.",
                          no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")
console = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config; flags override it.")]


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def _user_errors(*outputs: str | Path):
    """Turn the errors a user can fix into one line and exit code 1.

    `outputs`: directories a failed command must not leave behind; those it created and left empty
    (a lock's folder, an eval directory the model never reached) are removed again.
    """
    from .models import ModelNotFoundError

    # Every folder of the outputs' paths that is not there yet, deepest first.
    missing = sorted({f for p in outputs for f in (Path(p), *Path(p).parents) if not f.exists()},
                     key=lambda f: len(f.parts), reverse=True)
    try:
        yield
    except (DataError, ConfigError, ModelNotFoundError, OSError) as e:
        for folder in missing:
            with contextlib.suppress(OSError):  # not empty: it holds something worth keeping
                folder.rmdir()
        if isinstance(e, OSError) and not isinstance(e, (DataError, ConfigError)):
            # a file the checks could not foresee (permissions, a full disk)
            _fail(f"{e.filename}: {e.strerror}" if e.filename else str(e))
        _fail(str(e))


def _config(cls, path: Path | None, overrides: dict[str, Any], out: Literal["file", "dir"] | None = None):
    """The stage's config, its device present and its output writable: checked before any work."""
    from .config import require_device
    from .data import check_output

    with _user_errors():
        cfg = load_config(cls, path, overrides)
        if hasattr(cfg, "device"):
            require_device(cfg.device)
        if out is not None:
            check_output(cfg.out, out)
        return cfg


# --------------------------------------------------------------------------- data


@data_app.command("validate")
def data_validate(file: Annotated[Path, typer.Argument(help="Problems JSONL to check.")]) -> None:
    """Check a problems file; print a summary or the first error (exit 1)."""
    from .data import validate_file

    with _user_errors():
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
    out: Annotated[Path, typer.Option(help="Output JSONL.")],
    n: Annotated[int, typer.Option(help="Number of problems.")] = 100,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    prefix: Annotated[str, typer.Option(help="Id prefix.")] = "arith",
) -> None:
    """Generate multi-step arithmetic word problems with didactic expert solutions."""
    from .data import check_output, write_jsonl
    from .datasets import generate

    with _user_errors():
        check_output(out)
        write_jsonl(out, generate(n, seed, prefix=prefix))
    console.print(f"wrote {n} problems to {out}")


# --------------------------------------------------------------------------- test-bed


@testbed_app.command("build")
def testbed_build(
    out: Annotated[Path, typer.Option(help="Directory to write: model/, data/*.jsonl, build.json.")],
    config: ConfigOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the splits, corpus and weights.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Steps of pretraining phase 1.")] = None,
) -> None:
    """Build the test-bed from a seed: tokenizer, model trained from scratch, splits (resumes a killed build)."""
    from . import ui
    from .testbed.build import BuildConfig, build, phases

    cfg = _config(BuildConfig, config, {"seed": seed, "steps": steps})
    with _user_errors(), ui.progress("pretrain") as update:
        done = build(cfg, out, on_step=lambda r: update(r["step"], sum(ph.steps for ph in phases(cfg))))
    console.print(f"test-bed written to {done}: model {done / 'model'}, splits {done / 'data'}")


@testbed_app.command("probe")
def testbed_probe(
    build: Annotated[Optional[Path], typer.Option(help="A directory written by `dail testbed build` (default: the shipped one).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="A run config whose \\[expand] section the "
                                                   "rollouts use (default: configs/demo.toml's settings).")] = None,
    problems: Annotated[int, typer.Option(min=1, help="First N problems of the split.")] = 24,
    samples: Annotated[int, typer.Option(min=1, help="Base-model samples per problem (pass@1 and pass@N).")] = 16,
    split: Annotated[str, typer.Option(help="Split of the build to probe.")] = "val",
    out: Annotated[Optional[Path], typer.Option(help="Also write the JSON here.")] = None,
    figure: Annotated[Optional[Path], typer.Option(help="Also draw the first problem's four traces to this PNG.")] = None,
) -> None:
    """Measure the premise of a test-bed build: what mixing and the contrast have to act on (asserts nothing)."""
    import json

    from .data import atomic_write_text
    from .testbed import SHIPPED
    from .testbed.probe import ProbeSizes, probe

    with _user_errors():
        expand_cfg = _probe_expand(config)
        result = probe(build or SHIPPED, expand_cfg, ProbeSizes(problems=problems, samples=samples, split=split),
                       figure=figure)
    text = json.dumps(result, indent=1)
    if out:
        atomic_write_text(out, text + "\n")
    console.print_json(text)


def _probe_expand(config: Optional[Path]) -> ExpandConfig | None:
    """The probe's expansion settings: a run config's [expand] section (the demo's when none is named)."""
    from .config import RunConfig, section_values

    path = config or _find_demo_config()
    if path is None:
        return None  # no checkout beside the package: ExpandConfig's defaults
    run = load_config(RunConfig, path)
    return ExpandConfig(**section_values(run.expand), seed=run.seed, data="-", out="-", prompts=run.prompts.model_dump())


# --------------------------------------------------------------------------- stages


@app.command()
def waypoints(
    data: Annotated[Optional[str], typer.Option(help="Problems JSONL or bundled split name.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output JSONL with waypoints filled in.")] = None,
    mode: Annotated[Optional[str], typer.Option(
        help="hint (default: final answer + intermediate results) or rule (boxed answer + key equations).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Partial solutions (waypoints) for the negative reference; a row's own waypoints win."""
    from .datasets import resolve_problems
    from .waypoints import write_waypoints

    cfg = _config(WaypointsConfig, config, {"data": data, "out": str(out) if out else None, "mode": mode}, out="file")
    with _user_errors():
        count = write_waypoints(resolve_problems(cfg.data), cfg.out, mode=cfg.mode)
    console.print(f"wrote {count} problems with waypoints to {cfg.out}")


@app.command()
def expand(
    model: Annotated[Optional[str], typer.Option(help="Model id, path, or smollm2-135m.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Problems JSONL (with solutions) or split name.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Traces JSONL (append-only, resumable).")] = None,
    n: Annotated[Optional[int], typer.Option(help="Traces per problem.")] = None,
    rule: Annotated[Optional[str], typer.Option(help="threshold (the authors') or nucleus (ablation).")] = None,
    tau: Annotated[Optional[float], typer.Option(
        help="threshold: keep a learner proposal when the privileged probability is >= tau.")] = None,
    retries: Annotated[Optional[int], typer.Option(help="threshold: learner proposals per token.")] = None,
    keep: Annotated[Optional[str], typer.Option(help="first-correct | all-correct | one-random")] = None,
    temperature: Annotated[Optional[float], typer.Option()] = None,
    top_p: Annotated[Optional[float], typer.Option()] = None,
    top_k: Annotated[Optional[int], typer.Option()] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option()] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    limit: Annotated[Optional[int], typer.Option(help="First N problems only.")] = None,
    device: Annotated[Optional[str], typer.Option()] = None,
    dtype: Annotated[Optional[str], typer.Option()] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete the traces (their config, part files) first "
                                                        "instead of resuming them.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Mixed-policy rollouts: learner tokens stand where the privileged student agrees."""
    cfg = _config(ExpandConfig, config, {
        "model": model, "data": data, "out": str(out) if out else None, "n": n, "tau": tau, "rule": rule,
        "retries": retries, "keep": keep, "sampling.temperature": temperature, "sampling.top_p": top_p, "sampling.top_k": top_k,
        "sampling.max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed,
        "limit": limit, "device": device, "dtype": dtype,
    }, out="file")
    from . import ui
    from .distributed import is_main
    from .expand import run

    with _user_errors(Path(cfg.out).parent), ui.progress("expand") as bar:
        summary = run(cfg, progress=bar, fresh=fresh)
    if is_main():
        ui.console.print(ui.expand_summary(summary))


@app.command()
def train(
    model: Annotated[Optional[str], typer.Option(help="Model id, path, or smollm2-135m.")] = None,
    traces: Annotated[Optional[str], typer.Option(help="Traces JSONL from expand.")] = None,
    problems: Annotated[Optional[str], typer.Option(help="Problems JSONL or split name.")] = None,
    objective: Annotated[Optional[str], typer.Option(help="contrastive | contrastive-target | nll | sft-expert")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Adapter output directory.")] = None,
    epochs: Annotated[Optional[float], typer.Option()] = None,
    lr: Annotated[Optional[float], typer.Option()] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    grad_accum: Annotated[Optional[int], typer.Option()] = None,
    lora_r: Annotated[Optional[int], typer.Option()] = None,
    gamma: Annotated[Optional[float], typer.Option()] = None,
    max_steps: Annotated[Optional[int], typer.Option()] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume", help="Continue from the last checkpoint.")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[Optional[str], typer.Option()] = None,
    dtype: Annotated[Optional[str], typer.Option()] = None,
    config: ConfigOpt = None,
) -> None:
    """LoRA fine-tuning of the learner on kept traces (or expert solutions for sft-expert)."""
    cfg = _config(TrainConfig, config, {
        "model": model, "traces": traces, "problems": problems, "objective": objective,
        "out": str(out) if out else None, "epochs": epochs, "lr": lr, "batch_size": batch_size,
        "grad_accum": grad_accum, "lora.r": lora_r, "gamma": gamma, "max_steps": max_steps,
        "resume": resume, "seed": seed, "device": device, "dtype": dtype,
    }, out="dir")
    from . import ui
    from .train import run

    with _user_errors(cfg.out), ui.progress("train") as bar:
        run(cfg, progress=bar)


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=flag) from None


@app.command("eval")
def eval_(
    model: Annotated[Optional[str], typer.Option(help="Model id, path, or smollm2-135m.")] = None,
    adapter: Annotated[Optional[str], typer.Option(help="LoRA adapter directory.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Problems JSONL (with answers) or split name.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output directory.")] = None,
    n: Annotated[Optional[int], typer.Option(help="Samples per problem.")] = None,
    k: Annotated[Optional[str], typer.Option(help="Comma-separated k of pass@k.")] = None,
    budgets: Annotated[Optional[str], typer.Option(help="Comma-separated token budgets.")] = None,
    temperature: Annotated[Optional[float], typer.Option()] = None,
    top_p: Annotated[Optional[float], typer.Option()] = None,
    top_k: Annotated[Optional[int], typer.Option()] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option()] = None,
    presence_penalty: Annotated[Optional[float], typer.Option(help="vLLM's presence penalty.")] = None,
    force_answer: Annotated[Optional[bool], typer.Option(
        help="Give a sample without a boxed answer one short continuation after an answer cue.")] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    limit: Annotated[Optional[int], typer.Option(help="First N problems only.")] = None,
    device: Annotated[Optional[str], typer.Option()] = None,
    dtype: Annotated[Optional[str], typer.Option()] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete the samples, metrics and config in --out first "
                                                        "instead of resuming them.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Sample, grade, and measure pass@k and token efficiency."""
    cfg = _config(EvalConfig, config, {
        "model": model, "adapter": adapter, "data": data, "out": str(out) if out else None, "n": n,
        "k": _int_list(k, "--k"), "budgets": _int_list(budgets, "--budgets"), "sampling.temperature": temperature,
        "sampling.top_p": top_p, "sampling.top_k": top_k, "sampling.max_new_tokens": max_new_tokens,
        "presence_penalty": presence_penalty, "force_answer": force_answer,
        "batch_size": batch_size, "seed": seed, "limit": limit, "device": device, "dtype": dtype,
    }, out="dir")
    from . import ui
    from .distributed import is_main
    from .evaluate import run

    with _user_errors(cfg.out), ui.progress("sampling") as bar:
        metrics = run(cfg, progress=bar, fresh=fresh)
    if is_main():
        ui.console.print(ui.eval_summary(metrics))


@app.command()
def report(
    inputs: Annotated[list[Path], typer.Argument(help="Run or eval directories to compare.")],
    out: Annotated[Path, typer.Option(help="Report output directory.")] = Path("report"),
) -> None:
    """Compare methods: table, pass@k and token-budget plots, trace viewer."""
    from .report import run

    with _user_errors():
        run([str(p) for p in inputs], str(out))


@app.command()
def select(
    model: Annotated[Optional[str], typer.Option(help="Model id, path, or smollm2-135m.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Candidate problems JSONL or split name.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Selected problems JSONL.")] = None,
    n: Annotated[Optional[int], typer.Option(help="Samples per problem.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option()] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    limit: Annotated[Optional[int], typer.Option(help="First N candidates only.")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[Optional[str], typer.Option()] = None,
    config: ConfigOpt = None,
) -> None:
    """Keep the problems the base model fails in all of n samples (the paper's training set rule)."""
    cfg = _config(SelectConfig, config, {
        "model": model, "data": data, "out": str(out) if out else None, "n": n,
        "sampling.max_new_tokens": max_new_tokens, "batch_size": batch_size, "limit": limit,
        "seed": seed, "device": device,
    }, out="file")
    from . import ui
    from .pipeline import select as run_select

    events = ui.RunEvents()
    with _user_errors():
        run_select(cfg, on_event=events)


def _tokenizer(model: str):
    """The model's tokenizer, or None when it cannot be had here (the display then shows plain text)."""
    try:
        from transformers import AutoTokenizer

        from .models import resolve

        return AutoTokenizer.from_pretrained(resolve(model).path)
    except Exception:  # a display nicety: never fail a finished run over it
        return None


def _run(config: Path, overrides: dict[str, Any], fresh: bool = False) -> dict:
    from . import ui
    from .config import RunConfig
    from .pipeline import run as run_pipeline

    cfg = _config(RunConfig, config, overrides)
    events = ui.RunEvents()
    try:
        with _user_errors():
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
    config: Annotated[Path, typer.Option("--config", "-c", help="Run config TOML (see configs/).")],
    name: Annotated[Optional[str], typer.Option(help="Override the run name.")] = None,
    out_dir: Annotated[Optional[str], typer.Option(help="Override the parent directory of runs.")] = None,
    device: Annotated[Optional[str], typer.Option()] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete the run directory first instead of resuming it.")] = False,
) -> None:
    """A full experiment into runs/NAME/: select, waypoints, expand, train, eval, report."""
    _run(config, {"name": name, "out_dir": out_dir, "device": device}, fresh=fresh)


@app.command()
def study(
    config: Annotated[Path, typer.Option("--config", "-c", help="Study config TOML (see configs/testbed-study.toml).")],
    out_dir: Annotated[Optional[str], typer.Option(help="Override the parent directory of studies.")] = None,
    readme: Annotated[Optional[Path], typer.Option(help="Fill the <!-- study:KEY --> tables of this markdown file "
                                                   "from the finished study.")] = None,
) -> None:
    """One run per seed plus DAIL's tau/gamma sweeps; tables and plots of the mean and spread across seeds."""
    from . import ui
    from .pipeline import run as run_pipeline
    from .study import StudyConfig, run as run_study

    cfg = _config(StudyConfig, config, {"out_dir": out_dir})

    def run_one(label: str, run_cfg) -> dict:
        ui.console.rule(f"[bold]{label}")
        events = ui.RunEvents()
        try:
            return run_pipeline(run_cfg, on_event=events, progress=events.progress)
        finally:
            events.close()

    with _user_errors(cfg.root):
        summary = run_study(cfg, run_one)
        if readme is not None:
            from .data import atomic_write_text
            from .study import fill_readme

            try:
                atomic_write_text(readme, fill_readme(readme.read_text(encoding="utf-8"), summary))
            except ValueError as e:
                raise ConfigError(f"{readme}: {e}") from None
    console.print(f"study: {cfg.root / 'study.md'}  plots: {cfg.root / 'plots'}")


def _find_demo_config() -> Path | None:
    # configs/ lives in the checkout; an editable install finds it beside src/.
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / "configs" / "demo.toml").exists():
            return base / "configs" / "demo.toml"
    return None


def _demo_config() -> Path:
    path = _find_demo_config()
    if path is not None:
        return path
    _fail("configs/demo.toml not found: run `dail demo` from the dail checkout, or `dail run --config FILE`")


@app.command()
def demo(
    out_dir: Annotated[Optional[str], typer.Option(help="Override the parent directory of runs.")] = None,
) -> None:
    """The six-method comparison on the shipped test-bed model and its splits (configs/demo.toml)."""
    _run(_demo_config(), {"out_dir": out_dir})


def main() -> None:
    """Entry point of the `dail` script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
