"""The reinforcement-learning commands: `dail rl` (GRPO, NuRL with --hints) and `dail hints` (NuRL's self-hints)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..config import HintConfig, RLConfig
from .common import (BatchSizeOpt, ConfigOpt, DataOpt, DeviceOpt, DtypeOpt, FreshOpt, LimitOpt, ModelOpt, OutOpt,
                     SeedOpt, app, console, stage_config, user_errors)


@app.command()
def rl(
    model: ModelOpt = None,
    data: DataOpt = None,
    out: OutOpt = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Rollout batches.")] = None,
    problems_per_step: Annotated[Optional[int], typer.Option(min=1, help="Problems per rollout batch.")] = None,
    group_size: Annotated[Optional[int], typer.Option(min=2, help="Rollouts per problem (G).")] = None,
    lr: Annotated[Optional[float], typer.Option()] = None,
    kl_coef: Annotated[Optional[float], typer.Option(help="Weight of the KL to the base; 0 skips it.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option()] = None,
    hints: Annotated[Optional[str], typer.Option(help="NuRL: a hints JSONL from `dail hints`; all-fail groups are "
                                                     "rolled again with the hint.")] = None,
    adapter: Annotated[Optional[str], typer.Option(help="Start from this LoRA adapter instead of a fresh one.")] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume", help="Continue from the last checkpoint.")] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    fresh: FreshOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Online GRPO with LoRA: G rollouts per problem, rewards from grading, the clipped surrogate.

    Writes --out: the adapter directory (adapter, log.jsonl, rollouts/, checkpoints/); --fresh deletes
    the run there first, --resume continues it.
    """
    cfg = stage_config(RLConfig, config, {
        "model": model, "data": data, "out": str(out) if out else None, "steps": steps,
        "problems_per_step": problems_per_step, "group_size": group_size, "lr": lr, "kl_coef": kl_coef,
        "sampling.max_new_tokens": max_new_tokens, "hints": hints, "adapter": adapter, "resume": resume,
        "seed": seed, "device": device, "dtype": dtype,
    })
    from .. import ui
    from ..distributed import is_main
    from ..rl import run

    with user_errors(cfg.out), ui.progress("rl") as bar:
        summary = run(cfg, progress=bar, fresh=fresh)
    if is_main():
        reward = summary.get("reward")
        console.print(f"{summary['method']}: {summary['steps']} rollout batches (from {summary['start_step']}), last "
                      f"mean reward {'-' if reward is None else f'{reward:.3f}'}, "
                      f"{summary.get('sampled_tokens_seen') or 0} tokens sampled, {summary.get('tokens_seen') or 0} "
                      f"trained on -> {summary['out']}")


@app.command()
def hints(
    model: ModelOpt = None,
    data: DataOpt = None,
    out: OutOpt = None,
    mode: Annotated[Optional[str], typer.Option(help="abstract (NuRL's self-hint) or partial (first lines of a "
                                                     "rationalization).")] = None,
    attempts: Annotated[Optional[int], typer.Option(min=1, help="Hints drawn per problem.")] = None,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = None,
    limit: LimitOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    fresh: FreshOpt = False,
    config: ConfigOpt = None,
) -> None:
    """NuRL's hints: the model writes one per problem from the problem and its final answer; leaking ones are dropped.

    Writes --out: the hints JSONL (append-only: a rerun resumes it; --fresh deletes it first).
    """
    cfg = stage_config(HintConfig, config, {
        "model": model, "data": data, "out": str(out) if out else None, "mode": mode, "attempts": attempts,
        "batch_size": batch_size, "seed": seed, "limit": limit, "device": device, "dtype": dtype,
    })
    from pathlib import Path

    from .. import ui
    from ..distributed import is_main
    from ..rl.hints import make_hints

    with user_errors(Path(cfg.out).parent), ui.progress("hints") as bar:
        summary = make_hints(cfg, progress=bar, fresh=fresh)
    if is_main():
        console.print(f"{summary['with_hint']} of {summary['problems']} problems have a hint "
                      f"({summary['leaked']} of {summary['attempts']} attempts leaked the answer) -> {summary['out']}")
