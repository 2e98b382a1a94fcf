"""The RL loop: per step the rollouts, (NuRL) hinted re-rolls, the update(s), the log line, checkpoints; resume.

    OUT/ adapter_config.json  adapter_model.safetensors   the final adapter, as `dail train` writes it
         log.jsonl                                        one line per rollout batch
         config.toml  provenance.json                     the resolved RLConfig; the base it trained on
         checkpoints/step-N/                              after N rollout batches (adapter, optimizer, schedule)
         rollouts/step-N.jsonl                            batch N's rollouts; step-N.hinted.jsonl its re-rolls
                                                          (N counts from `first_step`: a stage continuing another
                                                          run draws that run's later batches)

A killed run resumes (`resume`) from its last checkpoint: the adapter, AdamW and the schedule come
back, the problems of each step are a function of (seed, step), and a rollout's random stream is a
function of (seed, problem, g, step); so the resumed run draws the rollouts an uninterrupted one
would have drawn (tests/test_rl.py). Rollout files a killed run completed after its last checkpoint
are read back, not drawn again: the weights that drew them are the ones the resumed run restores.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint, provenance, trackers
from ..config import RLConfig, check_same_settings, save_config
from ..data import DataError, JsonlAppender, Problem, Rollout
from ..distributed import Progress
from ..roles import Role
from ..rundir import AdapterDir, data_digest, provenance_path
from ..train.session import Session, open_session
from .rollouts import merge_hinted, roll_out, step_problems
from .update import SURROGATE_STATS, Batch, UpdateStats, old_logprobs, rollout_record, score, update

__all__ = ["Context", "RESUME_MAY_DIFFER", "fit"]

# RLConfig fields a resumed run may change: how to run it, never a number of it.
RESUME_MAY_DIFFER = ("resume", "device", "grad_accum", "gradient_checkpointing", "save_every", "log_every",
                     "report_to", "logging_dir", "decode_batch")


@dataclass
class Context:
    """What every step of a run needs: the config, the training session, the engine, the problems and prompts."""

    cfg: RLConfig
    session: Session
    engine: Any
    problems: list[Problem]
    prompts: dict[tuple[str, bool], list[int]]  # (problem id, hinted) -> prompt ids
    hints: dict[str, str]

    @property
    def policy(self):
        """The model being trained (peft): the engine samples it, the update trains it."""
        return self.session.peft_model

    @property
    def tokenizer(self):
        return self.session.tokenizer


def fit(cfg: RLConfig, progress: Progress | None = None, problems: list[Problem] | None = None,
        hints: dict[str, str] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train as configured on `problems` (default: `cfg.data`'s); the trained peft model and the run's summary."""
    from ..engine import Engine, default_eos_ids

    started = time.perf_counter()
    trackers.require_installed(cfg.report_to)
    out = Path(cfg.out)
    problems = problems if problems is not None else load_problems(cfg.data, cfg.problems_per_step)
    resume_from = checkpoint.prepare_out(out, cfg.resume)
    cfg = cfg.model_copy(update={"data_digest": data_digest(cfg.data)})
    if resume_from is not None:
        check_same_settings(AdapterDir(out).config, cfg, ignore=RESUME_MAY_DIFFER, output=out,
                            fresh="train into another --out, or delete it to start over")
    total = cfg.steps * cfg.updates_per_batch
    session = open_session(cfg, lambda _: (max(1, len(problems) // cfg.problems_per_step), total), cfg.adapter)
    ctx = Context(cfg, session, Engine(session.peft_model, default_eos_ids(session.peft_model,
                                                                           session.tokenizer.eos_token_id)),
                  problems, {}, hints or {})
    ctx.prompts = _prompts(ctx)
    plan = {"method": "grpo", "problems": len(problems), "problems_per_step": cfg.problems_per_step,
            "group_size": cfg.group_size, "updates_per_batch": cfg.updates_per_batch, "steps": cfg.steps,
            "first_step": cfg.first_step, "seed": cfg.seed}
    state = _resume(session, out, resume_from, plan)
    session.accelerator.init_trackers(trackers.PROJECT, config=trackers.hparams(cfg),
                                      init_kwargs=trackers.init_kwargs(state["step"] + 1))
    try:
        last = _steps(ctx, out, plan, state, progress)
        if session.accelerator.is_main_process:
            provenance.write(provenance_path(out), session.provenance)
            checkpoint.save_adapter(session.peft_model, out)
        session.accelerator.wait_for_everyone()
    finally:
        if cfg.report_to:
            session.accelerator.end_training()
    session.peft_model.eval()
    summary = {"out": str(out), "method": "nurl" if ctx.hints else "grpo", "problems": len(problems),
               "steps": cfg.steps, "start_step": state["step"], **{k: last.get(k) for k in (
                   "reward", "sampled_tokens_seen", "tokens_seen")},
               "seconds": round(time.perf_counter() - started, 2)}
    return session.peft_model, summary


def load_problems(spec: str, at_least: int = 1) -> list[Problem]:
    """The problems of `spec` that have an answer to reward; DataError when fewer than `at_least` have."""
    from ..datasets import resolve_problems

    try:
        problems = resolve_problems(spec)
    except DataError:
        raise
    except ValueError as e:  # an unknown split name or a missing file
        raise DataError(spec, None, None, str(e)) from None
    verifiable = [p for p in problems if p.verifiable]
    if len(verifiable) < at_least:
        raise DataError(spec, None, "answer", f"{len(verifiable)} of {len(problems)} problems have an answer "
                                              f"(at least {at_least} needed)")
    return verifiable


def _prompts(ctx: Context) -> dict[tuple[str, bool], list[int]]:
    """Each problem's learner prompt, and with its hint where it has one (NuRL's re-roll prompt)."""
    from ..prompts import render

    cfg, tok = ctx.cfg, ctx.tokenizer
    out = {(p.id, False): render(tok, Role.LEARNER, p, cfg.prompts) for p in ctx.problems}
    for p in ctx.problems:
        if p.id in ctx.hints:
            hinted = p.model_copy(update={"problem": cfg.hint_template.format(problem=p.problem, hint=ctx.hints[p.id])})
            out[(p.id, True)] = render(tok, Role.LEARNER, hinted, cfg.prompts)
    return out


def _resume(session: Session, out: Path, resume_from: Path | None, plan: dict[str, Any]) -> dict[str, Any]:
    """Restore the checkpoint to resume from, if any, and bring `out` back to its step; where the run stands."""
    acc = session.accelerator
    acc.wait_for_everyone()
    state = {"step": 0, "tokens": 0, "sampled": 0, "elapsed": 0.0}
    if resume_from is not None:
        state = {**state, **checkpoint.load(resume_from, plan, model=session.peft_model, optimizer=session.optimizer,
                                            scheduler=session.scheduler, device=acc.device)}
    if acc.is_main_process:
        checkpoint.reset_to(out, state["step"])
        save_config(session.cfg, AdapterDir(out).config)
    acc.wait_for_everyone()
    return state


def _steps(ctx: Context, out: Path, plan: dict[str, Any], state: dict[str, Any],
           progress: Progress | None) -> dict[str, Any]:
    """The rollout batches from `state`'s to the last, logged and checkpointed; the last log line."""
    cfg, session = ctx.cfg, ctx.session
    main = session.accelerator.is_main_process
    report = progress if (progress is not None and main) else (lambda done, total, **fields: None)
    report(state["step"], cfg.steps)
    tokens, sampled, last = state["tokens"], state["sampled"], {}
    with (JsonlAppender(AdapterDir(out).log) if main else contextlib.nullcontext()) as log:
        t0 = time.perf_counter()
        for step in range(state["step"], cfg.steps):
            rollouts, rerolled, drawn = _rollouts(ctx, out, cfg.first_step + step)  # batch index of the whole run
            batch = score(rollouts, ctx.prompts, scale=cfg.scale_rewards)
            stats, trained = _updates(ctx, batch, cfg.first_step + step)
            tokens += trained  # the compute of the updates: rows of zero-variance groups are never run
            sampled += drawn
            elapsed = state["elapsed"] + time.perf_counter() - t0
            # a checkpoint's line is always written: a later stage that starts there reads its compute
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps or step + 1 in cfg.checkpoint_at:
                last = _log_record(ctx, stats, rollouts, batch, step + 1, elapsed)
                last.update(batch=cfg.first_step + step + 1, rerolled=rerolled, sampled_tokens=drawn,
                            tokens_seen=tokens, sampled_tokens_seen=sampled)
                if main:
                    log.write(last)
                session.accelerator.log(trackers.step_scalars(last), step=step + 1)
            report(step + 1, cfg.steps, reward=last.get("reward"))
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps or step + 1 in cfg.checkpoint_at:
                _save(session, out, step + 1, {"tokens": tokens, "sampled": sampled, "elapsed": elapsed, "plan": plan})
    return last


def _rollouts(ctx: Context, out: Path, step: int) -> tuple[list[Rollout], int, int]:
    """Step `step`'s rollouts; with hints, each all-fail group's rollouts 1..G-1 replaced by hinted ones.

    Also the groups re-rolled and the tokens sampled: the replaced plain rollouts were drawn too.
    """
    cfg = ctx.cfg
    chosen = step_problems(ctx.problems, cfg.problems_per_step, cfg.seed, step)
    plain = {p.id: ctx.prompts[(p.id, False)] for p in chosen}
    rollouts = roll_out(ctx, step, chosen, plain, AdapterDir(out).rollouts / f"step-{step:06d}.jsonl")
    failed = {r.problem_id for r in rollouts} - {r.problem_id for r in rollouts if r.reward > 0}
    again = [p for p in chosen if p.id in failed and (p.id, True) in ctx.prompts]
    drawn = sum(len(r.token_ids) for r in rollouts)
    if not again:
        return rollouts, 0, drawn
    hinted = roll_out(ctx, step, again, {p.id: ctx.prompts[(p.id, True)] for p in again},
                      AdapterDir(out).rollouts / f"step-{step:06d}.hinted.jsonl", hinted=True, first=1)
    # NuRL keeps one rollout of the plain prompt in a nudged group and gives the other G-1 the hint.
    # a problem whose hinted prompt outgrows the context has no hinted rows: it keeps its plain group
    nudged = len({r.problem_id for r in hinted})
    return merge_hinted(rollouts, hinted), nudged, drawn + sum(len(r.token_ids) for r in hinted)


def _updates(ctx: Context, batch: Batch, step: int) -> tuple[UpdateStats, int]:
    """The rollout batch's optimizer step(s); the last one's figures, and the tokens all of them trained on."""
    cfg, session = ctx.cfg, ctx.session
    if cfg.updates_per_batch > 1:
        batch.old = old_logprobs(session, batch)
    session.peft_model.train()
    forwarded = 0
    for u in range(cfg.updates_per_batch):
        stats = update(session, batch, step * cfg.updates_per_batch + u)
        forwarded += stats.forwarded
    acc = session.accelerator
    if acc.num_processes > 1:  # every process: a collective
        forwarded = int(acc.reduce(torch.tensor([forwarded], device=acc.device), "sum").item())
    return stats, forwarded


def _log_record(ctx: Context, stats: UpdateStats, rollouts: list[Rollout], batch: Batch, step: int,
                elapsed: float) -> dict[str, Any]:
    """A step's log line: the rollouts' figures, the loss summed over processes, the surrogate's diagnostics."""
    acc = ctx.session.accelerator
    names = SURROGATE_STATS
    local = torch.tensor([float(stats.loss), stats.forwarded, *(stats.sums.get(k, 0.0) for k in names)],
                         dtype=torch.float64, device=acc.device)
    total = acc.reduce(local, "sum") if acc.num_processes > 1 else local
    loss, forwarded, *sums = total.tolist()
    record = {"step": step, **rollout_record(rollouts, batch), "loss": loss, "lr": stats.lr,
              "grad_norm": float(stats.grad_norm), "tokens": stats.tokens, "forwarded_tokens": int(forwarded)}
    record.update({k: (v / forwarded if forwarded else 0.0) for k, v in zip(names, sums)})
    record["elapsed"] = round(elapsed, 3)
    return record


def _save(session: Session, out: Path, step: int, state: dict[str, Any]) -> None:
    """The checkpoint after `step` rollout batches: the main process writes it, every process waits."""
    if session.accelerator.is_main_process:
        checkpoint.save(out, step, {"step": step, **state}, model=session.peft_model, optimizer=session.optimizer,
                        scheduler=session.scheduler)
        # with the base's record, so that a later stage can start from this checkpoint as from an adapter
        provenance.write(provenance_path(AdapterDir(out).checkpoint(step)), session.provenance)
    session.accelerator.wait_for_everyone()
