"""The training session: accelerator, the base with a fresh LoRA adapter, AdamW, the LR schedule, and the
module that gives hidden states at trace positions only (the head runs in chunks, `dail.train.step`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import distributed as dist
from .. import trackers
from ..config import ConfigError, TrainConfig
from ..objectives import OBJECTIVES, Objective
from ..rows import plan_steps
from ..rundir import AdapterDir
from ..seeding import seed_torch

__all__ = ["Session", "TraceHidden", "lr_lambda", "open_session", "setup"]


# --------------------------------------------------------------------------------------------------
# the model: hidden states at trace positions only (the head runs in chunks, in step._chunked_loss)


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
    return open_session(cfg, lambda num_processes: plan_steps(n_rows, cfg, num_processes))


def open_session(cfg, plan: Callable[[int], tuple[int, int]], adapter: str | None = None) -> Session:
    """`setup` for any adapter-training config (`TrainConfig`, `RLConfig`): `plan(num_processes)` gives
    (steps per epoch, total optimizer steps); `adapter` starts from a trained adapter instead of a fresh one."""
    from accelerate import Accelerator

    on_cuda = cfg.resolved_device().startswith("cuda")
    bf16 = on_cuda and torch.cuda.is_bf16_supported() and cfg.dtype in ("auto", "bfloat16", "float32")
    logging_dir = cfg.logging_dir if cfg.logging_dir is not None else AdapterDir(Path(cfg.out)).trackers
    # cpu=True on a CPU run: without it accelerate leaves a launched CPU process alone (world size 1).
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision="bf16" if bf16 else "no",
                              cpu=not on_cuda, **trackers.accelerator_kwargs(cfg.report_to, logging_dir))
    dist.check_launch(accelerator.num_processes)
    per_epoch, total_steps = plan(accelerator.num_processes)
    peft_model, tokenizer, made_by = _learner(cfg, accelerator.device, adapter)
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


def _learner(cfg: TrainConfig, device, adapter: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """The base model with a fresh LoRA adapter (seeded by `cfg.seed`) or `adapter` made trainable, in train mode;
    the tokenizer; the base's provenance record (taken before the adapter renames its parameters)."""
    from .. import provenance
    from ..models import attach_adapter, attach_lora, load

    model, tokenizer = load(cfg.model, dtype=cfg.dtype, device=device)
    made_by = provenance.record(cfg.model, model, tokenizer, cfg.prompts)
    model.config.use_cache = False
    seed_torch(cfg.seed)  # the adapter's initialisation
    if adapter is not None:
        peft_model = attach_adapter(model, tokenizer, cfg.model, Path(adapter), trainable=True)
    else:
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


