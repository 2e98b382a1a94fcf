"""Training rows: what `dail train` feeds the model, which rows each step takes, and as what tensors.

A `TrainRow` is one kept trace joined with its problem -- or, for an objective that trains on the
expert solution (`sft-expert`), a problem's solution followed by EOS -- rendered to token ids: each
role's prompt and the target ids. The roles are the learner's alone, or all three when the objective
needs the two reference forwards (`Objective.needs_references`).

The step plan. Each epoch is a shuffle of the rows by a generator seeded with `seed + epoch`, cut
in batches of `batch_size`; optimizer step N takes batch N of that order. Every process computes the
same plan, takes every `num_processes`-th row of the step and cuts its share into `grad_accum`
contiguous micro-batches (`micro_batches`). `collate` turns a micro-batch into one role's
right-padded ids and the flat index of the positions that predict target tokens.

Deliberately not here: prompt rendering (`prompts`), the model, the losses and the loop (`train`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch

from .config import ConfigError, TrainConfig
from .data import DataError, Problem, iter_jsonl, read_traces
from .objectives import OBJECTIVES
from .roles import Role
from .seeding import torch_generator

__all__ = ["REFERENCE_ROLES", "TrainRow", "build_rows", "check_token_ids", "collate", "micro_batches", "plan_steps",
           "step_rows"]

REFERENCE_ROLES = (Role.PRIVILEGED, Role.NEGATIVE)  # the frozen references' prompts, in the order the losses take them
_PromptsOf = Callable[[Problem], dict[str, list[int]]]  # a problem -> its prompt ids per role


@dataclass
class TrainRow:
    """One training row: each role's prompt ids and the target ids (trace, or solution + EOS)."""

    key: str  # "problem_id#sample", for messages
    prompts: dict[str, list[int]]  # role -> prompt token ids
    target: list[int]


# --------------------------------------------------------------------------------------------------
# rows: traces (or solutions) joined with their problems, rendered to token ids


def build_rows(cfg: TrainConfig, tokenizer) -> list[TrainRow]:
    """The training rows of a config: kept traces x problems, or the problems' solutions."""
    objective = OBJECTIVES[cfg.objective]
    problems = _load_problems(cfg.problems)
    roles = (Role.LEARNER, *REFERENCE_ROLES) if objective.needs_references else (Role.LEARNER,)
    prompts = _prompt_cache(cfg, tokenizer, roles)
    if objective.target == "solution":
        return _solution_rows(cfg, tokenizer, problems, prompts)
    return _trace_rows(cfg, problems, prompts)


def _prompt_cache(cfg: TrainConfig, tokenizer, roles: tuple[str, ...]) -> _PromptsOf:
    """A problem's prompt ids per role, rendered once however many rows share the problem."""
    from .prompts import render
    from .waypoints import waypoints_for

    cache: dict[str, dict[str, list[int]]] = {}

    def prompts(p: Problem) -> dict[str, list[int]]:
        if p.id not in cache:
            try:
                cache[p.id] = {r: render(tokenizer, r, p, cfg.prompts,
                                         waypoints=waypoints_for(p) if r is Role.NEGATIVE else None) for r in roles}
            except ValueError as e:  # a problem without the solution a role needs
                raise DataError(cfg.problems, None, "solution", str(e)) from None
        return cache[p.id]

    return prompts


def _solution_rows(cfg: TrainConfig, tokenizer, problems: dict[str, Problem], prompts: _PromptsOf) -> list[TrainRow]:
    """One row per problem: its expert solution + EOS as the answer to the learner prompt."""
    rows = []
    for p in problems.values():
        if not p.solution:
            raise DataError(cfg.problems, None, "solution",
                            f"problem {p.id!r} has no solution: {cfg.objective} trains on it")
        target = tokenizer(p.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(TrainRow(f"{p.id}#solution", prompts(p), target))
    if not rows:
        raise DataError(cfg.problems, None, None, "no problems to train on")
    return rows


def _trace_rows(cfg: TrainConfig, problems: dict[str, Problem], prompts: _PromptsOf) -> list[TrainRow]:
    """One row per kept, non-empty trace (every trace when `kept_only` is off)."""
    if cfg.traces is None:
        raise ConfigError(f"traces: required for objective {cfg.objective!r} (only sft-expert trains without traces)")
    traces = read_traces(cfg.traces, kept_only=False)
    kept = [t for t in traces if t.kept or not cfg.kept_only]
    if not kept:
        why = Counter(t.reject_reason or "rejected" for t in traces)
        detail = ", ".join(f"{n} {r}" for r, n in why.most_common()) or "the file is empty"
        raise DataError(cfg.traces, None, None, f"no kept traces to train on ({len(traces)} rows: {detail})")
    rows = []
    for t in kept:
        if t.problem_id not in problems:
            raise _missing_problem(cfg.traces, t.problem_id, cfg.problems)
        if t.token_ids:  # an empty trace has nothing to predict
            rows.append(TrainRow(f"{t.problem_id}#{t.sample}", prompts(problems[t.problem_id]), list(t.token_ids)))
    if not rows:
        raise DataError(cfg.traces, None, "token_ids", "every kept trace is empty")
    return rows


def check_token_ids(rows: list[TrainRow], vocab_size: int, traces_path: str, model: str) -> None:
    """DataError at the first trace line holding a token id outside [0, vocab_size): traces of another tokenizer."""
    if all(0 <= t < vocab_size for r in rows for t in r.target):
        return
    # Only on the error path: find the line, for the message.
    for line, obj in iter_jsonl(traces_path):
        bad = [t for t in obj.get("token_ids") or [] if not (isinstance(t, int) and 0 <= t < vocab_size)]
        if bad:
            raise DataError(traces_path, line, "token_ids",
                            f"token id {bad[0]} is outside the vocabulary of model {model!r} ({vocab_size} tokens): "
                            "traces made with another tokenizer?")
    raise DataError(traces_path, None, "token_ids", f"a token id is outside the vocabulary of model {model!r} "
                                                    f"({vocab_size} tokens)")


def _load_problems(spec: str) -> dict[str, Problem]:
    from .datasets import resolve_problems

    return {p.id: p for p in resolve_problems(spec)}


def _missing_problem(traces_path: str, problem_id: str, problems_spec: str) -> DataError:
    # Only on the error path: find the line of the first trace naming the id, for the message.
    line = next((n for n, obj in iter_jsonl(traces_path) if obj.get("problem_id") == problem_id), None)
    return DataError(traces_path, line, "problem_id",
                     f"problem {problem_id!r} is not in the problems file {problems_spec!r}")


# --------------------------------------------------------------------------------------------------
# the step plan: which rows each optimizer step, process and micro-batch takes


def plan_steps(n_rows: int, cfg: TrainConfig, num_processes: int = 1) -> tuple[int, int]:
    """(steps per epoch, total optimizer steps) for `n_rows` rows."""
    per_epoch = math.ceil(n_rows / cfg.batch_size)
    # A last step with fewer rows than processes would leave a process without rows, and DDP needs
    # every process in the gradient all-reduce: drop it (never happens with one process).
    if 0 < n_rows % cfg.batch_size < num_processes:
        per_epoch -= 1
    if per_epoch == 0:
        raise ConfigError(f"{n_rows} training rows cannot feed {num_processes} processes")
    total = cfg.max_steps or math.ceil(cfg.epochs * per_epoch)
    return per_epoch, total


def step_rows(n_rows: int, batch_size: int, seed: int, step: int, per_epoch: int) -> list[int]:
    """Row indices of optimizer step `step` (0-based): a seeded shuffle per epoch, cut in batches."""
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(n_rows, generator=torch_generator(seed + epoch))
    return order[position * batch_size:(position + 1) * batch_size].tolist()


def micro_batches(rows: list, parts: int) -> list[list]:
    """`rows` in `parts` contiguous micro-batches, sizes differing by at most one, the larger ones last."""
    base, extra = divmod(len(rows), parts)
    sizes = [base + (k >= parts - extra) for k in range(parts)]
    bounds = [sum(sizes[:k]) for k in range(parts + 1)]
    return [rows[bounds[k]:bounds[k + 1]] for k in range(parts)]


# --------------------------------------------------------------------------------------------------
# collation


def collate(rows: list[TrainRow], role: str, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `prompt + target[:-1]` ids `[B, L]` and the flat index `[N]` of the positions predicting targets.

    The hidden state at column `len(prompt) - 1 + j` predicts target token j; the index runs row-major,
    then token, so the N positions line up across roles whatever their prompts' lengths.
    """
    seqs = [r.prompts[role] + r.target[:-1] for r in rows]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs])  # [B, L]
    index = [b * width + len(r.prompts[role]) - 1 + j for b, r in enumerate(rows) for j in range(len(r.target))]
    return ids.to(device, non_blocking=True), torch.tensor(index).to(device, non_blocking=True)
