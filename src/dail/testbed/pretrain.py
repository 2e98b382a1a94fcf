"""Pretraining the test-bed's model: the corpus in length-sorted batches, a fresh Llama, and the phases
of training with their checkpoints, so a killed build resumes to the same weights."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from dail import seeding
from dail.config import PromptConfig
from dail.testbed.config import BuildConfig, Phase, phases
from dail.testbed.corpus import document_text, draw_document

__all__ = ["CHECKPOINT_EVERY", "new_model", "pretrain"]

CHECKPOINT_EVERY = 200
# A phase's work directory (not a run directory: the build owns its names here).
CHECKPOINT, WORK_LOG, WEIGHTS = "checkpoint.pt", "log.jsonl", "weights.pt"


def _batches(cfg: BuildConfig, phase: Phase, tokenizer, prompts: PromptConfig) -> Iterator[tuple[list[list[int]], list[int]]]:
    # Documents are drawn four batches at a time and batched by length: padding would otherwise
    # be over half of every batch (prompts with a reference are twice as long as the others).
    rng = seeding.rng(phase.corpus)
    longest = (phase.lengths or (1, max(cfg.learner_steps[1], cfg.reference_steps[1])))[1]
    grow = phase.curriculum * phase.steps
    step = 0
    while True:
        # The curriculum: induction (find step c in the prompt, copy it) forms on short chains in a
        # few hundred steps; on full-length documents it takes far longer.
        cap = longest if step >= grow else min(longest, 3 + int((longest - 3) * step / grow))
        step += 4
        docs = []
        for _ in range(4 * cfg.batch_size):
            prompt, completion = document_text(*draw_document(rng, cfg, cap, phase.reference_share, phase.lengths),
                                               prompts)
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            c = tokenizer(completion, add_special_tokens=False)["input_ids"]
            docs.append(((p + c)[: cfg.max_positions], len(p)))
        docs.sort(key=lambda d: len(d[0]))
        groups = [docs[i: i + cfg.batch_size] for i in range(0, len(docs), cfg.batch_size)]
        rng.shuffle(groups)
        for group in groups:
            yield [d[0] for d in group], [d[1] for d in group]


def _tensors(ids: list[list[int]], starts: list[int], pad: int):
    import torch

    width = max(map(len, ids))
    x = torch.full((len(ids), width), pad, dtype=torch.long)
    labels = torch.full_like(x, -100)
    mask = torch.zeros_like(x)
    for i, (row, s) in enumerate(zip(ids, starts)):
        x[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, s: len(row)] = x[i, s: len(row)]  # loss on the completion only (and its <|end|>)
    return x, mask, labels


def new_model(cfg: BuildConfig, tokenizer):
    """A randomly initialised Llama of the config's shape over the tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions, tie_word_embeddings=cfg.tie_embeddings,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def pretrain(cfg: BuildConfig, tokenizer, prompts: PromptConfig, work: Path,
             on_step: Callable[[dict], None] | None = None):
    """A Llama trained from scratch on the corpus, phase by phase; returns (model, per-step records)."""
    import torch

    seeding.seed_torch(cfg.seed)
    torch.set_num_threads(cfg.threads)
    model = new_model(cfg, tokenizer)
    records: list[dict] = []
    offset = 0  # steps are numbered across phases
    for phase in phases(cfg):
        records += _phase(cfg, phase, model, tokenizer, prompts, work / f"phase-{phase.number}", offset, on_step)
        offset += phase.steps
    model.eval()
    return model, records


def _lr_factor(phase: Phase) -> Callable[[int], float]:
    """The phase's LR factor after `step` steps: linear warm-up, then cosine down to 10%."""

    def lr_at(step: int) -> float:
        if step < phase.warmup:
            return (step + 1) / phase.warmup
        progress = (step - phase.warmup) / max(1, phase.steps - phase.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return lr_at


def _resume(work: Path, model, opt, sched) -> tuple[int, list[dict]]:
    """(steps done, their records) from the phase's checkpoint, loaded into `model`, `opt` and `sched`; (0, []) without one."""
    import torch

    checkpoint, log = work / CHECKPOINT, work / WORK_LOG
    if not checkpoint.exists():
        return 0, []
    state = torch.load(checkpoint, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    start = state["step"]
    records = [json.loads(line) for line in log.read_text().splitlines()][:start]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))  # drop steps after the checkpoint
    return start, records


def _save_checkpoint(work: Path, model, opt, sched, step: int) -> None:
    import torch

    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step}
    torch.save(state, work / "checkpoint.tmp")
    os.replace(work / "checkpoint.tmp", work / CHECKPOINT)  # a kill mid-save leaves the last checkpoint whole


def _train_step(model, opt, sched, batch: tuple[list[list[int]], list[int]], pad: int) -> tuple[float, int]:
    """One optimizer step on `batch`; its loss and its token count."""
    import torch

    x, mask, labels = _tensors(*batch, pad)
    loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return loss.item(), int(mask.sum())


def _phase(cfg: BuildConfig, phase: Phase, model, tokenizer, prompts: PromptConfig, work: Path, offset: int,
           on_step: Callable[[dict], None] | None) -> list[dict]:
    """Train `model` in place through one phase.

    Every `CHECKPOINT_EVERY` steps the weights, optimizer and schedule go to `work/checkpoint.pt`
    and each step's record is appended to `work/log.jsonl`; a killed build resumes from the last
    checkpoint and ends with the same weights (the corpus iterator is replayed up to that step). A
    finished phase leaves `work/weights.pt`, so a later phase's resume does not repeat it.
    """
    import torch

    work.mkdir(parents=True, exist_ok=True)
    log, done = work / WORK_LOG, work / WEIGHTS
    if done.exists():
        model.load_state_dict(torch.load(done, weights_only=True))
        return [json.loads(line) for line in log.read_text().splitlines()]
    opt = torch.optim.AdamW(model.parameters(), lr=phase.lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(phase))
    start, records = _resume(work, model, opt, sched)
    batches = _batches(cfg, phase, tokenizer, prompts)
    for _ in range(start):
        next(batches)
    model.train()
    t0 = time.perf_counter() - (records[-1]["elapsed_s"] if records else 0.0)
    with log.open("a") as sink:
        for step in range(start, phase.steps):
            loss, tokens = _train_step(model, opt, sched, next(batches), tokenizer.pad_token_id)
            record = {"step": offset + step + 1, "phase": phase.number, "loss": round(loss, 5),
                      "lr": sched.get_last_lr()[0], "tokens": tokens, "elapsed_s": round(time.perf_counter() - t0, 2)}
            records.append(record)
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            if (step + 1) % CHECKPOINT_EVERY == 0 and step + 1 < phase.steps:
                _save_checkpoint(work, model, opt, sched, step + 1)
            if on_step is not None:
                on_step(record)
    torch.save(model.state_dict(), work / "weights.tmp")
    os.replace(work / "weights.tmp", done)
    return records
