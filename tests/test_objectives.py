"""Tests for dail.objectives: each loss against its formula in docs/method.md written as a slow loop, its limits,
its minimiser, its gradients and its normalisation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dail.objectives import (
    OBJECTIVES,
    contrastive_diagnostics,
    contrastive_loss,
    contrastive_target_loss,
    nll_loss,
)

F64 = torch.float64
INF = float("inf")


# --------------------------------------------------------------------------------------------------
# slow references: straight from the formulas of docs/method.md, plain Python floats, one token at a time


def _log_softmax_row(z: list[float]) -> list[float]:
    m = max(z)
    lse = m + math.log(sum(math.exp(x - m) for x in z))
    return [x - lse for x in z]


def _slow_mean(per_token, mask: list[list[bool]]) -> float:
    """Mean of ``per_token(b, t)`` over counted positions; 0 when nothing counts."""
    values = [per_token(b, t) for b, row in enumerate(mask) for t, m in enumerate(row) if m]
    return sum(values) / len(values) if values else 0.0


def slow_nll(s, targets, mask) -> float:
    """L_t = −l_θ(y_t)."""
    return _slow_mean(lambda b, t: -_log_softmax_row(s[b][t])[targets[b][t]], mask)


def slow_contrastive(s, P, N, mask, gamma: float) -> float:
    """L_t = Σ_v p_θ(v) (l_θ(v) − l_P(v)) − γ Σ_v p_θ(v) (l_θ(v) − l_N(v))."""

    def per_token(b, t):
        l_s, l_p, l_n = (_log_softmax_row(x[b][t]) for x in (s, P, N))
        kl_p = sum(math.exp(l_s[v]) * (l_s[v] - l_p[v]) for v in range(len(l_s)))
        kl_n = sum(math.exp(l_s[v]) * (l_s[v] - l_n[v]) for v in range(len(l_s)))
        return kl_p - gamma * kl_n

    return _slow_mean(per_token, mask)


def slow_contrastive_target(s, P, N, mask, alpha: float, beta: float) -> float:
    """V_t = {v : l_P(v) >= max l_P + log β}; q* ∝ exp(l_P + α (l_P − l_N)) on V_t;
    L_t = −Σ_v q*(v) l_θ(v)."""

    def per_token(b, t):
        l_s, l_p, l_n = (_log_softmax_row(x[b][t]) for x in (s, P, N))
        plausible = [v for v in range(len(l_p)) if l_p[v] >= max(l_p) + math.log(beta)]
        score = {v: l_p[v] + alpha * (l_p[v] - l_n[v]) for v in plausible}
        top = max(score.values())
        weight = {v: math.exp(x - top) for v, x in score.items()}
        z = sum(weight.values())
        return -sum(w / z * l_s[v] for v, w in weight.items())

    return _slow_mean(per_token, mask)


# --------------------------------------------------------------------------------------------------
# inputs


@st.composite
def batches(draw):
    """Random (student, privileged, negative, targets, mask); masks include empty rows and lone tokens."""
    b, t, v = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(2, 6))
    mask = draw(st.lists(st.lists(st.booleans(), min_size=t, max_size=t), min_size=b, max_size=b))
    scale = draw(st.sampled_from([0.3, 1.0, 4.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    s, p, n = (torch.randn(b, t, v, generator=g, dtype=F64) * scale for _ in range(3))
    targets = torch.randint(v, (b, t), generator=g)
    return s, p, n, targets, torch.tensor(mask, dtype=torch.bool)


def random_batch(b=3, t=5, v=7, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    s, p, n = (torch.randn(b, t, v, generator=g, dtype=F64).to(dtype) for _ in range(3))
    targets = torch.randint(v, (b, t), generator=g)
    mask = torch.rand(b, t, generator=g) < 0.6
    mask[0] = False  # a fully masked row (prompt only)
    mask[1] = False
    mask[1, 2] = True  # a single-token trace
    return s, p, n, targets, mask


def call(name: str, s, p, n, targets, mask, **kw) -> torch.Tensor:
    """One signature over the three objectives: nll reads targets, the contrastive ones the references."""
    if name == "nll":
        return nll_loss(s, targets, mask, **kw)
    return OBJECTIVES[name].fn(s, p, n, mask, **kw)


def slow(name: str, s, p, n, targets, mask, **kw) -> float:
    args = [x.tolist() for x in (s, p, n)]
    m = mask.tolist()
    if name == "nll":
        return slow_nll(args[0], targets.tolist(), m)
    if name == "contrastive":
        return slow_contrastive(*args, m, kw.get("gamma", 0.1))
    return slow_contrastive_target(*args, m, kw.get("alpha", 1.0), kw.get("beta", 0.1))


NAMES = ["nll", "contrastive", "contrastive-target"]


# --------------------------------------------------------------------------------------------------
# against the slow loops


@settings(max_examples=40, deadline=None)
@given(batch=batches(), gamma=st.sampled_from([0.0, 0.25, 0.5, 0.9]))
def test_contrastive_matches_slow_loop(batch, gamma):
    s, p, n, _, mask = batch
    expected = slow_contrastive(s.tolist(), p.tolist(), n.tolist(), mask.tolist(), gamma)
    got = contrastive_loss(s, p, n, mask, gamma)
    assert got.dtype == F64
    assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-11)
    # float32 inputs: same value to float32 accuracy
    got32 = contrastive_loss(s.float(), p.float(), n.float(), mask.float(), gamma)  # 0/1 mask too
    assert got32.dtype == torch.float32
    assert got32.item() == pytest.approx(expected, rel=1e-4, abs=1e-4)


@settings(max_examples=40, deadline=None)
@given(batch=batches(), alpha=st.sampled_from([0.0, 0.5, 1.0, 3.0]), beta=st.sampled_from([0.01, 0.1, 0.5, 1.0]))
def test_contrastive_target_matches_slow_loop(batch, alpha, beta):
    s, p, n, _, mask = batch
    expected = slow_contrastive_target(s.tolist(), p.tolist(), n.tolist(), mask.tolist(), alpha, beta)
    got = contrastive_target_loss(s, p, n, mask, alpha, beta)
    assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-11)


@settings(max_examples=30, deadline=None)
@given(batch=batches())
def test_nll_matches_slow_loop(batch):
    s, _, _, targets, mask = batch
    expected = slow_nll(s.tolist(), targets.tolist(), mask.tolist())
    assert nll_loss(s, targets, mask).item() == pytest.approx(expected, rel=1e-9, abs=1e-11)


@pytest.mark.parametrize("name", NAMES)
def test_empty_rows_and_single_token_traces(name):
    """The fixed batch has an all-prompt row and a one-token trace; only counted tokens enter the mean."""
    s, p, n, targets, mask = random_batch()
    assert call(name, s, p, n, targets, mask).item() == pytest.approx(slow(name, s, p, n, targets, mask), rel=1e-9)
    # values under masked positions are irrelevant: garbage there changes nothing
    junk = [x.masked_fill(~mask[..., None], 1e4) for x in (s, p, n)]
    assert call(name, *junk, targets, mask).item() == pytest.approx(call(name, s, p, n, targets, mask).item())


# --------------------------------------------------------------------------------------------------
# contrastive: limits and minimiser


def test_gamma_zero_is_reverse_kl_to_privileged():
    """γ = 0: L_t = Σ_v p_θ (l_θ − l_P) = KL(p_θ || p_P); computed here by torch.distributions."""
    s, p, n, _, mask = random_batch()
    kl = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=s[mask]), torch.distributions.Categorical(logits=p[mask])
    )
    torch.testing.assert_close(contrastive_loss(s, p, n, mask, gamma=0.0), kl.mean())


def test_identical_student_and_privileged_gives_zero():
    s, _, n, _, mask = random_batch()
    assert contrastive_loss(s, s.clone(), n, mask, gamma=0.0).item() == pytest.approx(0.0, abs=1e-12)


def test_identical_references_scale_the_kl():
    """l_N = l_P: L_t = KL(p_θ||p_P) − γ KL(p_θ||p_P) = (1 − γ) KL(p_θ||p_P)."""
    s, p, _, _, mask = random_batch()
    kl = contrastive_loss(s, p, p, mask, gamma=0.0)
    torch.testing.assert_close(contrastive_loss(s, p, p, mask, gamma=0.3), 0.7 * kl)


@pytest.mark.parametrize("gamma", [1.0, 1.5, -0.1, float("nan")])
def test_gamma_out_of_range_raises(gamma):
    s, p, n, _, mask = random_batch()
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\)"):
        contrastive_loss(s, p, n, mask, gamma=gamma)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5, 0.9])
def test_contrastive_minimiser(gamma):
    """L = (1 − γ) KL(p || r) − (1 − γ) log Z, r ∝ exp((l_P − γ l_N)/(1 − γ)) = (p_P / p_N^γ)^(1/(1−γ)).

    So a free logit vector optimised on L ends at softmax = r, with loss −(1 − γ) log Z.
    """
    g = torch.Generator().manual_seed(1)
    v = 8
    l_p = torch.randn(v, generator=g, dtype=F64).log_softmax(-1)
    l_n = torch.randn(v, generator=g, dtype=F64).log_softmax(-1)
    z = torch.zeros(v, dtype=F64, requires_grad=True)
    mask = torch.ones(1, 1, dtype=torch.bool)
    opt = torch.optim.LBFGS(
        [z], max_iter=500, tolerance_grad=1e-13, tolerance_change=1e-15, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = contrastive_loss(z.view(1, 1, v), l_p.view(1, 1, v), l_n.view(1, 1, v), mask, gamma)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    r = (l_p.exp() / l_n.exp() ** gamma) ** (1 / (1 - gamma))
    torch.testing.assert_close(z.detach().softmax(-1), r / r.sum(), atol=1e-5, rtol=0)
    log_z = torch.logsumexp((l_p - gamma * l_n) / (1 - gamma), -1)
    # the loss is quadratic in the remaining error; γ = 0.9 (a peaked r) stops a little short
    assert closure().item() == pytest.approx(-(1 - gamma) * log_z.item(), abs=1e-6)


def test_alpha_one_target_is_gamma_half_minimiser():
    """exp(l_P + α(l_P − l_N)) = (p_P / p_N^γ)^(1/(1−γ)) for γ = α/(1+α); with every token plausible both
    losses are stationary at student logits 2 l_P − l_N (α = 1, γ = 0.5)."""
    _, p, n, _, mask = random_batch()
    z = (2 * p.log_softmax(-1) - n.log_softmax(-1)).requires_grad_()
    for loss in (
        contrastive_loss(z, p, n, mask, gamma=0.5),
        contrastive_target_loss(z, p, n, mask, alpha=1.0, beta=1e-30),
    ):
        (grad,) = torch.autograd.grad(loss, z)
        torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-12, rtol=0)


# --------------------------------------------------------------------------------------------------
# contrastive-target specifics


def test_single_plausible_token_is_nll():
    """β = 1 keeps only argmax l_P; so does a dominant privileged token at β = 0.1 (others < max + log β).
    q* is then one-hot and L_t = −l_θ(argmax l_P), the NLL of that token."""
    s, p, n, _, mask = random_batch()
    argmax = p.argmax(-1)
    torch.testing.assert_close(contrastive_target_loss(s, p, n, mask, beta=1.0), nll_loss(s, argmax, mask))
    dominant = p + 10.0 * torch.nn.functional.one_hot(argmax, p.shape[-1])
    torch.testing.assert_close(contrastive_target_loss(s, dominant, n, mask, beta=0.1), nll_loss(s, argmax, mask))


@pytest.mark.parametrize(
    "kw, message",
    [({"alpha": -0.5}, "alpha must be >= 0"), ({"beta": 0.0}, r"beta must be in \(0, 1\]"), ({"beta": 1.5}, "beta")],
)
def test_contrastive_target_validates(kw, message):
    s, p, n, _, mask = random_batch()
    with pytest.raises(ValueError, match=message):
        contrastive_target_loss(s, p, n, mask, **kw)


# --------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("name", NAMES)
def test_references_get_no_gradient(name):
    s, p, n, targets, mask = random_batch()
    s, p, n = (x.clone().requires_grad_() for x in (s, p, n))
    call(name, s, p, n, targets, mask).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert p.grad is None and n.grad is None


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_student(name):
    s, p, n, targets, mask = random_batch(b=2, t=3, v=5, seed=3)
    s.requires_grad_()
    kw = {"gamma": 0.4} if name == "contrastive" else {"beta": 0.3} if name == "contrastive-target" else {}
    assert torch.autograd.gradcheck(lambda x: call(name, x, p, n, targets, mask, **kw), (s,))


def test_contrastive_gradient_formula():
    """dL_t/dz_k = p_k (w_k − L_t) with w = (1 − γ) l_θ − (l_P − γ l_N): a hand derivation, checked."""
    g = torch.Generator().manual_seed(4)
    s, p, n = (torch.randn(1, 1, 6, generator=g, dtype=F64) for _ in range(3))
    mask = torch.ones(1, 1, dtype=torch.bool)
    s.requires_grad_()
    gamma = 0.5
    loss = contrastive_loss(s, p, n, mask, gamma)
    (grad,) = torch.autograd.grad(loss, s)
    l_s, l_p, l_n = (x.detach().log_softmax(-1) for x in (s, p, n))
    w = (1 - gamma) * l_s - (l_p - gamma * l_n)
    torch.testing.assert_close(grad, l_s.exp() * (w - loss.detach()))


# --------------------------------------------------------------------------------------------------
# normalisation


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_micro_batches_with_global_count_sum_to_full_batch(name, as_tensor):
    """Σ_micro (Σ_{t in micro} L_t) / N_global = (Σ_t L_t) / N_global: the full-batch mean, value and gradient."""
    s, p, n, targets, mask = random_batch(b=5, t=6, v=7, seed=5)
    s = s.clone().requires_grad_()
    full = call(name, s, p, n, targets, mask)
    (full_grad,) = torch.autograd.grad(full, s)

    count = mask.sum() if as_tensor else float(mask.sum())
    parts = [slice(0, 1), slice(1, 3), slice(3, 5)]  # uneven: the first holds no counted token
    total = sum(call(name, s[i], p[i], n[i], targets[i], mask[i], num_tokens=count) for i in parts)
    (split_grad,) = torch.autograd.grad(total, s)
    torch.testing.assert_close(total, full)
    torch.testing.assert_close(split_grad, full_grad)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_tokens", [None, 0.0, 12.0])
def test_no_counted_tokens_gives_zero(name, num_tokens):
    s, p, n, targets, _ = random_batch()
    s = s.clone().requires_grad_()
    mask = torch.zeros(s.shape[:-1], dtype=torch.bool)
    loss = call(name, s, p, n, targets, mask, num_tokens=num_tokens)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()  # the graph is intact and harmless
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_negative_num_tokens_raises():
    s, _, _, targets, mask = random_batch()
    with pytest.raises(ValueError, match="num_tokens"):
        nll_loss(s, targets, mask, num_tokens=-1.0)


def test_shape_mismatch_raises():
    s, p, n, _, mask = random_batch()
    with pytest.raises(ValueError, match="mask shape"):
        contrastive_loss(s, p, n, mask[:, :-1])
    with pytest.raises(ValueError, match="privileged_logits shape"):
        contrastive_loss(s, p[..., :-1], n, mask)


# --------------------------------------------------------------------------------------------------
# precision and infinities


@pytest.mark.parametrize("name", NAMES)
def test_bf16_inputs(name):
    """bf16 logits are upcast before log_softmax: the loss equals the float32 loss of the same (rounded)
    values, and stays near the loss of the unrounded ones."""
    s, p, n, targets, mask = random_batch(b=4, t=8, v=50, seed=6, dtype=torch.float32)
    s16, p16, n16 = (x.bfloat16() for x in (s, p, n))
    s16.requires_grad_()
    loss16 = call(name, s16, p16, n16, targets, mask)
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)
    torch.testing.assert_close(loss16, call(name, s16.float(), p16.float(), n16.float(), targets, mask))
    torch.testing.assert_close(loss16, call(name, s, p, n, targets, mask), atol=2e-2, rtol=2e-2)
    loss16.backward()
    assert s16.grad.dtype == torch.bfloat16 and torch.isfinite(s16.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_padded_vocabulary_is_ignored(name):
    """Entries at −inf in every role (a padded vocabulary) have p = 0 and contribute 0·(−inf) := 0:
    the loss equals the loss without them, and every gradient is finite."""
    s, p, n, targets, mask = random_batch()
    pad = torch.full((*s.shape[:-1], 3), -INF, dtype=F64)
    s_pad = torch.cat([s, pad], -1).requires_grad_()
    loss = call(name, s_pad, torch.cat([p, pad], -1), torch.cat([n, pad], -1), targets, mask)
    torch.testing.assert_close(loss, call(name, s, p, n, targets, mask))
    loss.backward()
    assert torch.isfinite(s_pad.grad).all()


def test_contrastive_negative_inf_at_gamma_zero_is_ignored():
    """At γ = 0 l_N drops out, even where it is −inf (no 0·inf)."""
    s, p, n, _, mask = random_batch()
    n = n.clone()
    n[..., 0] = -INF
    torch.testing.assert_close(contrastive_loss(s, p, n, mask, gamma=0.0), contrastive_loss(s, p, p, mask, gamma=0.0))


def test_contrastive_privileged_zero_mass_gives_inf_not_nan():
    """p_θ(v) > 0 where p_P(v) = 0: KL(p_θ||p_P) is infinite, and so is the loss (not NaN)."""
    s, p, n, _, mask = random_batch()
    p, n = p.clone(), n.clone()
    p[..., 0] = -INF
    n[..., 0] = -INF  # both references rule v out: l_P − γ l_N stays −inf
    assert contrastive_loss(s, p, n, mask, gamma=0.5).item() == INF


def test_contrastive_target_negative_rules_out_plausible_token():
    """l_N(v) = −inf on a plausible v: its score is +inf, q* is the limit, one-hot on v; L_t = −l_θ(v)."""
    s, p, n, _, mask = random_batch()
    v = p.argmax(-1)  # always plausible
    n = n.scatter(-1, v[..., None], -INF)
    torch.testing.assert_close(contrastive_target_loss(s, p, n, mask), nll_loss(s, v, mask))
    # α = 0: l_N is not used at all
    assert torch.isfinite(contrastive_target_loss(s, p, n, mask, alpha=0.0))


# --------------------------------------------------------------------------------------------------
# diagnostics


def test_diagnostics():
    s, p, n, targets, mask = random_batch()
    d = contrastive_diagnostics(s, p, n, mask, targets)
    assert set(d) == {"tokens", "kl_privileged", "kl_negative", "margin", "nll"}
    assert all(isinstance(x, float) for x in d.values())
    assert d["tokens"] == mask.sum().item()
    assert d["kl_privileged"] == pytest.approx(contrastive_loss(s, p, n, mask, gamma=0.0).item())
    assert d["kl_privileged"] - 0.1 * d["kl_negative"] == pytest.approx(contrastive_loss(s, p, n, mask).item())  # γ = 0.1 default
    assert d["nll"] == pytest.approx(nll_loss(s, targets, mask).item())
    # margin = mean of l_P(y_t) − l_N(y_t) = NLL under N − NLL under P
    assert d["margin"] == pytest.approx(nll_loss(n, targets, mask).item() - nll_loss(p, targets, mask).item())

    assert set(contrastive_diagnostics(s, p, n, mask)) == {"tokens", "kl_privileged", "kl_negative"}
    empty = contrastive_diagnostics(s, p, n, torch.zeros_like(mask), targets)
    assert empty == {"tokens": 0.0, "kl_privileged": 0.0, "kl_negative": 0.0, "margin": 0.0, "nll": 0.0}


def test_registry_names_every_objective_a_config_can_choose():
    from typing import get_args

    from dail.config import TrainConfig

    assert tuple(OBJECTIVES) == ("contrastive", "contrastive-target", "nll", "sft-expert")
    assert set(get_args(TrainConfig.model_fields["objective"].annotation)) == set(OBJECTIVES)
    for name, objective in OBJECTIVES.items():  # each hyperparameter is a config field of that name
        assert set(objective.hyperparameters) <= set(TrainConfig.model_fields), name
    assert [n for n, o in OBJECTIVES.items() if o.target == "solution"] == ["sft-expert"]
    assert OBJECTIVES["sft-expert"].fn is nll_loss and not OBJECTIVES["sft-expert"].needs_references


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_registry_loss_calls_its_function_with_the_configs_hyperparameters(name):
    from types import SimpleNamespace

    s, p, n, targets, mask = random_batch()
    settings = SimpleNamespace(gamma=0.3, alpha=0.5, beta=0.2)
    objective = OBJECTIVES[name]
    got = objective.loss(s, (p, n), targets, mask, settings, num_tokens=7)
    want = {
        "contrastive": lambda: contrastive_loss(s, p, n, mask, 0.3, num_tokens=7),
        "contrastive-target": lambda: contrastive_target_loss(s, p, n, mask, 0.5, 0.2, num_tokens=7),
        "nll": lambda: nll_loss(s, targets, mask, num_tokens=7),
        "sft-expert": lambda: nll_loss(s, targets, mask, num_tokens=7),
    }[name]()
    assert torch.equal(got, want)
