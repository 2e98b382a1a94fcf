"""The model's forwards under the engine: prefill of prompt chunks, and one decode step over a workspace.

What it owns. `ModelRunner` runs a causal LM the way the engine needs it: logits only at the column
each row samples from, in the sampling dtype; a right-padded prefill of prompt chunks into a
throwaway cache; and `step`, one forward of every live row's last token over a workspace
(`dail.kvcache`) followed by `record_choice`, which turns the step's logits `[G, R, V]` into one
token per group through a `choose` callback (`dail.sampling.Choose`) and writes the token, its tag
and its raw log-prob under every row of the group into the workspace's record at column `col`.

A step is what a CUDA graph captures (`dail.graphs`): every tensor it touches lives in the
workspace and is advanced in place, and nothing is read back to the host.

What it does not do: the sampling arithmetic and the choose rules (`dail.sampling`), the cache's
layout (`dail.kvcache`), the loop over steps, batch sizes and host reads (`dail.engine`), turning
the record into generations (`dail.generation`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor

from .kvcache import Workspace
from .sampling import Choose, sampling_dtype

__all__ = ["ModelRunner", "record_choice", "token_logprob"]


def token_logprob(logits: Tensor, token: Tensor) -> Tensor:
    """log_softmax(logits)[token] per row without materialising log_softmax; [N, V], [N] -> [N]."""
    return logits.gather(-1, token[:, None])[:, 0] - logits.logsumexp(-1)


def record_choice(ws: Workspace, groups: int, choose: Choose, logits: Tensor) -> None:
    """Choose each group's next token from `logits` [groups * R, V] and record it at column `col`."""
    R = ws.R
    token, tag = choose(logits.view(groups, R, -1), ws.key[:groups], ws.t, ws.seen[:groups])  # [g], [g]
    logprob = token_logprob(logits, token[:, None].expand(-1, R).reshape(-1)).view(groups, R)  # [g, R]
    col = ws.col.view(1)
    ws.rec_token[:groups].index_copy_(1, col, token[:, None])
    ws.rec_tag[:groups].index_copy_(1, col, tag.to(torch.long)[:, None])
    ws.rec_logprob[:groups].index_copy_(2, col, logprob.to(ws.logits_dtype)[:, :, None])
    ws.token[:groups] = token
    ws.seen[:groups].scatter_(1, token[:, None], True)
    ws.t += 1
    ws.col += 1


class ModelRunner:
    """A causal LM's forwards for the engine: logits at chosen columns, prefill chunks, decode steps."""

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.keep_last = "logits_to_keep" in inspect.signature(base.forward).parameters

    def forward(self, ids: Tensor, pos: Tensor, mask: Tensor, cache, last: Tensor | None = None) -> Tensor:
        """Logits [N, V] in the sampling dtype at column `last` [N] of each row (default: the final one)."""
        kw = {}
        if self.keep_last:  # project only the positions we sample from: [N, P, V] logits are huge
            kw["logits_to_keep"] = 1 if last is None else last[:, None]
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                            use_cache=True, **kw).logits  # [N, 1 or q, V]
        if last is not None and not self.keep_last:
            logits = logits[torch.arange(len(last), device=logits.device), last][:, None]
        return logits[:, -1].to(sampling_dtype(logits.dtype))  # [N, V]

    def prefill_chunk(self, prompts: Sequence[Sequence[int]]) -> tuple[object, Tensor]:
        """One forward over right-padded prompts into a throwaway DynamicCache; logits [C, V] at each end."""
        from transformers import DynamicCache

        # Right padding here, unlike the decode layout: a left pad would be a query that may attend
        # to nothing, which some attention paths (eager in float64) turn into NaN. Right pads see
        # the real tokens before them, and causality hides them from every real token.
        width = len(prompts[-1])  # sorted by length: the last is the longest
        ids = torch.zeros(len(prompts), width, dtype=torch.long)  # [C, w]; pad id is irrelevant
        mask = torch.zeros(len(prompts), width, dtype=torch.bool)  # [C, w]
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.tensor(p)
            mask[i, : len(p)] = True
        pos = torch.arange(width).expand(len(prompts), -1)  # [C, w]
        last = mask.sum(1) - 1  # [C]
        cache = DynamicCache(config=self.model.config)
        dev = self.device
        logits = self.forward(ids.to(dev), pos.to(dev), mask.to(dev), cache, last.to(dev))
        return cache, logits

    def step(self, ws: Workspace, groups: int, choose: Choose) -> None:
        """One decode step of the first `groups` groups: forward of their last tokens, then choose.

        This is what a CUDA graph captures: every tensor it touches lives in `ws`, and it reads
        nothing back to the host.
        """
        n = groups * ws.R
        ws.use(groups)
        ids = ws.token[:groups, None].expand(-1, ws.R).reshape(-1, 1)  # [n, 1]
        logits = self.forward(ids, ws.pos[:n, None], ws.mask[:n], ws.cache)  # [n, V]
        ws.pos[:n] += 1
        record_choice(ws, groups, choose, logits)
