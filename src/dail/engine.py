"""Batched decoding for any causal LM from transformers: prefill, a static KV cache, one forward per step.

What it does. `Engine.generate` decodes a batch of *groups* of rows -- one row per group for plain
sampling, two (learner, privileged) for the mixed rollout of `dail.expand` -- over a preallocated
static KV cache: `prefill` runs each distinct prompt once (the n samples of a problem share theirs)
in length-sorted chunks and assembles the cache, then each step runs ONE forward per generated
token for every live row. A small `choose` callback (`dail.sampling.Choose`) turns a step's logits
`[G, R, V]` into one token per group; that token is appended to every row of its group. Per token
the engine records the token, a tag set by `choose` (the provenance mask: learner or privileged,
in `Generation.source`) and the raw log-prob of the token under every row of the group.

This module is the public entry point and the decode loop; its collaborators own the parts:
`dail.kvcache` the cache, its left-padded layout and every buffer a step touches (`Workspace`),
`dail.decode` the model's forwards and the step itself, `dail.graphs` capturing a step as a CUDA
graph and replaying it, `dail.generation` the per-request record (`Generation`) and its bookkeeping.

Steps run on static buffers, allocated once and advanced in place, so one step of a given batch
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
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor

from .decode import ModelRunner, record_choice
from .generation import Generation, Tally
from .graphs import capture, graphs_enabled, replay
from .kvcache import PromptLayout, Shape, Workspace, Workspaces
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


def default_eos_ids(model, *extra: int | Iterable[int] | None) -> list[int]:
    """EOS ids of a model's generation config, plus any given (ints, lists or None)."""
    found: set[int] = set()
    config = getattr(model, "generation_config", None)
    for ids in (getattr(config, "eos_token_id", None), *extra):
        if ids is None:
            continue
        found.update([ids] if isinstance(ids, int) else ids)
    return sorted(found)


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


def _check_request(prompts: Sequence[Sequence[Sequence[int]]], keys: Sequence[int], max_new_tokens: int) -> None:
    """Refuse a request `generate` cannot decode: keys not one per group, ragged groups, no tokens wanted."""
    if len(keys) != len(prompts) or len({len(g) for g in prompts}) != 1:
        raise ValueError("need one key per group and the same number of rows in every group")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


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
        self.cuda_graphs = graphs_enabled(model.config, self.device, cuda_graphs)
        self.sync_every = sync_every or (16 if cuda else 1)
        if self.sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        self.bucketed = cuda if bucketed is None else bucketed
        self.eos = frozenset(eos_token_ids if eos_token_ids is not None else default_eos_ids(model))
        self._runner = ModelRunner(model, self.device)
        self._workspaces = Workspaces()  # kept between calls only with CUDA graphs

    @property
    def _workspace(self) -> Workspace | None:
        """The workspace kept between calls (with CUDA graphs), if any."""
        return self._workspaces.kept

    def bucket(self, groups: int, cap: int | None = None) -> int:
        """The number of groups a decode step runs at when `groups` are live, at most `cap` (the batch's start)."""
        if not self.bucketed:
            return groups
        size = next(size for size in bucket_sizes(groups) if size >= groups)
        return size if cap is None else min(size, cap)

    def release(self) -> None:
        """Free the kept workspace (static cache, buffers, captured graphs); the next call builds a new one."""
        self._workspaces.release()

    def prefill(self, prompts: Sequence[Sequence[Sequence[int]]], keys: Sequence[int],
                max_new_tokens: int) -> tuple[Workspace, Tensor]:
        """Prefill every distinct prompt once into a workspace, left-padded; logits [N, V] at each prompt's end."""
        layout = PromptLayout.of(prompts, self.device)
        ws, logit_chunks = None, []
        for lo, hi in _chunks([len(r) for r in layout.unique], self.prefill_tokens):
            part, chunk_logits = self._runner.prefill_chunk(layout.unique[lo:hi])  # DynamicCache [C, H, w, D], [C, V]
            if ws is None:  # the first chunk tells the cache's heads, head size and dtype
                ws = self._ensure_workspace(part, chunk_logits, layout.groups, len(prompts[0]),
                                            layout.width + max_new_tokens - 1)
            logit_chunks.append(chunk_logits)
            ws.place(part, layout, lo, hi)
        ws.start(layout, keys)
        return ws, torch.cat(logit_chunks)[layout.src]

    def _ensure_workspace(self, template, logits: Tensor, groups: int, rows_per_group: int, width: int) -> Workspace:
        """A workspace for this decode: the kept one when it fits (its graphs stay valid), else a new one."""
        if self.bucketed:  # round up so that later, slightly longer prompts still fit (and graphs stay valid)
            width = -(-width // 256) * 256
        shape = Shape(self.bucket(groups), rows_per_group, width, self.sync_every, template.layers[0].keys.dtype,
                      logits.dtype, logits.shape[-1])
        return self._workspaces.get(self.model, template, shape, keep=self.cuda_graphs)

    _choose = staticmethod(record_choice)  # the step's choose-and-record alone: token 0 comes from prefill's logits

    def _step(self, ws: Workspace, groups: int, choose: Choose) -> None:
        """One decode step of the first `groups` groups (`ModelRunner.step`): what a CUDA graph captures."""
        self._runner.step(ws, groups, choose)

    def _run(self, ws: Workspace, groups: int, choose: Choose) -> None:
        """`_step`, replayed from a graph captured on first use of this (bucket, choose) when graphs are on."""
        if not self.cuda_graphs:
            return self._step(ws, groups, choose)
        replay(ws, (groups, choose), lambda: self._capture(ws, groups, choose))

    def _capture(self, ws: Workspace, groups: int, choose: Choose):
        """A CUDA graph of `_step` at this bucket; its warm-up runs leave the decode state as they found it."""
        return capture(ws, lambda: self._step(ws, groups, choose), self.device)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[Sequence[int]]], keys: Sequence[int], choose: Choose, *,
                 max_new_tokens: int, stop_on_eos: bool = True) -> Iterator[Generation]:
        """Decode groups of prompts (same number of rows each) and yield each group as it finishes."""
        if not prompts:
            return
        _check_request(prompts, keys, max_new_tokens)
        # Graph capture and replay use the current CUDA device, which need not be the model's.
        with torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext():
            ws, logits = self.prefill(prompts, keys, max_new_tokens)
            ws.busy = True
            try:
                yield from self._decode(ws, logits, len(prompts), len(prompts[0]), choose, max_new_tokens, stop_on_eos)
            finally:
                ws.busy = False

    def _decode(self, ws: Workspace, logits: Tensor, n_groups: int, R: int, choose: Choose, max_new_tokens: int,
                stop_on_eos: bool) -> Iterator[Generation]:
        """The decode loop of `generate` after prefill: windows of steps, one host read each."""
        tally = Tally(n_groups, R, max_new_tokens, self.eos if stop_on_eos else frozenset())
        groups, tally.slots, rows = self._arrange(ws, n_groups, tally.slots, n_groups)
        ws.t.zero_()
        ws.col.zero_()
        self._choose(ws, groups, choose, logits[rows])  # token 0 from the prefill's logits
        done = recorded = 1  # tokens generated; of them, recorded since the last host read
        while True:
            steps = min(self.sync_every - recorded, max_new_tokens - done)
            for _ in range(steps):
                self._run(ws, groups, choose)
            done, recorded = done + steps, recorded + steps
            yield from tally.read(ws.read_window(groups, recorded), recorded, window_start=done - recorded)
            if tally.done:
                return
            groups, tally.slots, _ = self._arrange(ws, groups, tally.slots, n_groups)
            ws.col.zero_()
            recorded = 0

    def _arrange(self, ws: Workspace, groups: int, slots: list[int | None], start: int) -> tuple[int, list, Tensor]:
        """Fit the batch to the bucket of its live groups (at most `start`, the batch's first size): a no-op
        while that bucket is the current size, else the live groups move to the front and copies of the
        last one (slot None) fill the bucket. -> (groups, slots, row indices [groups * R] gathered)."""
        size = self.bucket(sum(s is not None for s in slots), start)
        if size == len(slots):
            return groups, slots, torch.arange(groups * ws.R, device=self.device)
        # Ended groups are dropped, not masked: on CPU a forward costs in proportion to its rows, and
        # trace lengths are long-tailed, so masking would spend most of a batch's compute on rows that
        # already ended. On GPU the buckets bound the number of captured graphs.
        return (size, *ws.regroup(groups, slots, size))

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
