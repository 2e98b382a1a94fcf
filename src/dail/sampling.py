"""Sampling rules and their arithmetic: counter-based randomness, sampling transforms, inverse CDF, the rules.

What it does. Everything that turns a decode step's logits into tokens, as pure tensor functions
and small frozen dataclasses the engine calls (`Choose` callbacks):

* Counter-based randomness. The uniform of draw `d` at step `t` of a sequence is the
  `t * DRAWS_PER_STEP + d + 1`-th output of splitmix64 seeded with the sequence's key
  (`row_key(seed, problem id, sample index, stage=...)`; the stage salt keeps selection, expansion
  and evaluation from sharing streams), computed in int64 tensor arithmetic on the device. So a
  sequence's tokens depend on nothing but its key and its own logits -- not on batch size, order, or
  process count -- and sampling needs no generator object and no host round trip.
* Transforms `T(logits)`: presence penalty (vLLM's meaning), temperature, top-k, top-p, in that
  order; tokens are drawn by inverse CDF over the result.
* Rules: `Sampler` (plain sampling) and the mixed rules of the rollout (docs/method.md,
  "Expansion: the mixed rollout"), `ThresholdChoose` (the authors', the default) and `NucleusChoose`
  (an ablation), built by name with `mixed_rule`.

Draw convention: draws 0 .. MAX_PROPOSALS - 1 are the learner's proposals (draw 0 is also plain
sampling's default), draw PRIVILEGED_DRAW the privileged student's fallback; `Engine.sample(...,
draw=Role.PRIVILEGED.draw)` therefore reproduces a mixed rollout that always rejects.

Tag convention: a rule returns, per token, a tag whose low bit is the row of the role that decided
the token (`Role.LEARNER.row` or `Role.PRIVILEGED.row`) and whose higher bits count the learner
proposals rejected before the decision (`tag_source`, `tag_role`, `tag_rejected`). Plain sampling
tags 0.

What it deliberately does not do: run a model, hold a KV cache, lay out batches or read anything
back to the host (`dail.engine`); render prompts (`dail.prompts`); any I/O. It imports torch only
(not transformers). The rules run inside captured CUDA graphs: tensor ops only, no host reads, no
value-dependent shapes (the one deliberate host read is top-p's CPU-only shortcut, see
`top_p_filter`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .roles import Role

__all__ = [
    "DRAWS_PER_STEP",
    "MAX_PROPOSALS",
    "PRIVILEGED_DRAW",
    "problem_hash",
    "row_key",
    "uniforms",
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "apply_presence_penalty",
    "transform",
    "inverse_cdf",
    "inverse_cdf_many",
    "sampling_dtype",
    "Choose",
    "tag_source",
    "tag_role",
    "tag_rejected",
    "Sampler",
    "ThresholdChoose",
    "NucleusChoose",
    "RULES",
    "mixed_rule",
]

DRAWS_PER_STEP = 16  # counter layout: n = t * DRAWS_PER_STEP + draw
PRIVILEGED_DRAW = DRAWS_PER_STEP - 1  # the privileged model's draw; 0 .. PRIVILEGED_DRAW - 1 are the learner's
MAX_PROPOSALS = PRIVILEGED_DRAW  # learner proposals per step that have a draw of their own

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment (2^64 / golden ratio)
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


# ---------------------------------------------------------------------------------------------
# counter-based randomness


def _signed(x: int) -> int:
    """An unsigned 64-bit value as the int64 with the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >> 63 else x


def _mix64_int(z: int) -> int:
    # splitmix64's finaliser on Python ints (host side, exact).
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def _shr(z: Tensor, s: int) -> Tensor:
    # torch's >> on int64 is arithmetic; masking off the sign-extended bits makes it logical.
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix64(z: Tensor) -> Tensor:
    # The same finaliser in int64 tensor arithmetic: multiplication wraps mod 2^64 like uint64.
    z = (z ^ _shr(z, 30)) * _signed(_M1)
    z = (z ^ _shr(z, 27)) * _signed(_M2)
    return z ^ _shr(z, 31)


def problem_hash(problem_id: str) -> int:
    """A problem id hashed to 63 bits (blake2b), stable across processes and Python versions."""
    digest = hashlib.blake2b(problem_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def row_key(seed: int, problem_id: str, sample: int, stage: str = "") -> int:
    """The int64 key of one sequence's random stream, from (seed, problem id, sample index, stage salt).

    Stages pass their name (`select`, `expand`, `eval`, ...) so that two stages never draw the same
    uniforms for the same (seed, problem, sample); the empty salt adds nothing to the key.
    """
    z = 0
    parts = (seed, problem_hash(problem_id), sample) + ((problem_hash(stage),) if stage else ())
    for part in parts:
        # Adding the increment keeps a zero field from landing on the finaliser's fixed point 0.
        z = _mix64_int((z ^ (part & _MASK64)) + _GOLDEN)
    return _signed(z)


def uniforms(keys: Tensor, t: int | Tensor, draw: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Uniforms in [0, 1) for draw `draw` at step `t` of each key's stream; `keys` [G] int64 -> [G]."""
    if not 0 <= draw < DRAWS_PER_STEP:
        raise ValueError(f"draw must be in [0, {DRAWS_PER_STEP}), got {draw}")
    if isinstance(t, Tensor):
        counter = (t.to(torch.int64) * DRAWS_PER_STEP + (draw + 1)) * _signed(_GOLDEN)  # wraps
        bits = _mix64(keys + counter)
    else:
        # A Python int offset is a kernel argument, not a host-to-device copy.
        bits = _mix64(keys + _signed((t * DRAWS_PER_STEP + draw + 1) * _GOLDEN))
    # Exactly as many bits as the mantissa holds: the result is exact and can never round up to 1.
    mantissa = 1 - int(math.log2(torch.finfo(dtype).eps))  # 53 for float64, 24 for float32
    return _shr(bits, 64 - mantissa).to(dtype) * (2.0**-mantissa)


# ---------------------------------------------------------------------------------------------
# sampling transforms (pure functions over the last dimension)


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Logits divided by the temperature (> 0)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Logits outside the k largest set to -inf (ties with the k-th value are kept); k=0 disables."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # [..., 1]
    return logits.masked_fill(logits < kth, float("-inf"))


_TOP_P_HEAD = 256  # CPU: candidates of the nucleus taken by topk before any full sort


def top_p_filter(probs: Tensor, p: float) -> Tensor:
    """Renormalised probs on the smallest set of most likely tokens whose mass is >= p, zero elsewhere.

    A token is kept when the mass of the tokens more likely than it is < p: the token that crosses
    p is kept, the most likely token always is, and tokens tied with the last kept one are kept too
    (the set never depends on token order).
    """
    if p >= 1.0:
        return probs
    if p <= 0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    flat = probs.reshape(-1, probs.shape[-1])  # [M, V]
    vocab = flat.shape[-1]
    # A full sort of the vocabulary costs as much as a decode step on CPU; the nucleus of an LM is
    # almost always inside its top few hundred tokens. So on CPU, threshold from the top-k head and
    # sort in full only the rows whose nucleus is wider. Elsewhere sort everything: no host branch.
    n_head = min(vocab, _TOP_P_HEAD) if flat.device.type == "cpu" else vocab
    theta, inside = _nucleus_threshold(flat.topk(n_head, dim=-1).values, p)  # [M], [M]
    if n_head < vocab and not bool(inside.all()):  # CPU only: a host read, not a device sync
        wide = (~inside).nonzero()[:, 0]
        theta[wide] = _nucleus_threshold(flat[wide].sort(dim=-1, descending=True).values, p)[0]
    kept = flat * (flat >= theta[:, None])  # [M, V]
    return (kept / kept.sum(-1, keepdim=True)).view_as(probs)


def _nucleus_threshold(head: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """(smallest kept probability, whether the nucleus ends inside `head`) from probs sorted descending [M, k]."""
    total = head.cumsum(-1)  # [M, k]
    before = F.pad(total[:, :-1], (1, 0))  # [M, k] mass of the tokens sorted before each one
    n_kept = (before < p).sum(-1)  # [M] >= 1: the first token has nothing before it
    theta = head.gather(-1, (n_kept - 1)[:, None])[:, 0]  # [M]
    return theta, total[:, -1] >= p


def apply_presence_penalty(logits: Tensor, penalty: float, seen: Tensor | None) -> Tensor:
    """Logits less `penalty` on every token already generated (`seen` [..., V] bool); vLLM's presence penalty."""
    if penalty == 0 or seen is None:
        return logits
    return logits - penalty * seen.to(logits.dtype)


def transform(logits: Tensor, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
              presence_penalty: float = 0.0, seen: Tensor | None = None) -> Tensor:
    """T(logits) -> probabilities: presence penalty, temperature, top-k, top-p; exactly 0 outside the kept set."""
    logits = apply_presence_penalty(logits, presence_penalty, seen)
    logits = top_k_filter(apply_temperature(logits, temperature), top_k)
    return top_p_filter(torch.softmax(logits, dim=-1), top_p)


def sampling_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the sampling math for logits of `dtype`: float64 stays, anything else is float32."""
    # bf16 has 8 mantissa bits, too coarse for a CDF over 100k+ tokens.
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------
# inverse CDF


def inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """Token drawn from each row of `probs` [..., V] by inverse CDF of the uniforms `u` [...] -> [...]."""
    return inverse_cdf_many(probs, u.unsqueeze(-1)).squeeze(-1)


def inverse_cdf_many(probs: Tensor, u: Tensor) -> Tensor:
    """M tokens drawn from each row of `probs` [..., V], one per uniform of `u` [..., M] -> [..., M]."""
    cdf = probs.cumsum(-1)  # [..., V], nondecreasing; constant after the last token with mass
    total = cdf[..., -1:]  # [..., 1]; scaling u by it tolerates rows that do not sum to exactly 1
    # u * total < total in exact arithmetic; clamping below total keeps rounding from ever picking
    # an index past the last token with mass (which could be a zero-probability token or V).
    x = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))  # [..., M]
    return torch.searchsorted(cdf, x, right=True)  # [..., M]


# ---------------------------------------------------------------------------------------------
# rules: the engine's `choose` callbacks

Choose = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""choose(logits [G, R, V], keys [G] int64, t [] int64, seen [G, V] bool) -> (token [G] int64, tag [G] int64).

`seen` marks the tokens each group has generated so far (for a presence penalty). The tag is
recorded per token (`Generation.source`); see the module docstring for its layout.

It runs inside a captured CUDA graph on GPU: tensor ops only, no host reads, no shapes that depend on
values, and `t` (the step) is a 0-d device tensor. Graphs are kept per `choose`, so a callback that
compares equal by its settings (a frozen dataclass, like `Sampler`) reuses them across calls."""


def tag_source(tag: int) -> int:
    """The row (`Role.LEARNER.row` or `Role.PRIVILEGED.row`) of the role that decided a token, from its tag."""
    return tag & 1


_BY_ROW = (Role.LEARNER, Role.PRIVILEGED)  # the role of each row of a rollout group


def tag_role(tag: int) -> Role:
    """The role that decided a token (`Role.LEARNER` or `Role.PRIVILEGED`), from its tag."""
    return _BY_ROW[tag_source(tag)]


def tag_rejected(tag: int) -> int:
    """How many learner proposals were rejected before the token was decided."""
    return tag >> 1


@dataclass(frozen=True)
class Sampler:
    """The `choose` of plain sampling: one row per group, token ~ T(logits) with the given draw; tag 0."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    draw: int = 0
    presence_penalty: float = 0.0

    def __call__(self, logits: Tensor, keys: Tensor, t: Tensor, seen: Tensor) -> tuple[Tensor, Tensor]:
        q = transform(logits[:, 0], self.temperature, self.top_p, self.top_k, self.presence_penalty, seen)  # [G, V]
        token = inverse_cdf(q, uniforms(keys, t, self.draw, q.dtype))  # [G]
        return token, torch.zeros_like(token)


@dataclass(frozen=True)
class ThresholdChoose:
    """The authors' rule as an engine `choose` over groups of (learner, privileged) rows.

    Proposals a_1..a_R ~ q_L = T(learner logits), draws 0..R-1; the first with p_P(a_r) >= tau under
    the privileged student's raw softmax is kept (source L); if none is, the token is drawn from
    q_P = T(privileged logits), draw PRIVILEGED_DRAW (source P). tau = 0 keeps every first proposal,
    tau >= 1 keeps none (the authors' special cases, so a degenerate p_P = 1.0 does not slip through).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 20
    tau: float = 0.8
    retries: int = 5

    def __post_init__(self):
        if not 1 <= self.retries <= MAX_PROPOSALS:
            raise ValueError(f"retries must be in [1, {MAX_PROPOSALS}], got {self.retries}")

    def __call__(self, logits: Tensor, keys: Tensor, t: Tensor, seen: Tensor) -> tuple[Tensor, Tensor]:
        learner, privileged = Role.LEARNER.row, Role.PRIVILEGED.row
        q = transform(logits, self.temperature, self.top_p, self.top_k)  # [G, 2, V]
        # Every proposal is drawn, used or not: a per-group branch would cost a host sync, and the
        # draws are one cumsum and one searchsorted whatever R is.
        u = torch.stack([uniforms(keys, t, r, q.dtype) for r in range(self.retries)], -1)  # [G, R]
        proposals = inverse_cdf_many(q[:, learner], u)  # [G, R]
        fallback = inverse_cdf(q[:, privileged], uniforms(keys, t, Role.PRIVILEGED.draw, q.dtype))  # [G]
        if self.tau >= 1:
            passes = torch.zeros_like(proposals, dtype=torch.bool)
        else:
            raw = logits[:, privileged]  # [G, V] untransformed
            # p_P of the R proposals only: no [G, V] softmax on the decode step
            p_raw = (raw.gather(-1, proposals) - raw.logsumexp(-1, keepdim=True)).exp()  # [G, R]
            passes = p_raw >= self.tau  # [G, R]
        accepted = passes.any(-1)  # [G]
        first = passes.to(torch.int8).argmax(-1)  # [G] index of the first passing proposal (0 if none)
        token = torch.where(accepted, proposals.gather(-1, first[:, None])[:, 0], fallback)
        rejected = torch.where(accepted, first, torch.full_like(first, self.retries))
        return token, rejected * 2 + (~accepted).long()  # source bit: the privileged row when none passed


@dataclass(frozen=True)
class NucleusChoose:
    """The earlier rule (an ablation): keep a ~ q_L when q_P(a) > tau on the transformed privileged distribution."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    tau: float = 0.0

    def __call__(self, logits: Tensor, keys: Tensor, t: Tensor, seen: Tensor) -> tuple[Tensor, Tensor]:
        learner, privileged = Role.LEARNER.row, Role.PRIVILEGED.row
        q = transform(logits, self.temperature, self.top_p, self.top_k)  # [G, 2, V]
        a = inverse_cdf(q[:, learner], uniforms(keys, t, Role.LEARNER.draw, q.dtype))  # [G]
        # b is drawn for every group, needed or not: a branch per group would cost a host sync.
        b = inverse_cdf(q[:, privileged], uniforms(keys, t, Role.PRIVILEGED.draw, q.dtype))  # [G]
        accepted = q[:, privileged].gather(-1, a[:, None])[:, 0] > self.tau  # [G]
        return torch.where(accepted, a, b), (~accepted).long() * 3  # rejected 1 proposal, source P


RULES = ("threshold", "nucleus")


def mixed_rule(rule: str, *, temperature: float, top_p: float, top_k: int, tau: float,
               retries: int) -> ThresholdChoose | NucleusChoose:
    """The mixed rule named `rule` with these settings (`retries` is the threshold rule's alone).

    Equal settings give equal callbacks, which share the engine's CUDA graphs.
    """
    if rule == "threshold":
        return ThresholdChoose(temperature, top_p, top_k, tau, retries)
    if rule == "nucleus":
        return NucleusChoose(temperature, top_p, top_k, tau)
    raise ValueError(f"unknown rule {rule!r}; rules are {', '.join(RULES)}")
