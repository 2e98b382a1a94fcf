"""The one-stage commands: `dail waypoints`, `expand`, `train`, `eval`, `report` and `select`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import EvalConfig, ExpandConfig, SelectConfig, TrainConfig, WaypointsConfig
from .common import (BatchSizeOpt, ConfigOpt, DataOpt, DeviceOpt, DtypeOpt, FreshOpt, LimitOpt, ModelOpt, OutOpt,
                     SeedOpt, app, console, stage_config, user_errors)


@app.command()
def waypoints(
    data: DataOpt = None,
    out: OutOpt = None,
    mode: Annotated[Optional[str], typer.Option(
        help="hint (default: final answer + intermediate results) or rule (boxed answer + key equations).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Partial solutions (waypoints) for the negative reference; a row's own waypoints win.

    Writes --out: the problems JSONL with waypoints filled in.
    """
    from ..datasets import resolve_problems
    from ..waypoints import write_waypoints

    cfg = stage_config(WaypointsConfig, config, {"data": data, "out": str(out) if out else None, "mode": mode})
    with user_errors():
        count = write_waypoints(resolve_problems(cfg.data), cfg.out, mode=cfg.mode)
    console.print(f"wrote {count} problems with waypoints to {cfg.out}")


@app.command()
def expand(
    model: ModelOpt = None,
    data: DataOpt = None,
    out: OutOpt = None,
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
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = None,
    limit: LimitOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    fresh: FreshOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Mixed-policy rollouts: learner tokens stand where the privileged student agrees.

    Reads --data: problems with expert solutions. Writes --out: the traces JSONL (append-only: a rerun
    resumes it; --fresh deletes it with its config and part files first).
    """
    cfg = stage_config(ExpandConfig, config, {
        "model": model, "data": data, "out": str(out) if out else None, "n": n, "tau": tau, "rule": rule,
        "retries": retries, "keep": keep, "sampling.temperature": temperature, "sampling.top_p": top_p, "sampling.top_k": top_k,
        "sampling.max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed,
        "limit": limit, "device": device, "dtype": dtype,
    })
    from .. import ui
    from ..distributed import is_main
    from ..expand import run

    with user_errors(Path(cfg.out).parent), ui.progress("expand") as bar:
        summary = run(cfg, progress=bar, fresh=fresh)
    if is_main():
        ui.console.print(ui.expand_summary(summary))


@app.command()
def train(
    model: ModelOpt = None,
    traces: Annotated[Optional[str], typer.Option(help="Traces JSONL from expand.")] = None,
    problems: Annotated[Optional[str], typer.Option(help="The problems the traces are of (solutions, waypoints): "
                                                         "JSONL or split name.")] = None,
    objective: Annotated[Optional[str], typer.Option(help="contrastive | contrastive-target | nll | sft-expert")] = None,
    out: OutOpt = None,
    epochs: Annotated[Optional[float], typer.Option()] = None,
    lr: Annotated[Optional[float], typer.Option()] = None,
    batch_size: BatchSizeOpt = None,
    grad_accum: Annotated[Optional[int], typer.Option()] = None,
    lora_r: Annotated[Optional[int], typer.Option()] = None,
    gamma: Annotated[Optional[float], typer.Option()] = None,
    max_steps: Annotated[Optional[int], typer.Option()] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume", help="Continue from the last checkpoint.")] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    fresh: FreshOpt = False,
    config: ConfigOpt = None,
) -> None:
    """LoRA fine-tuning of the learner on kept traces (or expert solutions for sft-expert).

    Writes --out: the adapter directory (adapter, log.jsonl, checkpoints/); --fresh deletes the training
    run there first, --resume continues it.
    """
    cfg = stage_config(TrainConfig, config, {
        "model": model, "traces": traces, "problems": problems, "objective": objective,
        "out": str(out) if out else None, "epochs": epochs, "lr": lr, "batch_size": batch_size,
        "grad_accum": grad_accum, "lora.r": lora_r, "gamma": gamma, "max_steps": max_steps,
        "resume": resume, "seed": seed, "device": device, "dtype": dtype,
    })
    from .. import ui
    from ..train import run

    with user_errors(cfg.out), ui.progress("train") as bar:
        run(cfg, progress=bar, fresh=fresh)


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=flag) from None


@app.command("eval")
def eval_(
    model: ModelOpt = None,
    adapter: Annotated[Optional[str], typer.Option(help="LoRA adapter directory.")] = None,
    data: DataOpt = None,
    out: OutOpt = None,
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
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = None,
    limit: LimitOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    fresh: FreshOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Sample, grade, and measure pass@k and token efficiency.

    Reads --data: problems with answers. Writes --out: a directory of samples.jsonl and metrics.json (a
    rerun resumes the samples; --fresh deletes them, the metrics and the config first).
    """
    cfg = stage_config(EvalConfig, config, {
        "model": model, "adapter": adapter, "data": data, "out": str(out) if out else None, "n": n,
        "k": _int_list(k, "--k"), "budgets": _int_list(budgets, "--budgets"), "sampling.temperature": temperature,
        "sampling.top_p": top_p, "sampling.top_k": top_k, "sampling.max_new_tokens": max_new_tokens,
        "presence_penalty": presence_penalty, "force_answer": force_answer,
        "batch_size": batch_size, "seed": seed, "limit": limit, "device": device, "dtype": dtype,
    })
    from .. import ui
    from ..distributed import is_main
    from ..evaluate import run

    with user_errors(cfg.out), ui.progress("sampling") as bar:
        metrics = run(cfg, progress=bar, fresh=fresh)
    if is_main():
        ui.console.print(ui.eval_summary(metrics))


@app.command()
def report(
    inputs: Annotated[list[Path], typer.Argument(help="Run or eval directories to compare.")],
    out: OutOpt = Path("report"),
) -> None:
    """Compare methods: table, pass@k and token-budget plots, trace viewer.

    Writes --out: the report's directory (report.html, plots/).
    """
    from ..report import run

    with user_errors():
        run([str(p) for p in inputs], str(out))


@app.command()
def select(
    model: ModelOpt = None,
    data: DataOpt = None,
    out: OutOpt = None,
    n: Annotated[Optional[int], typer.Option(help="Samples per problem.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option()] = None,
    batch_size: BatchSizeOpt = None,
    limit: LimitOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    fresh: FreshOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Keep the problems the base model fails in all of n samples (the paper's training set rule).

    Reads --data: the candidate problems. Writes --out: the selected problems JSONL, and its samples in a
    folder beside it (a rerun resumes them; --fresh deletes them first).
    """
    cfg = stage_config(SelectConfig, config, {
        "model": model, "data": data, "out": str(out) if out else None, "n": n,
        "sampling.max_new_tokens": max_new_tokens, "batch_size": batch_size, "limit": limit,
        "seed": seed, "device": device, "dtype": dtype,
    })
    from .. import ui
    from ..pipeline import select as run_select

    events = ui.RunEvents()
    with user_errors():
        run_select(cfg, on_event=events, fresh=fresh)
