"""Training objectives of DAIL: pure loss functions of logits and a mask.

The formulas and their derivations in words: docs/method.md, "Training objectives".

Every loss takes logits ``[..., V]`` (usually ``[B, T, V]``) and a mask ``[...]`` of the same leading
shape (bool or 0/1) marking the trace positions that count; prompt and padding positions are masked
out. A loss is the *sum* of its per-token values over counted positions divided by a normaliser: by
default the number of counted tokens in this call (the mean over trace tokens), or ``num_tokens``
when the caller passes the global count of valid tokens across gradient-accumulation micro-batches
and processes. With the global count, micro-batch losses add up to the full-batch mean, so
``batch 8 x accumulation 1`` and ``batch 1 x accumulation 8`` give the same update (as in TRL). A call
with no counted token returns a zero that still carries a graph, never NaN.

Memory: the vocabulary can be 150k and a batch thousands of trace positions, so each function first
gathers the counted positions (``logits[mask]`` -> ``[N, V]``; padding and prompts then cost nothing)
and only then casts to float32 (float64 stays float64) for ``log_softmax``. Reference log-probs are
computed under ``no_grad`` and combined in place, so the graph keeps at most three ``[N, V]`` float
tensors alive for the backward pass (student log-probs, probabilities, and one per-vocab weight).
The boolean gather is a host sync; callers that already computed logits at trace positions only can
pass ``[N, V]`` logits with an all-true ``[N]`` mask.

Reference logits (privileged, negative) never receive gradient: they are detached here, whatever the
caller passes.

Conventions for zero probabilities (``-inf`` logits, e.g. a padded vocabulary or a truncated
reference): a term ``p_θ(v) (l_θ(v) − l_ref(v))`` with ``p_θ(v) = 0`` contributes 0 (``0 log 0 = 0``
and ``0 · ∞ = 0``), in value and in gradient. Where ``p_θ(v) > 0`` but a reference gives ``v`` zero
probability the KL is genuinely infinite and the loss is ``±inf`` (not NaN): fill a truncated
(top-k) reference's tail with a finite floor before calling. In ``l_P − γ l_N`` a token the
privileged model rules out (``l_P = −inf``) stays ruled out whatever ``l_N`` says.

``OBJECTIVES`` names each objective a config can choose and says how training calls its loss.

Deliberately not here: models, reference forwards, batching, logging, I/O (see ``dail.train``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

__all__ = [
    "OBJECTIVES",
    "Objective",
    "contrastive_diagnostics",
    "contrastive_loss",
    "contrastive_target_loss",
    "group_advantages",
    "grpo_loss",
    "nll_loss",
]


# --------------------------------------------------------------------------------------------------
# helpers


def _check_shapes(logits: torch.Tensor, mask: torch.Tensor, *others: tuple[str, torch.Tensor]) -> None:
    if logits.dim() < 2:
        raise ValueError(f"logits must be [..., V] with at least one position dim, got {tuple(logits.shape)}")
    if tuple(mask.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"mask shape {tuple(mask.shape)} must equal the logits' leading shape {tuple(logits.shape[:-1])}"
        )
    for name, t in others:
        if tuple(t.shape) != tuple(logits.shape):
            raise ValueError(f"{name} shape {tuple(t.shape)} must equal student_logits shape {tuple(logits.shape)}")


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    # bf16 keeps ~3 significant digits, too few for log-probs summed over a 150k vocabulary.
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return logits.to(dtype).log_softmax(dim=-1)


def _normalise(total: torch.Tensor, count: torch.Tensor, num_tokens: float | torch.Tensor | None) -> torch.Tensor:
    if num_tokens is None:
        denom = count.to(total.dtype)
    else:
        if not isinstance(num_tokens, torch.Tensor) and not num_tokens >= 0:
            raise ValueError(f"num_tokens must be >= 0 (the global count of counted tokens), got {num_tokens}")
        denom = torch.as_tensor(num_tokens, dtype=total.dtype, device=total.device)
    # No counted token anywhere: the sum is an empty-sum zero, keep it zero rather than 0/0.
    return total / torch.where(denom > 0, denom, torch.ones_like(denom))


def _expect(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ_v p(v) w(v) per row, entries with p(v) = 0 counting exactly 0; overwrites ``w``."""
    # Filling w (not the product) keeps 0 · inf out of the backward pass as well as the forward;
    # in place, because w is a fresh temporary everywhere this is called.
    w.masked_fill_(p == 0, 0.0)  # [N, V]
    return (p * w).sum(dim=-1)  # [N]


# --------------------------------------------------------------------------------------------------
# losses


def nll_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_tokens: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Token negative log-likelihood of ``targets`` under the student, ``L_t = −l_θ(y_t)``."""
    _check_shapes(student_logits, mask)
    if tuple(targets.shape) != tuple(mask.shape):
        raise ValueError(f"targets shape {tuple(targets.shape)} must equal mask shape {tuple(mask.shape)}")
    mask = mask.bool()
    log_p = _log_softmax(student_logits[mask])  # [N, V]
    tgt = targets[mask].long()  # [N]
    total = -log_p.gather(-1, tgt[:, None]).sum()
    return _normalise(total, mask.sum(), num_tokens)


def contrastive_loss(
    student_logits: torch.Tensor,
    privileged_logits: torch.Tensor,
    negative_logits: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 0.1,
    *,
    num_tokens: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Reverse KL to the privileged student minus γ times the reverse KL from the negative reference.

    Per counted token, over the full vocabulary (docs/method.md, "The contrastive objective")::

        L_t = Σ_v p_θ(v) (l_θ(v) − l_P(v)) − γ Σ_v p_θ(v) (l_θ(v) − l_N(v))
            = KL(p_θ || p_P) − γ KL(p_θ || p_N),          0 <= γ < 1.

    Minimiser. Collect the terms::

        L_t = (1 − γ) Σ_v p log p − Σ_v p (l_P − γ l_N).

    Let ``r ∝ exp((l_P − γ l_N) / (1 − γ))`` with normaliser Z, so that
    ``l_P − γ l_N = (1 − γ)(log r + log Z)`` and, since ``Σ p = 1``::

        L_t = (1 − γ) [Σ p log p − Σ p log r] − (1 − γ) log Z = (1 − γ) KL(p || r) − (1 − γ) log Z.

    For γ < 1 the factor is positive, so the unique minimiser is ``p = r``, i.e.
    ``p ∝ (p_P / p_N^γ)^(1/(1−γ))``: mass moves away from tokens the negative reference (waypoints
    only) already explains and toward those only the full solution explains. γ = 0 is plain reverse
    KL to the privileged student (self-distillation). At γ = 1 the entropy term vanishes and for
    γ > 1 it changes sign: the loss is no longer strictly convex in p_θ, the tempered target does not
    exist, and the minimiser is a one-hot on ``argmax_v (l_P − γ l_N)(v)``, the token the negative
    reference most underrates, pushed as far as that reference's tail allows. Hence γ must lie in
    [0, 1).

    Computed as ``Σ_v p_θ(v) ((1 − γ) l_θ(v) − (l_P(v) − γ l_N(v)))`` with one no-grad reference term.
    Zero-probability conventions are in the module docstring.
    """
    _check_gamma(gamma)
    _check_shapes(student_logits, mask, ("privileged_logits", privileged_logits), ("negative_logits", negative_logits))
    mask = mask.bool()

    log_p = _log_softmax(student_logits[mask])  # [N, V]
    p = log_p.exp()  # [N, V]
    ref = _contrastive_reference(privileged_logits, negative_logits, mask, gamma)  # [N, V]  l_P − γ l_N
    w = log_p.mul(1.0 - gamma).sub_(ref)  # [N, V]  (1 − γ) l_θ − (l_P − γ l_N)
    del ref  # free it before the product allocates
    total = _expect(p, w).sum()
    return _normalise(total, mask.sum(), num_tokens)


def _check_gamma(gamma: float) -> None:
    if not 0.0 <= gamma < 1.0:
        raise ValueError(
            f"gamma must be in [0, 1), got {gamma}: at gamma >= 1 the entropy term vanishes or changes "
            "sign and the loss collapses onto the token the negative reference finds least likely"
        )


@torch.no_grad()
def _contrastive_reference(
    privileged_logits: torch.Tensor, negative_logits: torch.Tensor, mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """``l_P − γ l_N`` at the counted positions ``[N, V]``, tokens the privileged model rules out kept at −inf."""
    ref = _log_softmax(privileged_logits.detach()[mask])  # [N, V]  l_P
    if gamma > 0.0:  # at γ = 0 skip l_N entirely: 0 · (−inf) would be NaN
        ruled_out = ref == float("-inf")  # [N, V]
        ref.sub_(_log_softmax(negative_logits.detach()[mask]).mul_(gamma))  # l_P − γ l_N
        ref.masked_fill_(ruled_out, float("-inf"))  # −inf − (−inf) = NaN otherwise
    return ref


def contrastive_target_loss(
    student_logits: torch.Tensor,
    privileged_logits: torch.Tensor,
    negative_logits: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 0.1,
    *,
    num_tokens: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Cross-entropy to a contrastive target restricted to the privileged model's plausible tokens.

    Per counted token (docs/method.md, "Contrastive target")::

        V_t  = {v : l_P(v) >= max_u l_P(u) + log β}
        q*_t ∝ exp(l_P + α (l_P − l_N))   on V_t,   0 elsewhere
        L_t  = −Σ_v q*_t(v) l_θ(v)

    ``q*`` carries no gradient. Since ``−Σ q l_θ = H(q) + KL(q || p_θ)``, the minimiser is ``p_θ = q*``
    (mass-covering, where ``contrastive_loss`` is mode-seeking). Without the plausibility cut,
    ``exp(l_P + α (l_P − l_N)) = p_P^(1+α) / p_N^α``, the minimiser of ``contrastive_loss`` at
    ``γ = α / (1 + α)`` (α = 1 <-> γ = 0.5). V_t (β = 0.1 by default) keeps the ratio from promoting
    tokens the privileged model itself finds implausible; β = 1 keeps only its argmax.

    Tokens of V_t that the negative reference rules out (``l_N = −inf``, with α > 0) have an infinite
    score: the target is then the limit, ``q* ∝ exp((1 + α) l_P)`` on those tokens alone.
    """
    if not alpha >= 0.0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta}: the plausible set keeps l_P >= max l_P + log(beta)")
    _check_shapes(student_logits, mask, ("privileged_logits", privileged_logits), ("negative_logits", negative_logits))
    mask = mask.bool()

    q = _contrastive_target(privileged_logits, negative_logits, mask, alpha, beta)  # [N, V]
    log_p = _log_softmax(student_logits[mask])  # [N, V]
    # Out of place: log_p is saved for log_softmax's backward. q = 0 beside l_θ = −inf counts 0.
    total = -(q * log_p.masked_fill(q == 0, 0.0)).sum()
    return _normalise(total, mask.sum(), num_tokens)


@torch.no_grad()
def _contrastive_target(
    privileged_logits: torch.Tensor, negative_logits: torch.Tensor, mask: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """The target ``q*`` of ``contrastive_target_loss`` at the counted positions ``[N, V]``."""
    l_p = _log_softmax(privileged_logits.detach()[mask])  # [N, V]
    plausible = l_p >= l_p.amax(dim=-1, keepdim=True) + math.log(beta)  # [N, V]
    if alpha > 0.0:  # at α = 0 l_N drops out; 0 · (−inf) would be NaN
        l_n = _log_softmax(negative_logits.detach()[mask])  # [N, V]
        excluded = plausible & (l_n == float("-inf"))  # [N, V]
        has_excluded = excluded.any(dim=-1, keepdim=True)  # [N, 1]
        plausible = torch.where(has_excluded, excluded, plausible)
        # (1 + α) l_P − α l_N; when the kept set is the ruled-out tokens, their common l_N = −inf
        # is dropped (zeroed), which is the limit; elsewhere inf/NaN is masked out just below.
        score = l_n.masked_fill_(excluded, 0.0).mul_(-alpha).add_(l_p, alpha=1.0 + alpha)
        del l_n, excluded, has_excluded
    else:
        score = l_p
    return score.masked_fill_(~plausible, float("-inf")).softmax(dim=-1)  # [N, V]


# --------------------------------------------------------------------------------------------------
# diagnostics


@torch.no_grad()
def contrastive_diagnostics(
    student_logits: torch.Tensor,
    privileged_logits: torch.Tensor,
    negative_logits: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor | None = None,
) -> dict[str, float]:
    """Means over counted tokens of KL(p_θ||p_P), KL(p_θ||p_N) and, given targets, l_P − l_N and NLL of them."""
    _check_shapes(student_logits, mask, ("privileged_logits", privileged_logits), ("negative_logits", negative_logits))
    if targets is not None and tuple(targets.shape) != tuple(mask.shape):
        raise ValueError(f"targets shape {tuple(targets.shape)} must equal mask shape {tuple(mask.shape)}")
    mask = mask.bool()
    count = mask.sum()
    log_p = _log_softmax(student_logits[mask])  # [N, V]
    p = log_p.exp()  # [N, V]
    l_ref = _log_softmax(privileged_logits[mask])  # [N, V]
    names = ["kl_privileged", "kl_negative"]
    sums = [_expect(p, log_p - l_ref).sum()]
    if targets is not None:
        tgt = targets[mask].long()[:, None]  # [N, 1]
        margin = l_ref.gather(-1, tgt).sum()
        nll = -log_p.gather(-1, tgt).sum()
    del l_ref  # one reference [N, V] at a time
    l_ref = _log_softmax(negative_logits[mask])  # [N, V]
    sums.append(_expect(p, log_p - l_ref).sum())
    if targets is not None:
        names += ["margin", "nll"]
        sums += [margin - l_ref.gather(-1, tgt).sum(), nll]
    means = torch.stack(sums) / count.clamp_min(1)
    tokens, *means = torch.cat([count[None].to(means.dtype), means]).tolist()  # sync point: one for all
    return {"tokens": tokens, **dict(zip(names, means))}


# --------------------------------------------------------------------------------------------------
# GRPO (groundwork for the RL baselines, not yet a method of a run): advantages per group of rollouts,
# the clipped surrogate


def group_advantages(rewards: torch.Tensor, *, scale: bool = True, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO advantages of rewards ``[P, G]`` (P problems, G rollouts each): ``(r - mean_g) / (std_g + eps)``.

    The standard deviation is the population one (over the G rollouts). A group whose rewards are
    all equal (all fail or all pass) has advantage exactly 0 for every rollout: no gradient. Returns
    (advantages ``[P, G]``, a bool ``[P]`` marking those zero-variance groups, so callers count them).
    ``scale=False`` keeps ``r - mean_g`` (Dr. GRPO's unscaled variant).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [problems, rollouts], got {tuple(rewards.shape)}")
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    centred = r - r.mean(dim=1, keepdim=True)
    flat = (r == r[:, :1]).all(dim=1)
    adv = centred / (r.std(dim=1, unbiased=False, keepdim=True) + eps) if scale else centred
    return adv.masked_fill(flat[:, None], 0.0), flat


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float = 0.2,
    kl_coef: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
    num_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped GRPO surrogate with token-level normalisation, and its diagnostics.

    Inputs are per-token log-probs of the sampled tokens ``[B, T]`` (``logprobs`` with gradient,
    ``old_logprobs`` from the policy that sampled them) and one advantage per rollout ``[B]``. Per
    counted token, with ``ρ = exp(l − l_old)``::

        L_t = −min(ρ A, clip(ρ, 1 − ε, 1 + ε) A) + c KL_t,   KL_t = exp(l_ref − l) − (l_ref − l) − 1

    (the k3 estimator of KL(π || π_ref); c is ``kl_coef``, named apart from the contrastive objective's
    plausibility ``beta``; c > 0 needs ``ref_logprobs``). The loss is the sum
    over every counted token of the batch divided by their number (or ``num_tokens``): long rollouts
    weigh by their length, as in DAPO, not by the rollout. Diagnostics (no gradient): ``clip_fraction``
    (counted tokens whose ratio left [1 − ε, 1 + ε] on the side the clip binds), ``kl`` (mean KL_t, 0
    without a reference) and ``ratio`` (mean ρ).
    """
    _check_grpo_inputs(logprobs, old_logprobs, advantages, mask, kl_coef, ref_logprobs)
    mask = mask.bool()
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    l, old = logprobs.to(dtype)[mask], old_logprobs.detach().to(dtype)[mask]
    adv = advantages.detach().to(dtype)[:, None].expand_as(mask)[mask]
    ratio = torch.exp(l - old)
    unclipped, clipped = ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon) * adv
    per_token = -torch.minimum(unclipped, clipped)
    kl = _k3_kl(l, ref_logprobs, mask)
    if kl_coef > 0:  # a reference is there: _check_grpo_inputs made sure
        per_token = per_token + kl_coef * kl
    loss = _normalise(per_token.sum(), mask.sum(), num_tokens)
    return loss, _grpo_stats(ratio, adv, kl, mask, epsilon)


def _check_grpo_inputs(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    ref_logprobs: torch.Tensor | None,
) -> None:
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and mask "
                         f"{tuple(mask.shape)} must have one shape")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [B] = {tuple(logprobs.shape[:1])}, got {tuple(advantages.shape)}")
    if kl_coef > 0 and ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs")


def _k3_kl(l: torch.Tensor, ref_logprobs: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    """``KL_t = exp(l_ref − l) − (l_ref − l) − 1`` per counted token ``[N]``; zeros without a reference."""
    if ref_logprobs is None:
        return torch.zeros_like(l)
    d = ref_logprobs.detach().to(l.dtype)[mask] - l
    return torch.exp(d) - d - 1


@torch.no_grad()
def _grpo_stats(
    ratio: torch.Tensor, adv: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, epsilon: float
) -> dict[str, torch.Tensor]:
    """``grpo_loss``'s diagnostics: clip fraction, mean KL_t and mean ratio over the counted tokens."""
    n = max(int(mask.sum()), 1)
    binds = ((ratio > 1 + epsilon) & (adv > 0)) | ((ratio < 1 - epsilon) & (adv < 0))
    return {"clip_fraction": binds.sum().to(ratio.dtype) / n, "kl": kl.detach().sum() / n,
            "ratio": ratio.detach().sum() / n}


# --------------------------------------------------------------------------------------------------
# the registry: every objective a config can name


@dataclass(frozen=True)
class Objective:
    """A loss as training uses it: which inputs it needs, which config fields it reads, which targets.

    ``target`` says what the rows' target ids are: the kept traces, or each problem's expert solution
    (+ EOS). ``hyperparameters`` are the config fields ``fn`` takes as keywords of the same names.
    """

    fn: Callable[..., torch.Tensor]
    needs_references: bool  # the privileged and negative logits (two no-grad forwards); else the targets
    hyperparameters: tuple[str, ...] = ()
    target: Literal["trace", "solution"] = "trace"

    def loss(
        self,
        student_logits: torch.Tensor,
        reference_logits: Sequence[torch.Tensor],
        targets: torch.Tensor,
        mask: torch.Tensor,
        settings: object,
        *,
        num_tokens: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``fn`` on student logits ``[..., V]``: against the (privileged, negative) reference logits if it
        needs them, else the target ids ``[...]``; hyperparameters read off ``settings`` (a TrainConfig)."""
        kwargs = {name: getattr(settings, name) for name in self.hyperparameters}
        if self.needs_references:
            return self.fn(student_logits, *reference_logits, mask, **kwargs, num_tokens=num_tokens)
        return self.fn(student_logits, targets, mask, **kwargs, num_tokens=num_tokens)


OBJECTIVES: dict[str, Objective] = {
    "contrastive": Objective(contrastive_loss, needs_references=True, hyperparameters=("gamma",)),
    "contrastive-target": Objective(contrastive_target_loss, needs_references=True, hyperparameters=("alpha", "beta")),
    "nll": Objective(nll_loss, needs_references=False),
    "sft-expert": Objective(nll_loss, needs_references=False, target="solution"),  # the baseline: NLL on solutions
}
