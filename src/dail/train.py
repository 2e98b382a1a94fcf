"""`dail train`: LoRA fine-tuning of the learner on kept traces, in a loop we own (accelerate, peft).

What it does. Each training row is one kept trace joined with its problem (or, for the `sft-expert`
baseline, a problem's expert solution followed by EOS). The learner is the base model with a fresh
LoRA adapter; the privileged student and the negative reference are the SAME weights with the
adapter disabled (`peft_model.disable_adapter()`, no grad) and a different prompt -- no second copy
of the model (DESIGN.md, "The three roles"). Objectives come from `dail.objectives`.

Logits only at trace positions. A row of role R is `prompt_R + trace[:-1]`, right-padded; the hidden
state at column `len(prompt_R) - 1 + j` predicts trace token j. The decoder runs on the padded batch
(`[B, L, H]`) and the positions that predict trace tokens are gathered by one flat index (`[N, H]`, the
same order -- row-major, then token -- for every role, so the N rows line up across roles). Only then
does the output head run, and in chunks of positions: per chunk, the student's `[C, V]` logits from
a detached copy of its hidden states, the references' from theirs (no grad), the loss of the chunk and
its backward into that copy; then one backward through the decoder. So no `[N, V]` tensor ever exists:
a 150k vocabulary over thousands of trace positions would otherwise be most of the memory, three
times over with the references. With right padding no real position ever sees a pad (causal
attention), so no attention mask is passed and SDPA can take its causal fast path.

Normalisation. Every loss is a sum over counted tokens divided by the number of trace tokens of the
WHOLE optimizer step: all its micro-batches on all processes. Every process holds the same step plan
(rows, shuffled by a generator seeded with `seed + epoch`), so each one computes that count on the
host with no collective. accelerate's `backward` divides by `grad_accum` and DDP averages over
processes; the loss is multiplied back by both, so the update equals one full-batch mean whatever the
split (`batch 4 x accumulation 1 == batch 1 x accumulation 4`, tested).

Checkpoints and resume. Every `save_every` optimizer steps (and at the last) the main process writes
`out/checkpoints/step-N/` -- adapter (peft), optimizer, scheduler, `state.json` (step, epoch,
position in the epoch, tokens, elapsed, the plan it belongs to) -- into a temp dir renamed into
place. `resume` reloads the latest; the data order is a function of (seed, epoch) and dropout
randomness is reseeded from (seed, step, rank) at every step, so nothing else needs restoring and a
resumed run logs the same losses as an uninterrupted one. `log.jsonl` is cut back to the
checkpoint's step on resume (the lines of lost steps are rewritten, not duplicated).

Deliberately not here: the losses (`objectives`), prompt rendering (`prompts`), model resolution
(`models`), cached top-k references (only online references are implemented), sequence packing,
truncation of long rows, and FSDP/DeepSpeed specifics (DDP is the target: `accelerate launch`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import distributed as dist
from .config import ConfigError, TrainConfig, save_config
from .data import DataError, JsonlAppender, Problem, atomic_write_text, iter_jsonl, read_traces

__all__ = ["Row", "Session", "StepStats", "build_rows", "fit", "plan_steps", "run", "setup", "step_rows", "train_step"]

REFERENCE_OBJECTIVES = ("contrastive", "contrastive-target")  # need the privileged and negative forwards
DIAGNOSTICS = ("kl_privileged", "kl_negative", "margin", "nll")
# Logits are made and consumed a chunk of trace positions at a time: chunk = this // vocabulary size
# (2^25 elements: 128 MiB per float32 [C, V] tensor; 682 positions at V = 49k, 220 at V = 152k).
LOGIT_CHUNK_ELEMENTS = 2**25
_STEP_DIR = re.compile(r"step-(\d+)")


# --------------------------------------------------------------------------------------------------
# rows: traces joined with their problems, rendered to token ids


@dataclass
class Row:
    """One training row: each role's prompt ids and the target ids (trace, or solution + EOS)."""

    key: str  # "problem_id#sample", for messages
    prompts: dict[str, list[int]]  # role -> prompt token ids
    target: list[int]


def _roles(objective: str) -> tuple[str, ...]:
    return ("learner", "privileged", "negative") if objective in REFERENCE_OBJECTIVES else ("learner",)


def _load_problems(spec: str) -> dict[str, Problem]:
    from .datasets import resolve_problems

    return {p.id: p for p in resolve_problems(spec)}


def _missing_problem(traces_path: str, problem_id: str, problems_spec: str) -> DataError:
    # Only on the error path: find the line of the first trace naming the id, for the message.
    line = next((n for n, obj in iter_jsonl(traces_path) if obj.get("problem_id") == problem_id), None)
    return DataError(traces_path, line, "problem_id",
                     f"problem {problem_id!r} is not in the problems file {problems_spec!r}")


def build_rows(cfg: TrainConfig, tokenizer) -> list[Row]:
    """The training rows of a config: kept traces x problems (or problems' solutions for sft-expert)."""
    from .prompts import render
    from .waypoints import waypoints_for

    problems = _load_problems(cfg.problems)
    roles = _roles(cfg.objective)
    cache: dict[str, dict[str, list[int]]] = {}

    def prompts_of(p: Problem) -> dict[str, list[int]]:
        if p.id not in cache:
            try:
                cache[p.id] = {r: render(tokenizer, r, p, cfg.prompts,
                                         waypoints=waypoints_for(p) if r == "negative" else None) for r in roles}
            except ValueError as e:  # a problem without the solution a role needs
                raise DataError(cfg.problems, None, "solution", str(e)) from None
        return cache[p.id]

    if cfg.objective == "sft-expert":
        eos = tokenizer.eos_token_id
        rows = []
        for p in problems.values():
            if not p.solution:
                raise DataError(cfg.problems, None, "solution",
                                f"problem {p.id!r} has no solution: sft-expert trains on it")
            target = tokenizer(p.solution, add_special_tokens=False)["input_ids"] + [eos]
            rows.append(Row(f"{p.id}#solution", prompts_of(p), target))
        if not rows:
            raise DataError(cfg.problems, None, None, "no problems to train on")
        return rows

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
            rows.append(Row(f"{t.problem_id}#{t.sample}", prompts_of(problems[t.problem_id]), list(t.token_ids)))
    if not rows:
        raise DataError(cfg.traces, None, "token_ids", "every kept trace is empty")
    return rows


# --------------------------------------------------------------------------------------------------
# the step plan: which rows each optimizer step takes


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
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed + epoch))
    return order[position * batch_size:(position + 1) * batch_size].tolist()


def _split(rows: list, parts: int) -> list[list]:
    """`rows` in `parts` contiguous chunks, sizes differing by at most one, the larger ones last."""
    base, extra = divmod(len(rows), parts)
    sizes = [base + (k >= parts - extra) for k in range(parts)]
    bounds = [sum(sizes[:k]) for k in range(parts + 1)]
    return [rows[bounds[k]:bounds[k + 1]] for k in range(parts)]


def _step_seed(seed: int, step: int, rank: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{step}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


# --------------------------------------------------------------------------------------------------
# the model: hidden states at trace positions only (the head runs in chunks, in _micro_batch)


class _TraceHidden(torch.nn.Module):
    """Final hidden states at gathered positions: decoder on `[B, L]`, then `[N, H]` by one flat index."""

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model  # the decoder and head are reached through it, never registered twice

    def forward(self, input_ids: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # No attention mask: rows are right-padded, so causal attention alone keeps pads out of
        # every position we gather.
        decoder = self.peft_model.get_base_model().get_decoder()
        hidden = decoder(input_ids=input_ids, use_cache=False).last_hidden_state  # [B, L, H]
        return hidden.flatten(0, 1).index_select(0, index)  # [N, H]

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits `[C, V]` of hidden states `[C, H]` (the output embedding)."""
        return self.peft_model.get_base_model().get_output_embeddings()(hidden)


def _collate(rows: list[Row], role: str, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `prompt + target[:-1]` ids `[B, L]` and the flat index `[N]` of the positions predicting targets."""
    seqs = [r.prompts[role] + r.target[:-1] for r in rows]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs])  # [B, L]
    index = [b * width + len(r.prompts[role]) - 1 + j for b, r in enumerate(rows) for j in range(len(r.target))]
    return ids.to(device, non_blocking=True), torch.tensor(index).to(device, non_blocking=True)


# --------------------------------------------------------------------------------------------------
# set-up: accelerator, model + adapter, optimizer, schedule


@dataclass
class Session:
    """What one optimizer step needs: the accelerator, the model in its three views, optimizer, schedule."""

    cfg: TrainConfig
    accelerator: Any
    peft_model: Any  # the learner; adapter disabled = the frozen reference
    tokenizer: Any
    lm: _TraceHidden  # unwrapped: the reference forwards and the head go straight to it
    wrapped: torch.nn.Module  # lm as accelerate prepared it (DDP under `accelerate launch`)
    optimizer: Any
    scheduler: torch.optim.lr_scheduler.LambdaLR
    pad_id: int
    vocab_size: int
    steps_per_epoch: int
    total_steps: int


def _lr_lambda(schedule: str, warmup: int, total: int):
    def factor(step: int) -> float:  # step = optimizer steps already taken
        if step < warmup:  # linear warm-up that never spends a step at lr = 0
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "linear":
            return 1.0 - progress
        return 1.0

    return factor


def setup(cfg: TrainConfig, n_rows: int) -> Session:
    """Accelerator, step plan for `n_rows` rows, base model with a fresh LoRA adapter, AdamW over it, LR schedule."""
    from accelerate import Accelerator

    from .models import attach_lora, load

    on_cuda = cfg.resolved_device().startswith("cuda")
    bf16 = on_cuda and torch.cuda.is_bf16_supported() and cfg.dtype in ("auto", "bfloat16", "float32")
    # cpu=True on a CPU run: without it accelerate leaves a launched CPU process alone (world size 1).
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision="bf16" if bf16 else "no",
                              cpu=not on_cuda)
    dist.check_launch(accelerator.num_processes)
    per_epoch, total_steps = plan_steps(n_rows, cfg, accelerator.num_processes)
    model, tokenizer = load(cfg.model, dtype=cfg.dtype, device=accelerator.device)
    model.config.use_cache = False
    torch.manual_seed(cfg.seed)  # the adapter's initialisation
    lora = cfg.lora
    peft_model = attach_lora(model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                             target_modules=lora.target_modules)
    if cfg.gradient_checkpointing:
        # Non-reentrant: works with frozen inputs (no enable_input_require_grads) and with DDP.
        peft_model.get_base_model().activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # The schedule counts global optimizer steps; accelerate's prepared scheduler would step once per
    # process, so it stays unprepared.
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.schedule, warmup, total_steps))
    head = peft_model.get_base_model().get_output_embeddings()
    if any(p.requires_grad for p in head.parameters()):
        # The head runs outside the prepared module, in chunks (see _micro_batch): DDP would not sync it.
        raise ConfigError("lora.target_modules: adapting the output head is not supported")
    lm = _TraceHidden(peft_model)
    wrapped, optimizer = accelerator.prepare(lm, optimizer)
    return Session(cfg, accelerator, peft_model, tokenizer, lm, wrapped, optimizer, scheduler, tokenizer.pad_token_id,
                   head.weight.shape[0], per_epoch, total_steps)


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


def _micro_batch(s: Session, rows: list[Row], num_tokens: int, diagnose: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Backward of a micro-batch's loss normalised by the step's global token count; the loss, diagnostic sums.

    The head and the loss run in chunks of trace positions on a detached copy of the student's hidden
    states, each chunk's backward filling that copy's gradient; then ONE backward runs through the
    decoder. So at most a chunk of `[C, V]` logits (of each role) is alive at a time, never `[N, V]`:
    the references keep only their hidden states `[N, H]`.
    """
    from .objectives import contrastive_diagnostics, contrastive_loss, contrastive_target_loss, nll_loss

    cfg, acc, dev = s.cfg, s.accelerator, s.accelerator.device
    targets = torch.tensor([t for r in rows for t in r.target]).to(dev, non_blocking=True)  # [N]
    mask = torch.ones_like(targets, dtype=torch.bool)  # [N]: every gathered position counts
    refs: list[torch.Tensor] = []
    if cfg.objective in REFERENCE_OBJECTIVES:
        s.peft_model.eval()  # references without dropout, as at inference
        with torch.no_grad(), s.peft_model.disable_adapter(), acc.autocast():
            refs = [s.lm(*_collate(rows, role, s.pad_id, dev)) for role in ("privileged", "negative")]  # [N, H] each
        s.peft_model.train()
    hidden = s.wrapped(*_collate(rows, "learner", s.pad_id, dev))  # [N, H], graph through the decoder
    leaf = hidden.detach().requires_grad_()  # [N, H]
    chunk = max(1, LOGIT_CHUNK_ELEMENTS // s.vocab_size)
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    diag: Counter = Counter()
    for start in range(0, len(targets), chunk):
        part = slice(start, start + chunk)
        with acc.autocast():  # outside the prepared module: its autocast does not reach here
            student = s.lm.head(leaf[part])  # [C, V]
            with torch.no_grad():
                ref_logits = [s.lm.head(h[part]) for h in refs]  # [C, V] each
            if cfg.objective == "contrastive":
                part_loss = contrastive_loss(student, *ref_logits, mask[part], cfg.gamma, num_tokens=num_tokens)
            elif cfg.objective == "contrastive-target":
                part_loss = contrastive_target_loss(student, *ref_logits, mask[part], cfg.alpha, cfg.beta,
                                                    num_tokens=num_tokens)
            else:  # nll, sft-expert
                part_loss = nll_loss(student, targets[part], mask[part], num_tokens=num_tokens)
        part_loss.backward()  # into leaf.grad only: the head is frozen (checked in setup)
        loss += part_loss.detach()
        if diagnose and refs:
            d = contrastive_diagnostics(student.detach(), *ref_logits, mask[part], targets[part])  # sync point (floats)
            diag.update({k: d[k] * d["tokens"] for k in DIAGNOSTICS})
        del student, ref_logits, part_loss  # before the next chunk allocates its own
    # The decoder's backward: d(hidden . g)/d(hidden) = g. accelerate's backward divides by
    # grad_accum and DDP averages over processes; undo both, the loss is already a share of the step's mean.
    acc.backward((hidden * leaf.grad).sum() * (cfg.grad_accum * acc.num_processes))
    return loss, dict(diag)


def train_step(s: Session, step: int, rows: list[Row], *, diagnose: bool = False) -> StepStats:
    """One optimizer step over `rows` (the step's rows of ALL processes; each takes its share)."""
    acc, cfg = s.accelerator, s.cfg
    torch.manual_seed(_step_seed(cfg.seed, step, acc.process_index))  # dropout: same draws after a resume
    num_tokens = sum(len(r.target) for r in rows)  # global count, known to every process: no collective
    local = rows[acc.process_index::acc.num_processes]
    assert local, "the step plan gives every process at least one row"
    loss = torch.zeros((), dtype=torch.float64, device=acc.device)  # float64: a float64 model's losses log exactly
    diag: Counter = Counter()
    # ----------------------------------------------------------------------------------------------
    # Sync points: none of its own. Inside, each loss call's boolean-mask gather (objectives) and,
    # on log steps only, the diagnostics; clipping, AdamW and the schedule stay on the device.
    for micro in _split(local, cfg.grad_accum):  # the last micro-batch is never empty
        with acc.accumulate(s.wrapped):  # DDP: no gradient all-reduce until the last micro-batch
            if micro:
                micro_loss, micro_diag = _micro_batch(s, micro, num_tokens, diagnose)  # forwards and backward
                loss += micro_loss
                diag.update(micro_diag)
    params = [p for group in s.optimizer.param_groups for p in group["params"]]
    if cfg.max_grad_norm is not None:
        grad_norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    lr = s.scheduler.get_last_lr()[0]  # the rate this step uses
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    # ----------------------------------------------------------------------------------------------
    return StepStats(loss, grad_norm, num_tokens, lr, dict(diag))


def _log_record(s: Session, stats: StepStats, step: int, per_epoch: int, elapsed: float) -> dict[str, Any]:
    """The log line of a step: losses summed over processes, diagnostics as token-weighted means."""
    names = [k for k in DIAGNOSTICS if k in stats.diag]
    acc = s.accelerator
    diag = torch.tensor([stats.diag[k] for k in names], dtype=torch.float64, device=acc.device)
    local = torch.cat([stats.loss.view(1), diag])
    total = acc.reduce(local, "sum") if acc.num_processes > 1 else local  # collective: every process calls it
    # The grad norm is the same on every process (gradients were all-reduced): not summed.
    loss, grad_norm, *sums = torch.cat([total[:1], stats.grad_norm.double().view(1), total[1:]]).tolist()  # sync point
    record = {"step": step, "epoch": round(step / per_epoch, 4), "loss": loss, "lr": stats.lr,
              "tokens": stats.tokens, "grad_norm": grad_norm}
    if names:
        record.update({k: v / stats.tokens for k, v in zip(names, sums)})
    else:  # nll, sft-expert: the loss IS the mean NLL of the targets
        record["nll"] = loss
    record["elapsed"] = round(elapsed, 3)
    return record


# --------------------------------------------------------------------------------------------------
# checkpoints


def _checkpoints(out: Path) -> dict[int, Path]:
    root = out / "checkpoints"
    if not root.is_dir():
        return {}
    return {int(m.group(1)): p for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))}


def _save_checkpoint(s: Session, out: Path, step: int, state: dict[str, Any]) -> None:
    """`out/checkpoints/step-N/`: written in a temp dir, renamed into place (main process only)."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step}."))
    try:
        s.peft_model.save_pretrained(tmp)  # adapter_config.json + adapter_model.safetensors
        torch.save(s.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(s.scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        final = root / f"step-{step}"
        if final.exists():  # written before by a run that was resumed from an earlier step
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_checkpoint(s: Session, path: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """Restore adapter, optimizer and schedule from a checkpoint of the same plan; its state.json."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    differ = {k: (state["plan"].get(k), v) for k, v in plan.items() if state["plan"].get(k) != v}
    if differ:
        what = ", ".join(f"{k} {a!r} there, {b!r} now" for k, (a, b) in differ.items())
        raise ConfigError(f"cannot resume from {path}: it belongs to another training plan ({what})")
    weights = load_file(path / "adapter_model.safetensors", device=str(s.accelerator.device))
    result = set_peft_model_state_dict(s.peft_model, weights)
    if result.unexpected_keys:
        raise ConfigError(f"cannot resume from {path}: unexpected adapter tensors {result.unexpected_keys[:3]}")
    s.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    s.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    return state


def _save_adapter(peft_model, out: Path) -> None:
    """The final adapter in `out/`, each file renamed into place, adapter_config.json (the 'done' mark) last."""
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".adapter."))
    try:
        peft_model.save_pretrained(tmp)
        for f in sorted(tmp.iterdir(), key=lambda p: p.name == "adapter_config.json"):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _truncate_log(path: Path, last_step: int) -> None:
    """Keep the log lines of steps up to `last_step`: later ones belong to steps about to be redone."""
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.endswith("\n") and json.loads(line).get("step", 0) <= last_step]
    atomic_write_text(path, "".join(keep))


# --------------------------------------------------------------------------------------------------
# the stage


def _prepare_out(cfg: TrainConfig, out: Path) -> Path | None:
    """Check `out` against `resume`; the checkpoint to resume from, if any."""
    ckpts = _checkpoints(out)
    if not cfg.resume:
        held = [n for n in ("adapter_config.json", "log.jsonl") if (out / n).exists()]
        held += ["checkpoints/"] if ckpts else []
        if held:
            raise ConfigError(f"out: {out} already holds a training run ({', '.join(held)}); "
                              "resume it (--resume) or choose another directory")
    return ckpts[max(ckpts)] if ckpts else None


def fit(cfg: TrainConfig) -> tuple[Any, dict[str, Any]]:
    """Train as configured; the trained peft model (eval mode) and the run's summary."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .models import load_tokenizer

    started = time.perf_counter()
    out = Path(cfg.out)
    resume_from = _prepare_out(cfg, out)
    rows = build_rows(cfg, load_tokenizer(cfg.model))  # data errors before the model loads
    s = setup(cfg, len(rows))
    per_epoch, total = s.steps_per_epoch, s.total_steps
    acc, main = s.accelerator, s.accelerator.is_main_process
    acc.wait_for_everyone()  # every process has looked at out/ before the main one writes to it
    plan = {"objective": cfg.objective, "rows": len(rows), "batch_size": cfg.batch_size, "seed": cfg.seed,
            "total_steps": total}
    start, tokens_seen, elapsed_before = 0, 0, 0.0
    if resume_from is not None:
        state = _load_checkpoint(s, resume_from, plan)
        start, tokens_seen, elapsed_before = state["step"], state["tokens"], state["elapsed"]
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in (out / "checkpoints").glob(".step-*"):  # temp dirs of a save that was killed
            shutil.rmtree(stale, ignore_errors=True)
        _truncate_log(out / "log.jsonl", start)
        save_config(cfg, out / "train_config.toml")
    acc.wait_for_everyone()

    log = JsonlAppender(out / "log.jsonl") if main else None
    progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                        TimeRemainingColumn(), console=Console(stderr=True), disable=not main)
    task = progress.add_task("train", total=total, completed=start, loss="-")
    last: dict[str, Any] = {}
    t0 = time.perf_counter()
    with progress:
        for step in range(start, total):
            batch = [rows[i] for i in step_rows(len(rows), cfg.batch_size, cfg.seed, step, per_epoch)]
            log_now = (step + 1) % cfg.log_every == 0 or step + 1 == total
            stats = train_step(s, step, batch, diagnose=log_now)
            tokens_seen += stats.tokens
            elapsed = elapsed_before + time.perf_counter() - t0
            if log_now:
                last = _log_record(s, stats, step + 1, per_epoch, elapsed)  # every process: a collective
                if main:
                    log.write(last)
                progress.update(task, loss=f"{last['loss']:.4f}")
            progress.advance(task)
            if (step + 1) % cfg.save_every == 0 or step + 1 == total:
                if main:
                    epoch, position = divmod(step + 1, per_epoch)
                    ckpt_state = {"step": step + 1, "epoch": epoch, "position": position * cfg.batch_size,
                                  "tokens": tokens_seen, "elapsed": elapsed, "plan": plan}
                    _save_checkpoint(s, out, step + 1, ckpt_state)
                acc.wait_for_everyone()
    if main:
        log.close()
        _save_adapter(s.peft_model, out)
    acc.wait_for_everyone()
    s.peft_model.eval()
    summary = {"out": str(out), "objective": cfg.objective, "rows": len(rows), "steps": total, "start_step": start,
               "steps_per_epoch": per_epoch, "tokens": tokens_seen, "loss": last.get("loss"),
               "trainable_parameters": sum(p.numel() for p in s.peft_model.parameters() if p.requires_grad),
               "seconds": round(time.perf_counter() - started, 2)}
    return s.peft_model, summary


def run(cfg: TrainConfig) -> dict[str, Any]:
    """The `dail train` stage: train, write `out/` (adapter, log.jsonl, train_config.toml); the summary."""
    return fit(cfg)[1]
