"""Batched decoding for any causal LM from transformers: prefill, a static KV cache, one forward per step.

What it does. `Engine.generate` decodes a batch of *groups* of rows -- one row per group for plain
sampling, two (learner, privileged) for the mixed rollout of `dail.expand` -- over a preallocated
`transformers.StaticCache`: `prefill` runs each distinct prompt once (the n samples of a problem
share theirs) in length-sorted chunks and assembles the cache, then each step runs ONE forward per
generated token for every live row. A small `choose` callback (`dail.sampling.Choose`) turns a
step's logits `[G, R, V]` into one token per group; that token is appended to every row of its
group. Per token the engine records the token, a tag set by `choose` (the provenance mask: learner
or privileged, in `Generation.source`) and the raw log-prob of the token under every row of the group.

Layout. Left padding: row i's prompt ends at column P (the longest prompt) and generated tokens
follow at P, P+1, ... in every row, which is what `StaticCache` (one write column for the whole
batch) needs; the attention mask hides each row's padding and per-row `position_ids` start at 0 on
its first real token, so a padded row computes exactly what it would alone. The cache is sized
for the whole decode (P + max_new_tokens - 1 columns) and never grows; with CUDA graphs it is kept
and reused by later calls that fit in it, so their graphs are captured once.

Steps run on static buffers (`_Workspace`): the cache, positions, mask, the step counter and the
record of each step's tokens are allocated once and advanced in place, so one step of a given batch
size can be captured as a CUDA graph and replayed (on GPU, by default). The host reads the record
once per window of `sync_every` steps (16 on GPU, 1 on CPU): that read is the only synchronisation,
and it is where groups that hit EOS are found. A group runs on, unread, to the end of its window;
its surplus tokens are dropped. Then the live groups are moved to the front and the batch shrinks
to the BUCKET of their count (`bucket_sizes`: 1, 2, 4, ..., 32, 64, 96, ... on GPU, so a few graphs
cover every size; exactly the live count on CPU, where a forward costs in proportion to its rows
and trace lengths are long-tailed). Padding groups are copies of a live one whose output is ignored.

Each group carries the key of its random stream (`dail.sampling.row_key`) and `choose` draws its
uniforms from (key, step): a sequence's tokens depend on nothing but its key and its own logits, not
on batch size, order, or process count. (The logits themselves are batch-invariant on CPU; on GPU,
low-precision matmuls may tile differently per batch size and move them by rounding.) For a presence
penalty the engine keeps, per group, a [G, V] mask of the tokens generated so far (`seen`, updated
in place each step) and hands it to `choose`.

`reference_sample` is plain sampling written out slowly (a full forward per token, no cache); the
tests hold the engine equal to it.

What it deliberately does not do: tokenisation and prompts (`dail.prompts`), the sampling
arithmetic and the mixed acceptance rules (`dail.sampling`), continuous batching (a finished group's
slot is not refilled), torch.compile (graphs replay the eager kernels; fusing them is the next step),
caches other than key/value attention caches (linear-attention / SSM layers raise).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .sampling import Choose, Sampler, inverse_cdf, sampling_dtype, transform, uniforms

__all__ = [
    "Generation",
    "Engine",
    "bucket_sizes",
    "default_eos_ids",
    "reference_sample",
]


# ---------------------------------------------------------------------------------------------
# the engine


@dataclass
class Generation:
    """One finished group: its tokens, their tags (source and rejections), and raw log-probs under each row."""

    index: int  # position of the group in the request list
    token_ids: list[int] = field(default_factory=list)
    source: list[int] = field(default_factory=list)  # choose's tag per token (`dail.sampling.tag_source`)
    logprobs: list[list[float]] = field(default_factory=list)  # [R][T]: log_softmax(raw logits)[token]
    finish: str = "length"  # "eos" | "length"


def default_eos_ids(model, *extra: int | Iterable[int] | None) -> list[int]:
    """EOS ids of a model's generation config, plus any given (ints, lists or None)."""
    found: set[int] = set()
    config = getattr(model, "generation_config", None)
    for ids in (getattr(config, "eos_token_id", None), *extra):
        if ids is None:
            continue
        found.update([ids] if isinstance(ids, int) else ids)
    return sorted(found)


def _token_logprob(logits: Tensor, token: Tensor) -> Tensor:
    """log_softmax(logits)[token] per row without materialising log_softmax; [N, V], [N] -> [N]."""
    return logits.gather(-1, token[:, None])[:, 0] - logits.logsumexp(-1)


def _chunks(lengths: Sequence[int], budget: int, waste: float = 0.25) -> Iterator[tuple[int, int]]:
    """[lo, hi) ranges over ascending `lengths`: padded size (rows x longest) within `budget`, and at
    most `waste` of it padding (prefill compute grows with padded tokens)."""
    lo, real = 0, 0
    for hi, length in enumerate(lengths):
        if hi > lo and ((hi + 1 - lo) * length > budget or real + length < (1 - waste) * (hi + 1 - lo) * length):
            yield lo, hi
            lo, real = hi, 0
        real += length
    if lengths:
        yield lo, len(lengths)


def bucket_sizes(limit: int) -> list[int]:
    """The decode batch sizes (in groups) of the bucketed engine up to `limit`: 1, 2, 4, ..., 32, then steps of 32."""
    sizes = [1]
    while sizes[-1] < limit:
        sizes.append(sizes[-1] * 2 if sizes[-1] < 32 else sizes[-1] + 32)
    return sizes


class _Workspace:
    """Every tensor a decode step reads or writes, allocated once at fixed addresses.

    A CUDA graph replays kernels on the pointers it captured, so nothing a step touches may be
    reallocated: the KV cache holds `groups * R` rows of `width` columns and a batch of g groups runs
    on views of its first g * R rows; the step, the record column and the positions are device
    tensors that the step advances in place; each step writes its tokens, tags and log-probs into
    column `col` of the record buffers, which the host reads once per window of `window` steps
    (`read_window`).
    """

    def __init__(self, model, template, groups: int, rows_per_group: int, width: int, window: int,
                 logits_dtype: torch.dtype, vocab: int):
        from transformers import StaticCache

        self.groups, self.R, self.width, self.window, self.vocab = groups, rows_per_group, width, window, vocab
        self.dtype, self.logits_dtype = template.layers[0].keys.dtype, logits_dtype
        n = groups * rows_per_group
        self.cache = StaticCache(config=model.config, max_cache_len=width)
        # Prefill assembly and row gathers handle plain key/value layers only (full attention).
        unsupported = {type(layer).__name__ for layer in self.cache.layers} - {"StaticLayer"}
        if unsupported:
            raise NotImplementedError(f"unsupported cache layers for this model: {', '.join(sorted(unsupported))}")
        self.kv: list[Tensor] = []  # full keys and values of every layer, [n, H, width, D] each
        for layer, small in zip(self.cache.layers, template.layers):
            shape = (n, small.keys.shape[1], 0)
            layer.lazy_initialization(small.keys.new_empty(*shape, small.keys.shape[-1]),
                                      small.values.new_empty(*shape, small.values.shape[-1]))
            self.kv += [layer.keys, layer.values]
        device = self.kv[0].device
        self.token = torch.zeros(groups, dtype=torch.long, device=device)  # [G] each group's last token
        self.key = torch.zeros(groups, dtype=torch.long, device=device)  # [G] stream keys
        self.seen = torch.zeros(groups, vocab, dtype=torch.bool, device=device)  # [G, V] tokens generated so far
        self.pos = torch.zeros(n, dtype=torch.long, device=device)  # [N] position of each row's next token
        self.mask = torch.zeros(n, width, dtype=torch.bool, device=device)  # [N, S] False on left padding only
        self.t = torch.zeros((), dtype=torch.long, device=device)  # tokens generated so far
        self.col = torch.zeros((), dtype=torch.long, device=device)  # record column of the next token
        self.rec_token = torch.zeros(groups, window, dtype=torch.long, device=device)  # [G, W]
        self.rec_tag = torch.zeros(groups, window, dtype=torch.long, device=device)  # [G, W]
        self.rec_logprob = torch.zeros(groups, rows_per_group, window, dtype=logits_dtype, device=device)  # [G, R, W]
        self.graphs: dict = {}  # (groups, choose) -> captured step
        self.busy = False  # a generate() is decoding in it
        self.pool = None  # memory pool shared by the captured graphs (they never run at once)

    def fits(self, groups: int, rows_per_group: int, width: int, dtype: torch.dtype, logits_dtype: torch.dtype,
             vocab: int) -> bool:
        """Whether a decode of this size can run in this workspace (and so reuse its graphs)."""
        # Every step attends over the whole width: a far wider cache than needed would cost on every step.
        return (self.R == rows_per_group and self.groups >= groups and width <= self.width <= 2 * width
                and self.dtype == dtype and self.logits_dtype == logits_dtype and self.vocab == vocab)

    def use(self, groups: int) -> None:
        """Point the cache at the first `groups` groups' rows: views, so writes land in the full buffers."""
        n = groups * self.R
        for i, layer in enumerate(self.cache.layers):
            layer.keys, layer.values = self.kv[2 * i][:n], self.kv[2 * i + 1][:n]

    def state(self) -> list[Tensor]:
        """The tensors a step advances in place (a graph's warm-up runs must leave them as they were)."""
        return [self.token, self.pos, self.t, self.col, self.seen] + [layer.cumulative_length for layer in self.cache.layers]

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


# RoPE variants whose forward reads the sequence length on the host (or updates frequencies in place
# per call): a captured graph would freeze them.
_HOST_ROPE = {"dynamic", "longrope"}


def _rope_type(config) -> str:
    """The model's RoPE variant ("default" when plain)."""
    for name in ("rope_parameters", "rope_scaling"):
        params = getattr(config, name, None)
        if isinstance(params, dict) and params.get("rope_type", params.get("type")):
            return str(params.get("rope_type", params.get("type")))
    return "default"


class Engine:
    """Batched decoding of groups of rows over a static KV cache: one forward per step, CUDA graphs on GPU.

    `sync_every`: steps between host reads (EOS checks); `bucketed`: run decode at the sizes of
    `bucket_sizes` instead of the exact number of live groups; `cuda_graphs`: capture each
    bucket's step once and replay it. Defaults: 16 / on / on for a CUDA model; 1 / off / off on CPU,
    where a forward costs in proportion to its rows and launch overhead is nil.

    Graphs freeze the model's Python-level state at capture: build a new Engine (or `release()`)
    after toggling an adapter, switching train/eval, or replacing (not updating in place) weights.
    """

    def __init__(self, model, eos_token_ids: Iterable[int] | None = None, prefill_tokens: int = 8192, *,
                 sync_every: int | None = None, bucketed: bool | None = None, cuda_graphs: bool | None = None):
        self.model = model
        self.prefill_tokens = prefill_tokens  # padded tokens per prefill forward (bounds its memory)
        self.device = next(model.parameters()).device
        cuda = self.device.type == "cuda"
        self.cuda_graphs = cuda if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and not cuda:
            raise ValueError(f"CUDA graphs need a model on a CUDA device, not {self.device}")
        rope = _rope_type(model.config)
        if self.cuda_graphs and rope in _HOST_ROPE:
            if cuda_graphs:
                raise ValueError(f"CUDA graphs cannot capture {rope!r} RoPE (it branches on the host per step)")
            self.cuda_graphs = False
        self.sync_every = sync_every or (16 if cuda else 1)
        if self.sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        self.bucketed = cuda if bucketed is None else bucketed
        ids = sorted(set(eos_token_ids)) if eos_token_ids is not None else default_eos_ids(model)
        self.eos = frozenset(ids)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._keep_last = "logits_to_keep" in inspect.signature(base.forward).parameters
        self._workspace: _Workspace | None = None  # kept between calls only with CUDA graphs

    def bucket(self, groups: int, cap: int | None = None) -> int:
        """The number of groups a decode step runs at when `groups` are live, at most `cap` (the batch's start)."""
        if not self.bucketed:
            return groups
        size = next(size for size in bucket_sizes(groups) if size >= groups)
        return size if cap is None else min(size, cap)

    def _forward(self, ids: Tensor, pos: Tensor, mask: Tensor, cache, last: Tensor | None = None) -> Tensor:
        """Logits [N, V] in the sampling dtype at column `last` [N] of each row (default: the final one)."""
        kw = {}
        if self._keep_last:  # project only the positions we sample from: [N, P, V] logits are huge
            kw["logits_to_keep"] = 1 if last is None else last[:, None]
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                            use_cache=True, **kw).logits  # [N, 1 or q, V]
        if last is not None and not self._keep_last:
            logits = logits[torch.arange(len(last), device=logits.device), last][:, None]
        return logits[:, -1].to(sampling_dtype(logits.dtype))  # [N, V]

    def _ensure_workspace(self, template, logits_dtype: torch.dtype, groups: int, rows_per_group: int,
                          width: int, vocab: int) -> _Workspace:
        """A workspace for this decode: the kept one when it fits (its graphs stay valid), else a new one."""
        groups, dtype = self.bucket(groups), template.layers[0].keys.dtype
        if self.bucketed:  # round up so that later, slightly longer prompts still fit (and graphs stay valid)
            width = -(-width // 256) * 256

        def build() -> _Workspace:
            return _Workspace(self.model, template, groups, rows_per_group, width, self.sync_every, logits_dtype, vocab)

        kept = self._workspace
        # Kept only with graphs; a generate() running while another is suspended on it gets its own.
        if not self.cuda_graphs or (kept is not None and kept.busy):
            return build()
        if kept is not None and kept.fits(groups, rows_per_group, width, dtype, logits_dtype, vocab):
            return kept
        kept = self._workspace = None  # free the old buffers and graphs before allocating the new ones
        self._workspace = build()
        return self._workspace

    def release(self) -> None:
        """Free the kept workspace (static cache, buffers, captured graphs); the next call builds a new one."""
        self._workspace = None

    def prefill(self, prompts: Sequence[Sequence[Sequence[int]]], keys: Sequence[int],
                max_new_tokens: int) -> tuple[_Workspace, Tensor]:
        """Prefill every distinct prompt once into a workspace, left-padded; logits [N, V] at each prompt's end."""
        row_prompts = [tuple(p) for group in prompts for p in group]  # N rows, group-major
        if any(len(r) == 0 for r in row_prompts):
            raise ValueError("empty prompt: every row needs at least one token")
        # The n samples of a problem share their prompts: prefill each distinct prompt once, in
        # length-sorted chunks so that a short prompt is not padded to the longest of the batch.
        unique = sorted(set(row_prompts), key=lambda r: (len(r), r))  # U
        slot = {r: i for i, r in enumerate(unique)}
        src = torch.tensor([slot[r] for r in row_prompts], device=self.device)  # [N] distinct prompt of each row
        lens = torch.tensor([len(r) for r in row_prompts], device=self.device)  # [N]
        width = len(unique[-1])  # P; every prompt ends at column P
        ws, logit_chunks = None, []
        for lo, hi in _chunks([len(r) for r in unique], self.prefill_tokens):
            part, chunk_logits = self._prefill_chunk(unique[lo:hi])  # DynamicCache [C, H, w, D], [C, V]
            if ws is None:  # the first chunk tells the cache's heads, head size and dtype
                ws = self._ensure_workspace(part, chunk_logits.dtype, len(prompts), len(prompts[0]),
                                            width + max_new_tokens - 1, chunk_logits.shape[-1])
            logit_chunks.append(chunk_logits)
            here = ((src >= lo) & (src < hi)).nonzero()[:, 0]  # [n] rows fed by this chunk
            # The chunk is right-padded; row n's prompt moves to columns [P - len_n, P) of the cache.
            # Columns left of it get copies of column 0: masked, but finite (0 * NaN would poison).
            shift = (torch.arange(width, device=self.device)[None, :] - (width - lens[here])[:, None]).clamp(min=0)
            for i, small in enumerate(part.layers):
                for dst, kv in ((ws.kv[2 * i], small.keys), (ws.kv[2 * i + 1], small.values)):
                    kv = kv.index_select(0, src[here] - lo)  # [n, H, w, D]
                    idx = shift[:, None, :, None].expand(-1, kv.shape[1], -1, kv.shape[-1])  # [n, H, P, D]
                    dst[here, :, :width] = kv.gather(2, idx)
        for layer in ws.cache.layers:
            layer.cumulative_length.fill_(width)
        columns = torch.arange(ws.width, device=self.device)
        n = len(row_prompts)
        ws.mask[:n] = columns[None, :] >= (width - lens)[:, None]  # future columns: causality hides them
        ws.pos[:n] = lens
        ws.key[: len(prompts)] = torch.tensor(list(keys), dtype=torch.long)
        ws.seen[: len(prompts)] = False
        return ws, torch.cat(logit_chunks)[src]

    def _prefill_chunk(self, prompts: Sequence[Sequence[int]]) -> tuple[object, Tensor]:
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
        logits = self._forward(ids.to(dev), pos.to(dev), mask.to(dev), cache, last.to(dev))
        return cache, logits

    @staticmethod
    def _choose(ws: _Workspace, groups: int, choose: Choose, logits: Tensor) -> None:
        """Choose each group's next token from `logits` [groups * R, V] and record it at column `col`."""
        R = ws.R
        token, tag = choose(logits.view(groups, R, -1), ws.key[:groups], ws.t, ws.seen[:groups])  # [g], [g]
        logprob = _token_logprob(logits, token[:, None].expand(-1, R).reshape(-1)).view(groups, R)  # [g, R]
        col = ws.col.view(1)
        ws.rec_token[:groups].index_copy_(1, col, token[:, None])
        ws.rec_tag[:groups].index_copy_(1, col, tag.to(torch.long)[:, None])
        ws.rec_logprob[:groups].index_copy_(2, col, logprob.to(ws.logits_dtype)[:, :, None])
        ws.token[:groups] = token
        ws.seen[:groups].scatter_(1, token[:, None], True)
        ws.t += 1
        ws.col += 1

    def _step(self, ws: _Workspace, groups: int, choose: Choose) -> None:
        """One decode step of the first `groups` groups: forward of their last tokens, then choose.

        This is what a CUDA graph captures: every tensor it touches lives in `ws`, and it reads
        nothing back to the host.
        """
        n = groups * ws.R
        ws.use(groups)
        ids = ws.token[:groups, None].expand(-1, ws.R).reshape(-1, 1)  # [n, 1]
        logits = self._forward(ids, ws.pos[:n, None], ws.mask[:n], ws.cache)  # [n, V]
        ws.pos[:n] += 1
        self._choose(ws, groups, choose, logits)

    def _run(self, ws: _Workspace, groups: int, choose: Choose) -> None:
        """`_step`, replayed from a graph captured on first use of this (bucket, choose) when graphs are on."""
        if not self.cuda_graphs:
            return self._step(ws, groups, choose)
        graph = ws.graphs.get((groups, choose))
        if graph is None:
            if len(ws.graphs) >= 64:  # a new `choose` object per call (a closure) would pile graphs up
                ws.graphs.clear()
            graph = ws.graphs[groups, choose] = self._capture(ws, groups, choose)
        graph.replay()

    def _capture(self, ws: _Workspace, groups: int, choose: Choose):
        """A CUDA graph of `_step` at this bucket; its warm-up runs leave the decode state as they found it."""
        saved = [x.clone() for x in ws.state()]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # capture wants lazy initialisation (cuBLAS workspaces, kernels) done before
                self._step(ws, groups, choose)
                # Each warm-up step wrote the current cache column and record column, which the real
                # step rewrites before anything reads them; the state goes back to what it was.
                for x, value in zip(ws.state(), saved):
                    x.copy_(value)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if ws.pool is None:
            ws.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=ws.pool):
            self._step(ws, groups, choose)
        return graph

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[Sequence[int]]], keys: Sequence[int], choose: Choose, *,
                 max_new_tokens: int, stop_on_eos: bool = True) -> Iterator[Generation]:
        """Decode groups of prompts (same number of rows each) and yield each group as it finishes."""
        if not prompts:
            return
        if len(keys) != len(prompts) or len({len(g) for g in prompts}) != 1:
            raise ValueError("need one key per group and the same number of rows in every group")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        R = len(prompts[0])
        # Graph capture and replay use the current CUDA device, which need not be the model's.
        with torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext():
            ws, logits = self.prefill(prompts, keys, max_new_tokens)
            ws.busy = True
            try:
                yield from self._decode(ws, logits, len(prompts), R, choose, max_new_tokens, stop_on_eos)
            finally:
                ws.busy = False

    def _decode(self, ws: _Workspace, logits: Tensor, n_groups: int, R: int, choose: Choose, max_new_tokens: int,
                stop_on_eos: bool) -> Iterator[Generation]:
        """The decode loop of `generate` after prefill: windows of steps, one host read each."""
        running = {i: Generation(i, logprobs=[[] for _ in range(R)]) for i in range(n_groups)}  # request -> its tokens so far
        slots: list[int | None] = list(range(n_groups))  # request index of each batch group; None: ended
        groups, slots, rows = self._arrange(ws, n_groups, slots, n_groups)
        ws.t.zero_()
        ws.col.zero_()
        self._choose(ws, groups, choose, logits[rows])  # token 0 from the prefill's logits
        done = recorded = 1  # tokens generated; of them, recorded since the last host read
        while True:
            steps = min(self.sync_every - recorded, max_new_tokens - done)
            for _ in range(steps):
                self._run(ws, groups, choose)
            done, recorded = done + steps, recorded + steps
            window_start = done - recorded  # step of the window's column 0
            for j, record in enumerate(ws.read_window(groups, recorded)):
                if slots[j] is None:
                    continue
                gen = running[slots[j]]
                for c in range(recorded):
                    token = int(record[c])
                    gen.token_ids.append(token)
                    gen.source.append(int(record[recorded + c]))
                    for r in range(R):
                        gen.logprobs[r].append(record[(2 + r) * recorded + c])
                    hit = stop_on_eos and token in self.eos
                    if hit or window_start + c + 1 == max_new_tokens:
                        gen.finish = "eos" if hit else "length"
                        yield running.pop(slots[j])
                        slots[j] = None
                        break
            if not running:
                return
            groups, slots, _ = self._arrange(ws, groups, slots, n_groups)
            ws.col.zero_()
            recorded = 0

    def _arrange(self, ws: _Workspace, groups: int, slots: list[int | None], start: int) -> tuple[int, list, Tensor]:
        """Fit the batch to the bucket of its live groups (at most `start`, the batch's first size): a no-op
        while that bucket is the current size, else the live groups move to the front and copies of the
        last one (slot None) fill the bucket. -> (groups, slots, row indices [groups * R] gathered)."""
        live = [j for j, s in enumerate(slots) if s is not None]
        size = self.bucket(len(live), start)
        if size == len(slots):
            return groups, slots, torch.arange(groups * ws.R, device=self.device)
        # Ended groups are dropped, not masked: on CPU a forward costs in proportion to its rows, and
        # trace lengths are long-tailed, so masking would spend most of a batch's compute on rows that
        # already ended. On GPU the buckets bound the number of captured graphs.
        order = live + [live[-1]] * (size - len(live))
        rows = ws.arrange(groups, order)
        return size, [slots[j] for j in live] + [None] * (size - len(live)), rows

    def sample(self, prompts: Sequence[Sequence[int]], keys: Sequence[int], *, max_new_tokens: int,
               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, draw: int = 0,
               presence_penalty: float = 0.0, batch_size: int | None = None,
               stop_on_eos: bool = True) -> list[Generation]:
        """Plain sampling of each prompt with its key; results in request order.

        `draw` picks the stream of each step's uniforms (`dail.sampling`'s draw convention).
        """
        choose = Sampler(temperature, top_p, top_k, draw, presence_penalty)
        size = batch_size or max(len(prompts), 1)
        out: list[Generation] = [None] * len(prompts)  # type: ignore[list-item]
        for start in range(0, len(prompts), size):
            chunk = [[p] for p in prompts[start:start + size]]
            for gen in self.generate(chunk, keys[start:start + size], choose,
                                     max_new_tokens=max_new_tokens, stop_on_eos=stop_on_eos):
                gen.index += start
                out[gen.index] = gen
        return out


# ---------------------------------------------------------------------------------------------
# reference: slow and plainly correct


@torch.inference_mode()
def reference_sample(model, prompt: Sequence[int], key: int, *, max_new_tokens: int, temperature: float = 1.0,
                     top_p: float = 1.0, top_k: int = 0, draw: int = 0, presence_penalty: float = 0.0,
                     eos_token_ids: Iterable[int] = ()) -> Generation:
    """Plain sampling of one prompt, token by token, each step a full forward of the sequence without cache."""
    device = next(model.parameters()).device
    eos, ids, gen = set(eos_token_ids), list(prompt), Generation(0, logprobs=[[]])
    for t in range(max_new_tokens):
        logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, -1]  # [V]
        logits = logits.to(sampling_dtype(logits.dtype))
        # The penalty written out: minus `presence_penalty` on each distinct token generated so far.
        penalised = logits.clone()
        for token in set(gen.token_ids):
            penalised[token] -= presence_penalty
        q = transform(penalised, temperature, top_p, top_k)  # [V]
        key_t = torch.tensor([key], dtype=torch.long, device=device)
        token = int(inverse_cdf(q, uniforms(key_t, t, draw, q.dtype)[0]))
        gen.token_ids.append(token)
        gen.source.append(0)  # `Sampler`'s tag
        gen.logprobs[0].append(float(torch.log_softmax(logits, -1)[token]))
        ids.append(token)
        if token in eos:
            gen.finish = "eos"
            break
    return gen
