"""`dail train`: LoRA fine-tuning of the learner on training rows, in a loop we own (accelerate, peft).

The recipe (`fit`): build the rows (`dail.rows`), set up a `Session` -- accelerator, the base model
with a fresh LoRA adapter, AdamW, the LR schedule -- restore the latest checkpoint when resuming
(`dail.checkpoint`), run `train_step` over the step plan, logging every `log_every` and checkpointing
every `save_every` steps, and save the adapter with its provenance (`dail.provenance`: the base's
weights fingerprint, the tokenizer, the prompts). Traces whose provenance names another model or
tokenizer, or holding a token id past the model's vocabulary, are refused before the first step.
The learner is the base model with the adapter; the privileged student and the negative reference
are the SAME weights with the adapter disabled (`peft_model.disable_adapter()`, no grad) and a
different prompt -- no second copy of the model (docs/method.md, "The three roles"). The loss is the
configured entry of `dail.objectives.OBJECTIVES`.

Logits only at trace positions. The decoder runs on a role's padded batch (`[B, L, H]`, see
`rows.collate`) and the positions that predict target tokens are gathered by one flat index (`[N, H]`,
the same order for every role, so the N rows line up across roles). Only then does the output head
run, and in chunks of positions: per chunk, the student's `[C, V]` logits from a detached copy of its
hidden states, the references' from theirs (no grad), the loss of the chunk and its backward into
that copy; then one backward through the decoder. So no `[N, V]` tensor ever exists: a 150k
vocabulary over thousands of trace positions would otherwise be most of the memory, three times over
with the references. With right padding no real position ever sees a pad (causal attention), so no
attention mask is passed and SDPA can take its causal fast path.

Normalisation. Every loss is a sum over counted tokens divided by the number of trace tokens of the
WHOLE optimizer step: all its micro-batches on all processes. Every process holds the same step plan
(`rows.step_rows`), so each one computes that count on the host with no collective. accelerate's
`backward` divides by `grad_accum` and DDP averages over processes; the loss is multiplied back by
both, so the update equals one full-batch mean whatever the split (`batch 4 x accumulation 1 ==
batch 1 x accumulation 4`, tested). Dropout is reseeded from (seed, step, rank) at every step, so a
resumed run logs the same losses as an uninterrupted one.

Deliberately not here: rows and the step plan (`rows`), checkpoint files (`checkpoint`), the losses
(`objectives`), prompt rendering (`prompts`), model resolution (`models`), cached top-k references
(only online references are implemented), sequence packing, truncation of long rows, and
FSDP/DeepSpeed specifics (DDP is the target: `accelerate launch`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint
from . import distributed as dist
from . import provenance
from .config import ConfigError, TrainConfig, check_same_settings, save_config
from .data import JsonlAppender
from .distributed import Progress
from .objectives import OBJECTIVES, Objective, contrastive_diagnostics
from .roles import Role
from .rows import REFERENCE_ROLES, TrainRow, build_rows, check_token_ids, collate, micro_batches, plan_steps, step_rows
from .rundir import AdapterDir, provenance_path

__all__ = ["Session", "StepStats", "TraceHidden", "fit", "lr_lambda", "run", "setup", "train_step"]

DIAGNOSTICS = ("kl_privileged", "kl_negative", "margin", "nll")
# Logits are made and consumed a chunk of trace positions at a time: chunk = this // vocabulary size
# (2^25 elements: 128 MiB per float32 [C, V] tensor; 682 positions at V = 49k, 220 at V = 152k).
LOGIT_CHUNK_ELEMENTS = 2**25


# --------------------------------------------------------------------------------------------------
# the model: hidden states at trace positions only (the head runs in chunks, in _chunked_loss)


class TraceHidden(torch.nn.Module):
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


# --------------------------------------------------------------------------------------------------
# set-up: accelerator, model + adapter, optimizer, schedule


@dataclass
class Session:
    """What one optimizer step needs: the accelerator, the model in its three views, optimizer, schedule."""

    cfg: TrainConfig
    accelerator: Any
    peft_model: Any  # the learner; adapter disabled = the frozen reference
    tokenizer: Any
    lm: TraceHidden  # unwrapped: the reference forwards and the head go straight to it
    wrapped: torch.nn.Module  # lm as accelerate prepared it (DDP under `accelerate launch`)
    optimizer: Any
    scheduler: torch.optim.lr_scheduler.LambdaLR
    pad_id: int
    vocab_size: int
    steps_per_epoch: int
    total_steps: int
    provenance: dict[str, Any] = field(default_factory=dict)  # the base and tokenizer (`dail.provenance.record`)

    @property
    def objective(self) -> Objective:
        """The configured objective's registry entry: its loss, its inputs, its hyperparameters."""
        return OBJECTIVES[self.cfg.objective]


def lr_lambda(schedule: str, warmup: int, total: int):
    """The LR factor after `step` optimizer steps: linear warm-up, then constant, linear or cosine decay."""

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

    on_cuda = cfg.resolved_device().startswith("cuda")
    bf16 = on_cuda and torch.cuda.is_bf16_supported() and cfg.dtype in ("auto", "bfloat16", "float32")
    # cpu=True on a CPU run: without it accelerate leaves a launched CPU process alone (world size 1).
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision="bf16" if bf16 else "no",
                              cpu=not on_cuda)
    dist.check_launch(accelerator.num_processes)
    per_epoch, total_steps = plan_steps(n_rows, cfg, accelerator.num_processes)
    peft_model, tokenizer, made_by = _learner(cfg, accelerator.device)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # The schedule counts global optimizer steps; accelerate's prepared scheduler would step once per
    # process, so it stays unprepared.
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.schedule, warmup, total_steps))
    lm = TraceHidden(peft_model)
    wrapped, optimizer = accelerator.prepare(lm, optimizer)
    vocab_size = peft_model.get_base_model().get_output_embeddings().weight.shape[0]
    return Session(cfg, accelerator, peft_model, tokenizer, lm, wrapped, optimizer, scheduler, tokenizer.pad_token_id,
                   vocab_size, per_epoch, total_steps, made_by)


def _learner(cfg: TrainConfig, device) -> tuple[Any, Any, dict[str, Any]]:
    """The base model with a fresh LoRA adapter (seeded by `cfg.seed`), in train mode; the tokenizer; the base's
    provenance record (taken before the adapter renames its parameters)."""
    from . import provenance
    from .models import attach_lora, load

    model, tokenizer = load(cfg.model, dtype=cfg.dtype, device=device)
    made_by = provenance.record(cfg.model, model, tokenizer, cfg.prompts)
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
    head = peft_model.get_base_model().get_output_embeddings()
    if any(p.requires_grad for p in head.parameters()):
        # The head runs outside the prepared module, in chunks (see _chunked_loss): DDP would not sync it.
        raise ConfigError("lora.target_modules: adapting the output head is not supported")
    return peft_model, tokenizer, made_by


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


def _step_seed(seed: int, step: int, rank: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{step}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def train_step(session: Session, step: int, rows: list[TrainRow], *, diagnose: bool = False) -> StepStats:
    """One optimizer step over `rows` (the step's rows of ALL processes; each takes its share)."""
    accelerator, cfg = session.accelerator, session.cfg
    torch.manual_seed(_step_seed(cfg.seed, step, accelerator.process_index))  # dropout: same draws after a resume
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
    params = [p for group in session.optimizer.param_groups for p in group["params"]]
    if cfg.max_grad_norm is not None:
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    lr = session.scheduler.get_last_lr()[0]  # the rate this step uses
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    # ----------------------------------------------------------------------------------------------
    return StepStats(loss, grad_norm, num_tokens, lr, dict(diag))


def _micro_batch(session: Session, rows: list[TrainRow], num_tokens: int,
                 diagnose: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Backward of a micro-batch's loss normalised by the step's global token count; the loss, diagnostic sums.

    The head and the loss run in chunks of trace positions on a detached copy of the student's hidden
    states (`_chunked_loss`), each chunk's backward filling that copy's gradient; then ONE backward
    runs through the decoder. The references keep only their hidden states `[N, H]`.
    """
    accelerator, device = session.accelerator, session.accelerator.device
    targets = torch.tensor([t for r in rows for t in r.target]).to(device, non_blocking=True)  # [N]
    refs = _reference_hidden(session, rows) if session.objective.needs_references else []
    hidden = session.wrapped(*collate(rows, Role.LEARNER, session.pad_id, device))  # [N, H], graph through the decoder
    leaf = hidden.detach().requires_grad_()  # [N, H]
    loss, diag = _chunked_loss(session, leaf, refs, targets, num_tokens, diagnose)
    # The decoder's backward: d(hidden . g)/d(hidden) = g. accelerate's backward divides by
    # grad_accum and DDP averages over processes; undo both, the loss is already a share of the step's mean.
    accelerator.backward((hidden * leaf.grad).sum() * (session.cfg.grad_accum * accelerator.num_processes))
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


def _log_record(session: Session, stats: StepStats, step: int, elapsed: float) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------------
# the stage


# TrainConfig fields a resumed run may change: they move no number of the run (accumulation is
# exact, see tests/test_train.py), or say only how to run it.
RESUME_MAY_DIFFER = ("resume", "device", "grad_accum", "gradient_checkpointing", "save_every", "log_every")


def fit(cfg: TrainConfig, progress: Progress | None = None) -> tuple[Any, dict[str, Any]]:
    """Train as configured; the trained peft model (eval mode) and the run's summary.

    `progress(done, total, loss=...)` hears every optimizer step (the CLI draws it).
    """
    from .models import load_tokenizer

    started = time.perf_counter()
    out = Path(cfg.out)
    resume_from = checkpoint.prepare_out(out, cfg.resume)
    if resume_from is not None:  # a resume goes on under the settings it started with, or not at all
        check_same_settings(AdapterDir(out).config, cfg, ignore=RESUME_MAY_DIFFER, output=out,
                            fresh="train into another --out, or delete it to start over")
    rows = build_rows(cfg, load_tokenizer(cfg.model))  # data errors before the model loads
    session = setup(cfg, len(rows))
    _check_traces(cfg, rows, session)  # before any step: traces of another model would train silently
    plan = {"objective": cfg.objective, "rows": len(rows), "batch_size": cfg.batch_size, "seed": cfg.seed,
            "total_steps": session.total_steps}
    state = _resume(session, out, resume_from, plan)
    last, tokens = _steps(session, rows, out, plan, state, progress)
    if session.accelerator.is_main_process:
        provenance.write(provenance_path(out), session.provenance)  # before the adapter's 'done' mark
        checkpoint.save_adapter(session.peft_model, out)
    session.accelerator.wait_for_everyone()
    session.peft_model.eval()
    summary = {"out": str(out), "objective": cfg.objective, "rows": len(rows), "steps": session.total_steps,
               "start_step": state["step"], "steps_per_epoch": session.steps_per_epoch, "tokens": tokens,
               "loss": last.get("loss"),
               "trainable_parameters": sum(p.numel() for p in session.peft_model.parameters() if p.requires_grad),
               "seconds": round(time.perf_counter() - started, 2)}
    return session.peft_model, summary


def _check_traces(cfg: TrainConfig, rows: list[TrainRow], session: Session) -> None:
    """Refuse traces recorded as made by other weights or another tokenizer, and token ids past the vocabulary."""
    if cfg.traces is None or OBJECTIVES[cfg.objective].target == "solution":
        return
    provenance.check_same_model(cfg.traces, provenance.read(provenance_path(cfg.traces)), session.provenance,
                                "traces")
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
                last = _log_record(session, stats, step + 1, elapsed)  # every process: a collective
                last["tokens_seen"] = tokens  # trained tokens so far: the compute a method used
                if main:
                    log.write(last)
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


def run(cfg: TrainConfig, progress: Progress | None = None) -> dict[str, Any]:
    """The `dail train` stage: train, write `out/` (adapter, log.jsonl, config.toml); the summary."""
    with dist.output_lock(cfg.out, main_only=True):  # one training run per adapter directory
        return fit(cfg, progress)[1]
