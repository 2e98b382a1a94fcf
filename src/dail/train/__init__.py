"""`dail train`: LoRA fine-tuning of the learner on training rows, in a loop we own (accelerate, peft).

The recipe (`fit`): build the rows (`dail.rows`), set up a `Session` -- accelerator, the base model
with a fresh LoRA adapter, AdamW, the LR schedule -- restore the latest checkpoint when resuming
(`dail.checkpoint`), run `train_step` over the step plan, logging every `log_every` (to `log.jsonl`, and
to accelerate's trackers with `report_to`: `dail.trackers`) and checkpointing every `save_every` steps,
and save the adapter with its provenance (`dail.provenance`: the base's weights fingerprint, the
tokenizer, the prompts). Traces whose provenance names another model or
tokenizer, or that have none, or holding a token id past the model's vocabulary, are refused before
the first step.
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

The package: `session` (accelerator, model + adapter, optimizer, schedule), `step` (one optimizer
step and its log line), `fit` (the recipe and the stage).
"""

from __future__ import annotations

from .fit import RESUME_MAY_DIFFER, fit, run
from .session import Session, TraceHidden, lr_lambda, setup
from .step import DIAGNOSTICS, LOGIT_CHUNK_ELEMENTS, StepStats, log_record, train_step

__all__ = ["DIAGNOSTICS", "LOGIT_CHUNK_ELEMENTS", "RESUME_MAY_DIFFER", "Session", "StepStats", "TraceHidden", "fit",
           "log_record", "lr_lambda", "run", "setup", "train_step"]
