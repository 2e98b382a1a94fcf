"""The decode's static memory: the KV cache and every buffer a step touches, at fixed addresses.

What it owns. `Workspace`: a preallocated `transformers.StaticCache` and the positions, attention
mask, stream keys, seen-token masks, step counter and per-window record of a decode, allocated once
and advanced in place, so that one step can be captured as a CUDA graph (`dail.graphs`) and
replayed; moving the prefilled prompts into it; regrouping its rows when the batch shrinks; the
one host read of a window. `PromptLayout`: which distinct prompt feeds each row. `Workspaces`: the
workspace an engine keeps between calls, so that later calls replay its graphs.

Layout. Left padding: row i's prompt ends at column P (the longest prompt) and generated tokens
follow at P, P+1, ... in every row, which is what `StaticCache` (one write column for the whole
batch) needs; the attention mask hides each row's padding and per-row `position_ids` start at 0 on
its first real token, so a padded row computes exactly what it would alone. The cache is sized
for the whole decode (P + max_new_tokens - 1 columns) and never grows; with CUDA graphs it is kept
and reused by later calls that fit in it, so their graphs are captured once.

What it does not do: run the model (`dail.decode`), capture graphs (`dail.graphs`; a workspace only
holds them, as they are valid for its addresses alone), choose batch sizes or when to read
(`dail.engine`). Caches other than key/value attention caches (linear-attention / SSM layers) raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PromptLayout", "Shape", "Workspace", "Workspaces"]


@dataclass
class PromptLayout:
    """The rows of a batch of groups (group-major) and the distinct prompts that feed them."""

    unique: list[tuple[int, ...]]  # [U] distinct prompts, sorted by length (the order prefill runs them in)
    src: Tensor  # [N] index into `unique` of each row's prompt
    lens: Tensor  # [N] each row's prompt length
    width: int  # P: the longest prompt; every prompt ends at column P
    groups: int

    @classmethod
    def of(cls, prompts: Sequence[Sequence[Sequence[int]]], device: torch.device) -> PromptLayout:
        """The layout of groups of prompts; an empty prompt raises."""
        row_prompts = [tuple(p) for group in prompts for p in group]  # N rows, group-major
        if any(len(r) == 0 for r in row_prompts):
            raise ValueError("empty prompt: every row needs at least one token")
        # The n samples of a problem share their prompts: prefill each distinct prompt once, in
        # length-sorted chunks so that a short prompt is not padded to the longest of the batch.
        unique = sorted(set(row_prompts), key=lambda r: (len(r), r))
        slot = {r: i for i, r in enumerate(unique)}
        src = torch.tensor([slot[r] for r in row_prompts], device=device)
        lens = torch.tensor([len(r) for r in row_prompts], device=device)
        return cls(unique, src, lens, len(unique[-1]), len(prompts))


@dataclass(frozen=True)
class Shape:
    """What a workspace is sized for: groups of rows, cache columns, record window, dtypes, vocabulary."""

    groups: int
    rows_per_group: int
    width: int  # cache columns
    window: int  # record columns: steps between host reads
    dtype: torch.dtype  # of the keys and values
    logits_dtype: torch.dtype
    vocab: int


class Workspace:
    """Every tensor a decode step reads or writes, allocated once at fixed addresses.

    A CUDA graph replays kernels on the pointers it captured, so nothing a step touches may be
    reallocated: the KV cache holds `groups * R` rows of `width` columns and a batch of g groups runs
    on views of its first g * R rows; the step, the record column and the positions are device
    tensors that the step advances in place; each step writes its tokens, tags and log-probs into
    column `col` of the record buffers, which the host reads once per window of `window` steps
    (`read_window`).
    """

    def __init__(self, model, template, shape: Shape):
        from transformers import StaticCache

        self.groups, self.R, self.width, self.window = shape.groups, shape.rows_per_group, shape.width, shape.window
        self.vocab, self.dtype, self.logits_dtype = shape.vocab, shape.dtype, shape.logits_dtype
        groups, n = shape.groups, shape.groups * shape.rows_per_group
        self.cache = StaticCache(config=model.config, max_cache_len=shape.width)
        # Prefill assembly and row gathers handle plain key/value layers only (full attention).
        unsupported = {type(layer).__name__ for layer in self.cache.layers} - {"StaticLayer"}
        if unsupported:
            raise NotImplementedError(f"unsupported cache layers for this model: {', '.join(sorted(unsupported))}")
        self.kv: list[Tensor] = []  # full keys and values of every layer, [n, H, width, D] each
        for layer, small in zip(self.cache.layers, template.layers):
            empty = (n, small.keys.shape[1], 0)
            layer.lazy_initialization(small.keys.new_empty(*empty, small.keys.shape[-1]),
                                      small.values.new_empty(*empty, small.values.shape[-1]))
            self.kv += [layer.keys, layer.values]
        device, window = self.kv[0].device, shape.window
        self.token = torch.zeros(groups, dtype=torch.long, device=device)  # [G] each group's last token
        self.key = torch.zeros(groups, dtype=torch.long, device=device)  # [G] stream keys
        self.seen = torch.zeros(groups, shape.vocab, dtype=torch.bool, device=device)  # [G, V] tokens generated so far
        self.pos = torch.zeros(n, dtype=torch.long, device=device)  # [N] position of each row's next token
        self.mask = torch.zeros(n, shape.width, dtype=torch.bool, device=device)  # [N, S] False on left padding only
        self.t = torch.zeros((), dtype=torch.long, device=device)  # tokens generated so far
        self.col = torch.zeros((), dtype=torch.long, device=device)  # record column of the next token
        self.rec_token = torch.zeros(groups, window, dtype=torch.long, device=device)  # [G, W]
        self.rec_tag = torch.zeros(groups, window, dtype=torch.long, device=device)  # [G, W]
        self.rec_logprob = torch.zeros(groups, self.R, window, dtype=self.logits_dtype, device=device)  # [G, R, W]
        self.graphs: dict = {}  # (groups, choose) -> captured step
        self.busy = False  # a generate() is decoding in it
        self.pool = None  # memory pool shared by the captured graphs (they never run at once)

    def fits(self, shape: Shape) -> bool:
        """Whether a decode of this shape can run in this workspace (and so reuse its graphs)."""
        # Every step attends over the whole width: a far wider cache than needed would cost on every step.
        return (self.R == shape.rows_per_group and self.groups >= shape.groups
                and shape.width <= self.width <= 2 * shape.width and self.dtype == shape.dtype
                and self.logits_dtype == shape.logits_dtype and self.vocab == shape.vocab)

    def use(self, groups: int) -> None:
        """Point the cache at the first `groups` groups' rows: views, so writes land in the full buffers."""
        n = groups * self.R
        for i, layer in enumerate(self.cache.layers):
            layer.keys, layer.values = self.kv[2 * i][:n], self.kv[2 * i + 1][:n]

    def state(self) -> list[Tensor]:
        """The tensors a step advances in place (a graph's warm-up runs must leave them as they were)."""
        return [self.token, self.pos, self.t, self.col, self.seen] + [layer.cumulative_length for layer in self.cache.layers]

    def place(self, part, layout: PromptLayout, lo: int, hi: int) -> None:
        """Copy prompts [lo, hi) of `layout.unique`, prefilled right-padded into the cache `part`, to every
        row they feed, at columns [P - len, P)."""
        width, lens, src = layout.width, layout.lens, layout.src
        here = ((src >= lo) & (src < hi)).nonzero()[:, 0]  # [n] rows fed by this chunk
        # Columns left of a prompt get copies of column 0: masked, but finite (0 * NaN would poison).
        shift = (torch.arange(width, device=src.device)[None, :] - (width - lens[here])[:, None]).clamp(min=0)
        for i, small in enumerate(part.layers):
            for dst, kv in ((self.kv[2 * i], small.keys), (self.kv[2 * i + 1], small.values)):
                kv = kv.index_select(0, src[here] - lo)  # [n, H, w, D]
                idx = shift[:, None, :, None].expand(-1, kv.shape[1], -1, kv.shape[-1])  # [n, H, P, D]
                dst[here, :, :width] = kv.gather(2, idx)

    def start(self, layout: PromptLayout, keys: Sequence[int]) -> None:
        """After prefill: cache lengths at P, each row's mask and next position, the stream keys, nothing seen."""
        width, lens = layout.width, layout.lens
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(width)
        columns = torch.arange(self.width, device=lens.device)
        n = len(lens)
        self.mask[:n] = columns[None, :] >= (width - lens)[:, None]  # future columns: causality hides them
        self.pos[:n] = lens
        self.key[: layout.groups] = torch.tensor(list(keys), dtype=torch.long)
        self.seen[: layout.groups] = False

    def read_window(self, groups: int, steps: int) -> list[list[float]]:
        """Record columns [0, steps) -- the steps since the last read -- of the first `groups` groups, on the
        host: per group its tokens [steps], then tags [steps], then log-probs [R * steps] (row-major), as floats."""
        # sync point: the one host read of a window -- tokens, tags and log-probs in one transfer.
        # Token ids < 2^24 are exact in float32.
        return torch.cat([self.rec_token[:groups, :steps].to(self.logits_dtype),
                          self.rec_tag[:groups, :steps].to(self.logits_dtype),
                          self.rec_logprob[:groups, :, :steps].flatten(1)], 1).tolist()

    def arrange(self, groups: int, order: list[int]) -> Tensor:
        """Make group i of the batch the current group order[i], for every per-row and per-group buffer;
        returns the row indices [len(order) * R] that were gathered."""
        g = torch.tensor(order, dtype=torch.long, device=self.token.device)  # [G']
        rows = (g[:, None] * self.R + torch.arange(self.R, device=g.device)).flatten()  # [N']
        for buf in self.kv:
            buf[: len(rows)] = buf[: groups * self.R].index_select(0, rows)
        for buf, idx in ((self.pos, rows), (self.mask, rows), (self.token, g), (self.key, g), (self.seen, g)):
            buf[: len(idx)] = buf.index_select(0, idx)
        return rows

    def regroup(self, groups: int, slots: list[int | None], size: int) -> tuple[list[int | None], Tensor]:
        """Shrink or pad the batch of `groups` to `size`: the live groups (slot not None) move to the front
        and copies of the last one (slot None) fill the rest. -> (the new slots, row indices [size * R])."""
        live = [j for j, s in enumerate(slots) if s is not None]
        order = live + [live[-1]] * (size - len(live))
        rows = self.arrange(groups, order)
        return [slots[j] for j in live] + [None] * (size - len(live)), rows


class Workspaces:
    """The workspace an engine keeps between decodes; later decodes that fit replay its graphs."""

    def __init__(self) -> None:
        self.kept: Workspace | None = None

    def get(self, model, template, shape: Shape, keep: bool) -> Workspace:
        """A workspace for this decode: with `keep`, the kept one when it fits (its graphs stay valid) or a
        new one kept in its place; otherwise a new one for this decode only."""
        kept = self.kept
        # A generate() running while another is suspended on the kept workspace gets its own.
        if not keep or (kept is not None and kept.busy):
            return Workspace(model, template, shape)
        if kept is not None and kept.fits(shape):
            return kept
        kept = self.kept = None  # free the old buffers and graphs before allocating the new ones
        self.kept = Workspace(model, template, shape)
        return self.kept

    def release(self) -> None:
        """Free the kept workspace (static cache, buffers, captured graphs)."""
        self.kept = None
