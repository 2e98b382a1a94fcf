"""One optimizer step: every micro-batch's forwards, the loss a chunk of logits at a time, one backward through
the decoder, clipping, AdamW and the schedule; and the step's log line."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from ..objectives import contrastive_diagnostics
from ..roles import Role
from ..rows import REFERENCE_ROLES, TrainRow, collate, micro_batches
from ..seeding import seed_torch, step_seed
from .session import Session

__all__ = ["DIAGNOSTICS", "LOGIT_CHUNK_ELEMENTS", "StepStats", "backward_through_decoder", "log_record",
           "optimizer_step", "train_step"]

DIAGNOSTICS = ("kl_privileged", "kl_negative", "margin", "nll")
# Logits are made and consumed a chunk of trace positions at a time: chunk = this // vocabulary size
# (2^25 elements: 128 MiB per float32 [C, V] tensor; 682 positions at V = 49k, 220 at V = 152k).
LOGIT_CHUNK_ELEMENTS = 2**25



# --------------------------------------------------------------------------------------------------
# one optimizer step


@dataclass
class StepStats:
    """One step's figures, still on the device where they are tensors (no sync until logged)."""

    loss: torch.Tensor  # this process's share of the step's mean loss (sum over processes = the mean)
    grad_norm: torch.Tensor
    tokens: int  # trace tokens of the step, all processes
    lr: float
    diag: dict[str, float] = field(default_factory=dict)  # token-weighted sums, this process


def train_step(session: Session, step: int, rows: list[TrainRow], *, diagnose: bool = False) -> StepStats:
    """One optimizer step over `rows` (the step's rows of ALL processes; each takes its share)."""
    accelerator, cfg = session.accelerator, session.cfg
    seed_torch(step_seed(cfg.seed, step, accelerator.process_index))  # dropout: same draws after a resume
    num_tokens = sum(len(r.target) for r in rows)  # global count, known to every process: no collective
    local = rows[accelerator.process_index::accelerator.num_processes]
    assert local, "the step plan gives every process at least one row"
    loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)  # float64: float64 losses log exactly
    diag: Counter = Counter()
    # ----------------------------------------------------------------------------------------------
    # Sync points: none of its own. Inside, each loss call's boolean-mask gather (objectives) and,
    # on log steps only, the diagnostics; clipping, AdamW and the schedule stay on the device.
    for micro in micro_batches(local, cfg.grad_accum):  # the last micro-batch is never empty
        with accelerator.accumulate(session.wrapped):  # DDP: no gradient all-reduce until the last micro-batch
            if micro:
                micro_loss, micro_diag = _micro_batch(session, micro, num_tokens, diagnose)  # forwards, backward
                loss += micro_loss
                diag.update(micro_diag)
    grad_norm, lr = optimizer_step(session)
    # ----------------------------------------------------------------------------------------------
    return StepStats(loss, grad_norm, num_tokens, lr, dict(diag))


def optimizer_step(session: Session) -> tuple[torch.Tensor, float]:
    """Clip the accumulated gradients, step AdamW and the schedule, clear the gradients; (grad norm, the LR used)."""
    params = [p for group in session.optimizer.param_groups for p in group["params"]]
    if session.cfg.max_grad_norm is not None:
        grad_norm = session.accelerator.clip_grad_norm_(params, session.cfg.max_grad_norm)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    lr = session.scheduler.get_last_lr()[0]  # the rate this step uses
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    return grad_norm, lr


def backward_through_decoder(session: Session, hidden: torch.Tensor, leaf: torch.Tensor) -> None:
    """The decoder's backward once the chunked losses filled `leaf.grad` (d(hidden . g)/d(hidden) = g).

    accelerate's backward divides by grad_accum and DDP averages over processes; both are undone: the
    losses are already each process's share of the step's mean.
    """
    scale = session.cfg.grad_accum * session.accelerator.num_processes
    session.accelerator.backward((hidden * leaf.grad).sum() * scale)


def _micro_batch(session: Session, rows: list[TrainRow], num_tokens: int,
                 diagnose: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Backward of a micro-batch's loss normalised by the step's global token count; the loss, diagnostic sums.

    The head and the loss run in chunks of trace positions on a detached copy of the student's hidden
    states (`_chunked_loss`), each chunk's backward filling that copy's gradient; then ONE backward
    runs through the decoder. The references keep only their hidden states `[N, H]`.
    """
    device = session.accelerator.device
    targets = torch.tensor([t for r in rows for t in r.target]).to(device, non_blocking=True)  # [N]
    refs = _reference_hidden(session, rows) if session.objective.needs_references else []
    hidden = session.wrapped(*collate(rows, Role.LEARNER, session.pad_id, device))  # [N, H], graph through the decoder
    leaf = hidden.detach().requires_grad_()  # [N, H]
    loss, diag = _chunked_loss(session, leaf, refs, targets, num_tokens, diagnose)
    backward_through_decoder(session, hidden, leaf)
    return loss, diag


def _reference_hidden(session: Session, rows: list[TrainRow]) -> list[torch.Tensor]:
    """The frozen references' hidden states at trace positions, `[N, H]` per reference role, no grad."""
    session.peft_model.eval()  # references without dropout, as at inference
    with torch.no_grad(), session.peft_model.disable_adapter(), session.accelerator.autocast():
        device = session.accelerator.device
        refs = [session.lm(*collate(rows, role, session.pad_id, device)) for role in REFERENCE_ROLES]  # [N, H] each
    session.peft_model.train()
    return refs


def _chunked_loss(session: Session, leaf: torch.Tensor, refs: list[torch.Tensor], targets: torch.Tensor,
                  num_tokens: int, diagnose: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Head and loss a chunk of positions at a time, each chunk's backward into `leaf.grad`; the loss, diagnostics.

    At most a chunk of `[C, V]` logits (of each role) is alive at a time, never `[N, V]`.
    """
    objective, accelerator = session.objective, session.accelerator
    mask = torch.ones_like(targets, dtype=torch.bool)  # [N]: every gathered position counts
    chunk = max(1, LOGIT_CHUNK_ELEMENTS // session.vocab_size)
    loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    diag: Counter = Counter()
    for start in range(0, len(targets), chunk):
        part = slice(start, start + chunk)
        with accelerator.autocast():  # outside the prepared module: its autocast does not reach here
            student = session.lm.head(leaf[part])  # [C, V]
            with torch.no_grad():
                ref_logits = [session.lm.head(h[part]) for h in refs]  # [C, V] each
            part_loss = objective.loss(student, ref_logits, targets[part], mask[part], session.cfg,
                                       num_tokens=num_tokens)
        part_loss.backward()  # into leaf.grad only: the head is frozen (checked in setup)
        loss += part_loss.detach()
        if diagnose and refs:
            d = contrastive_diagnostics(student.detach(), *ref_logits, mask[part], targets[part])  # sync point (floats)
            diag.update({k: d[k] * d["tokens"] for k in DIAGNOSTICS})
        del student, ref_logits, part_loss  # before the next chunk allocates its own
    return loss, dict(diag)


def log_record(session: Session, stats: StepStats, step: int, elapsed: float) -> dict[str, Any]:
    """The log line of a step: losses summed over processes, diagnostics as token-weighted means."""
    names = [k for k in DIAGNOSTICS if k in stats.diag]
    accelerator = session.accelerator
    diag = torch.tensor([stats.diag[k] for k in names], dtype=torch.float64, device=accelerator.device)
    local = torch.cat([stats.loss.view(1), diag])
    total = accelerator.reduce(local, "sum") if accelerator.num_processes > 1 else local  # collective: all call it
    # The grad norm is the same on every process (gradients were all-reduced): not summed.
    loss, grad_norm, *sums = torch.cat([total[:1], stats.grad_norm.double().view(1), total[1:]]).tolist()  # sync point
    record = {"step": step, "epoch": round(step / session.steps_per_epoch, 4), "loss": loss, "lr": stats.lr,
              "tokens": stats.tokens, "grad_norm": grad_norm}
    if names:
        record.update({k: v / stats.tokens for k, v in zip(names, sums)})
    else:  # nll, sft-expert: the loss IS the mean NLL of the targets
        record["nll"] = loss
    record["elapsed"] = round(elapsed, 3)
    return record


