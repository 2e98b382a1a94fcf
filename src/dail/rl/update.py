"""A GRPO update: rewards into group advantages, the clipped surrogate over the rollouts' tokens, AdamW.

The loss is `dail.objectives.grpo_loss` with token-level normalisation: the sum over every rollout
token of the batch divided by their number. A rollout of a zero-variance group has advantage 0
exactly; without a KL term its tokens add 0 to the loss and nothing to the gradient, so its forward
is skipped -- its tokens still count in the normaliser, which keeps the update the one a forward
over every rollout computes (tests/test_rl.py checks both). Each process keeps at least one row, so
every process takes part in the gradient all-reduce under `accelerate launch`.

The forward is the training one (`dail.train.step`): the decoder on the process's rollouts, the head
and the loss a chunk of positions at a time, one backward through the decoder. With one update per
rollout batch the sampling policy is the current one, so the old log-probs are this forward's own,
detached (the ratio is exactly 1, as in TRL); with more, they come from one no-grad forward before
the first update.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data import Rollout
from ..objectives import group_advantages, grpo_loss
from ..roles import Role
from ..rows import TrainRow, collate, micro_batches
from ..seeding import seed_torch, step_seed
from ..train.session import Session
from ..train.step import LOGIT_CHUNK_ELEMENTS, backward_through_decoder, optimizer_step

__all__ = ["Batch", "SURROGATE_STATS", "UpdateStats", "old_logprobs", "rollout_record", "score", "update"]

SURROGATE_STATS = ("kl", "clip_fraction", "ratio")  # token-weighted diagnostics of the surrogate


@dataclass
class Batch:
    """A rollout batch ready to train on: rows (prompt + completion), one advantage each, the group tally."""

    rows: list[TrainRow]
    advantages: list[float]
    groups: int
    all_fail: int
    all_pass: int
    old: list[torch.Tensor] | None = None  # per-row old log-probs `[T]` when updating more than once


def score(rollouts: list[Rollout], prompts: dict[tuple[str, bool], list[int]], *, scale: bool) -> Batch:
    """Group the rollouts by problem, normalise each group's rewards; `prompts[(problem, hinted)]` are the
    prompt ids a rollout was sampled from (and so the ones its gradient sees)."""
    groups: dict[str, list[Rollout]] = defaultdict(list)
    for r in rollouts:
        groups[r.problem_id].append(r)
    sizes = {len(g) for g in groups.values()}
    if len(sizes) != 1:
        raise ValueError(f"groups of unequal size {sorted(sizes)}: a step's rollouts are incomplete")
    members = list(groups.values())
    rewards = torch.tensor([[r.reward for r in g] for g in members], dtype=torch.float64)  # [P, G]
    adv, _ = group_advantages(rewards, scale=scale)
    rows = [TrainRow(f"{r.problem_id}#{r.sample}", {Role.LEARNER: prompts[(r.problem_id, r.hinted)]}, r.token_ids)
            for g in members for r in g]
    return Batch(rows, adv.flatten().tolist(), len(members), all_fail=int((rewards.amax(1) == 0).sum()),
                 all_pass=int((rewards.amin(1) == 1).sum()))


@dataclass
class UpdateStats:
    """One optimizer step's figures on this process (tensors stay on the device until logged)."""

    loss: torch.Tensor
    grad_norm: torch.Tensor
    lr: float
    tokens: int  # rollout tokens the update normalises by (all processes)
    forwarded: int  # rollout tokens this process ran forward and backward
    sums: dict[str, float] = field(default_factory=dict)


def _share(session: Session, batch: Batch) -> tuple[list[int], bool]:
    """The row indices this process trains on (its interleaved share of the rows that carry a gradient), and
    whether they carry one."""
    cfg, acc = session.cfg, session.accelerator
    live = [i for i, a in enumerate(batch.advantages) if a != 0.0 or cfg.kl_coef > 0]
    mine = live[acc.process_index::acc.num_processes]
    # A process with nothing to train on still runs one row, its loss times 0, so that it joins the
    # gradient all-reduce its peers wait in; the row may be a peer's, so it must add nothing.
    return (mine, True) if mine else ([acc.process_index % len(batch.rows)], False)


def update(session: Session, batch: Batch, step: int) -> UpdateStats:
    """One optimizer step of the clipped surrogate over `batch` (every process holds the whole batch)."""
    acc, cfg = session.accelerator, session.cfg
    seed_torch(step_seed(cfg.seed, step, acc.process_index))  # LoRA dropout: the same draws after a resume
    num_tokens = sum(len(r.target) for r in batch.rows)
    mine, live = _share(session, batch)
    loss = torch.zeros((), dtype=torch.float64, device=acc.device)
    sums: Counter = Counter()
    forwarded = 0
    for micro in micro_batches(mine, cfg.grad_accum):
        with acc.accumulate(session.wrapped):
            if micro:
                part_loss, part_sums = _micro_batch(session, batch, micro, num_tokens, weight=1.0 if live else 0.0)
                if live:  # the stand-in row of an idle process is neither loss nor compute
                    loss += part_loss
                    sums.update(part_sums)
                    forwarded += sum(len(batch.rows[i].target) for i in micro)
    grad_norm, lr = optimizer_step(session)
    # sync point: the diagnostics once per update, not once per chunk
    return UpdateStats(loss, grad_norm, lr, num_tokens, forwarded, {k: float(v) for k, v in sums.items()})


def _micro_batch(session: Session, batch: Batch, idx: list[int], num_tokens: int,
                 weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward, chunked surrogate (times `weight`) and backward of the rows `idx`; the loss share and
    token-weighted diagnostics."""
    device, cfg = session.accelerator.device, session.cfg
    rows = [batch.rows[i] for i in idx]
    ids, index = collate(rows, Role.LEARNER, session.pad_id, device)
    targets = torch.tensor([t for r in rows for t in r.target], device=device)  # [N]
    adv = torch.tensor([batch.advantages[i] for i, r in zip(idx, rows) for _ in r.target],
                       dtype=torch.float64, device=device)  # [N]
    old = torch.cat([batch.old[i] for i in idx]).to(device) if batch.old is not None else None
    ref = _base_hidden(session, ids, index) if cfg.kl_coef > 0 else None
    hidden = session.wrapped(ids, index)  # [N, H]
    leaf = hidden.detach().requires_grad_()
    loss = torch.zeros((), dtype=torch.float64, device=device)
    sums: Counter = Counter()
    chunk = max(1, LOGIT_CHUNK_ELEMENTS // session.vocab_size)
    for start in range(0, len(targets), chunk):
        part = slice(start, start + chunk)
        with session.accelerator.autocast():
            lp = _token_logprobs(session, leaf[part], targets[part])  # [C]
            ref_lp = _token_logprobs(session, ref[part], targets[part]).detach() if ref is not None else None
        old_lp = old[part] if old is not None else lp.detach()
        part_loss, stats = grpo_loss(lp[:, None], old_lp[:, None], adv[part], torch.ones_like(lp[:, None], dtype=torch.bool),
                                     epsilon=cfg.epsilon, kl_coef=cfg.kl_coef,
                                     ref_logprobs=None if ref_lp is None else ref_lp[:, None], num_tokens=num_tokens)
        part_loss = part_loss * weight
        part_loss.backward()
        loss += part_loss.detach()
        n = min(start + chunk, len(targets)) - start
        for k in SURROGATE_STATS:
            sums[k] = sums.get(k, 0) + stats[k].detach() * n  # token-weighted, on the device
    backward_through_decoder(session, hidden, leaf)
    return loss, dict(sums)


def _token_logprobs(session: Session, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log π(target) at each of the positions `hidden` `[C, H]` (log-softmax in float32 at least)."""
    logits = session.lm.head(hidden)  # [C, V]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None])[:, 0]


def _base_hidden(session: Session, ids: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The base model's (adapter disabled) hidden states at the rollout positions, no grad: the KL's reference."""
    session.peft_model.eval()
    with torch.no_grad(), session.peft_model.disable_adapter(), session.accelerator.autocast():
        hidden = session.lm(ids, index)
    session.peft_model.train()
    return hidden


@torch.no_grad()
def old_logprobs(session: Session, batch: Batch) -> list[torch.Tensor]:
    """Each row's per-token log-probs under the current policy (no dropout): the old policy of several updates."""
    session.peft_model.eval()
    out = []
    for row in batch.rows:
        ids, index = collate([row], Role.LEARNER, session.pad_id, session.accelerator.device)
        with session.accelerator.autocast():
            out.append(_token_logprobs(session, session.lm(ids, index), torch.tensor(row.target, device=ids.device)).cpu())
    session.peft_model.train()
    return out


def rollout_record(rollouts: list[Rollout], batch: Batch) -> dict[str, Any]:
    """What a step's rollouts were: mean reward, share of all-fail and all-pass groups, lengths, hinted re-rolls."""
    n = max(len(rollouts), 1)
    return {"reward": sum(r.reward for r in rollouts) / n, "groups": batch.groups,
            "all_fail": batch.all_fail / batch.groups, "all_pass": batch.all_pass / batch.groups,
            "zero_variance": batch.all_fail + batch.all_pass,
            "mean_length": sum(len(r.token_ids) for r in rollouts) / n,
            "hinted": sum(r.hinted for r in rollouts)}
