"""The recipe: rows, session, resume, the steps (logged, checkpointed), the adapter with its provenance."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from .. import checkpoint
from .. import distributed as dist
from .. import provenance, trackers
from ..config import TrainConfig, check_same_settings, save_config
from ..data import JsonlAppender
from ..distributed import Progress
from ..objectives import OBJECTIVES
from ..rows import TrainRow, build_rows, check_token_ids, step_rows
from ..rundir import AdapterDir, provenance_path
from ..stage import check_inputs
from .session import Session, setup
from .step import log_record, train_step

__all__ = ["RESUME_MAY_DIFFER", "fit", "run"]

# --------------------------------------------------------------------------------------------------
# the stage


# TrainConfig fields a resumed run may change: they move no number of the run (accumulation is
# exact, see tests/test_train.py), or say only how to run it.
RESUME_MAY_DIFFER = ("resume", "device", "grad_accum", "gradient_checkpointing", "save_every", "log_every",
                     "report_to", "logging_dir")

# The way out of traces refused for their record: expand makes them again, and records what made them.
REMAKE_TRACES = "make them again with `dail expand --fresh`, which records the model beside them"


def fit(cfg: TrainConfig, progress: Progress | None = None) -> tuple[Any, dict[str, Any]]:
    """Train as configured; the trained peft model (eval mode) and the run's summary.

    `progress(done, total, loss=...)` hears every optimizer step (the CLI draws it).
    """
    from ..models import load_tokenizer

    started = time.perf_counter()
    trackers.require_installed(cfg.report_to)  # now, not silently dropped at the first step
    out = Path(cfg.out)
    resume_from = checkpoint.prepare_out(out, cfg.resume)
    if resume_from is not None:  # a resume goes on under the settings it started with, or not at all
        check_same_settings(AdapterDir(out).config, cfg, ignore=RESUME_MAY_DIFFER, output=out,
                            fresh="train into another --out, or delete it to start over")
    rows = build_rows(cfg, load_tokenizer(cfg.model))  # data errors before the model loads
    made_by = _traces_record(cfg)  # traces without a record stop before the model loads, too
    session = setup(cfg, len(rows))
    _check_traces(cfg, rows, session, made_by)  # before any step: traces of another model would train silently
    plan = {"objective": cfg.objective, "rows": len(rows), "batch_size": cfg.batch_size, "seed": cfg.seed,
            "total_steps": session.total_steps}
    state = _resume(session, out, resume_from, plan)
    # After the resume: the first step logged is known, and TensorBoard drops later ones a killed run left.
    session.accelerator.init_trackers(trackers.PROJECT, config=trackers.hparams(cfg),
                                      init_kwargs=trackers.init_kwargs(state["step"] + 1))
    try:
        last, tokens = _steps(session, rows, out, plan, state, progress)
        if session.accelerator.is_main_process:
            provenance.write(provenance_path(out), session.provenance)  # before the adapter's 'done' mark
            checkpoint.save_adapter(session.peft_model, out)
        session.accelerator.wait_for_everyone()
    finally:  # a failed or interrupted run still flushes and closes its tracker runs
        if cfg.report_to:  # last: it also destroys the process group a launched run joined
            session.accelerator.end_training()
    session.peft_model.eval()
    summary = {"out": str(out), "objective": cfg.objective, "rows": len(rows), "steps": session.total_steps,
               "start_step": state["step"], "steps_per_epoch": session.steps_per_epoch, "tokens": tokens,
               "loss": last.get("loss"),
               "trainable_parameters": sum(p.numel() for p in session.peft_model.parameters() if p.requires_grad),
               "seconds": round(time.perf_counter() - started, 2)}
    return session.peft_model, summary


def _traces_record(cfg: TrainConfig) -> dict[str, Any] | None:
    """The provenance record of the traces trained on (ProvenanceError when missing); None when none are read."""
    if cfg.traces is None or OBJECTIVES[cfg.objective].target == "solution":
        return None
    return provenance.require(provenance_path(cfg.traces), cfg.traces, "traces", REMAKE_TRACES)


def _check_traces(cfg: TrainConfig, rows: list[TrainRow], session: Session, made_by: dict[str, Any] | None) -> None:
    """Refuse traces recorded as made by other weights or another tokenizer, and token ids past the vocabulary."""
    if made_by is None:
        return
    provenance.check_same_model(cfg.traces, made_by, session.provenance, "traces", REMAKE_TRACES)
    check_token_ids(rows, session.vocab_size, cfg.traces, cfg.model)


def _resume(session: Session, out: Path, resume_from: Path | None, plan: dict[str, Any]) -> dict[str, Any]:
    """Restore the checkpoint to resume from, if any, and bring `out` back to its step; where the run stands."""
    accelerator = session.accelerator
    accelerator.wait_for_everyone()  # every process has looked at out/ before the main one writes to it
    state = {"step": 0, "tokens": 0, "elapsed": 0.0}
    if resume_from is not None:
        state = checkpoint.load(resume_from, plan, model=session.peft_model, optimizer=session.optimizer,
                                scheduler=session.scheduler, device=accelerator.device)
    if accelerator.is_main_process:
        checkpoint.reset_to(out, state["step"])
        save_config(session.cfg, AdapterDir(out).config)
    accelerator.wait_for_everyone()
    return state


def _steps(session: Session, rows: list[TrainRow], out: Path, plan: dict[str, Any],
           state: dict[str, Any], progress: Progress | None) -> tuple[dict[str, Any], int]:
    """The optimizer steps from `state`'s to the last, logged and checkpointed; the last log line, tokens seen."""
    cfg, main, total = session.cfg, session.accelerator.is_main_process, session.total_steps
    tokens, last = state["tokens"], {}
    report = progress if (progress is not None and main) else (lambda done, total, **fields: None)
    report(state["step"], total)
    with (JsonlAppender(AdapterDir(out).log) if main else contextlib.nullcontext()) as log:
        t0 = time.perf_counter()
        for step in range(state["step"], total):
            batch = [rows[i] for i in step_rows(len(rows), cfg.batch_size, cfg.seed, step, session.steps_per_epoch)]
            log_now = (step + 1) % cfg.log_every == 0 or step + 1 == total
            stats = train_step(session, step, batch, diagnose=log_now)
            tokens += stats.tokens
            elapsed = state["elapsed"] + time.perf_counter() - t0
            if log_now:
                last = log_record(session, stats, step + 1, elapsed)  # every process: a collective
                last["tokens_seen"] = tokens  # trained tokens so far: the compute a method used
                if main:
                    log.write(last)
                session.accelerator.log(trackers.step_scalars(last), step=step + 1)  # the main process's trackers
            report(step + 1, total, loss=last.get("loss"))
            if (step + 1) % cfg.save_every == 0 or step + 1 == total:
                _save(session, out, step + 1, {"tokens": tokens, "elapsed": elapsed, "plan": plan})
    return last, tokens


def _save(session: Session, out: Path, step: int, state: dict[str, Any]) -> None:
    """The checkpoint after `step` optimizer steps: the main process writes it, every process waits."""
    if session.accelerator.is_main_process:
        epoch, position = divmod(step, session.steps_per_epoch)
        state = {"step": step, "epoch": epoch, "position": position * session.cfg.batch_size, **state}
        checkpoint.save(out, step, state, model=session.peft_model, optimizer=session.optimizer,
                        scheduler=session.scheduler)
    session.accelerator.wait_for_everyone()


def run(cfg: TrainConfig, progress: Progress | None = None, *, fresh: bool = False) -> dict[str, Any]:
    """The `dail train` stage: train, write `out/` (adapter, log.jsonl, config.toml); the summary.

    `fresh` deletes an earlier training run in `out/` first; a folder without a training run's files
    is the user's and stays.
    """
    check_inputs(cfg, "dir")  # a device this machine lacks, or an output that cannot be, deletes nothing
    if fresh:
        checkpoint.remove_run(Path(cfg.out))
    with dist.output_lock(cfg.out, main_only=True):  # one training run per adapter directory
        return fit(cfg, progress)[1]
