"""GRPO's loss and advantages (groundwork for the RL baselines) against the formulas written out token by token."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dail.objectives import group_advantages, grpo_loss


def reference(logp, old, adv, mask, eps, beta, ref):
    """The surrogate one token at a time in plain Python floats."""
    total, count = 0.0, 0
    for b in range(len(logp)):
        for t in range(len(logp[b])):
            if not mask[b][t]:
                continue
            ratio = math.exp(logp[b][t] - old[b][t])
            clipped = min(max(ratio, 1 - eps), 1 + eps)
            term = -min(ratio * adv[b], clipped * adv[b])
            if beta:
                d = ref[b][t] - logp[b][t]
                term += beta * (math.exp(d) - d - 1)
            total += term
            count += 1
    return total / count if count else 0.0


def test_a_hand_computed_batch():
    # rollout 0: A = 1, ratios e^0.5 (clipped to 1.2) and 1; rollout 1: A = -2, ratio e^-0.5 (clipped to 0.8)
    logp = torch.tensor([[0.5, -1.0], [-0.5, 0.0]], dtype=torch.float64)
    old = torch.tensor([[0.0, -1.0], [0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = grpo_loss(logp, old, torch.tensor([1.0, -2.0], dtype=torch.float64), mask)
    # -min(e^.5, 1.2) = -1.2; -min(1, 1) = -1; -min(-2 e^-.5, -1.6) = 2 e^-.5 ... min picks the smaller
    expected = (-1.2 - 1.0 + -min(-2 * math.exp(-0.5), -2 * 0.8)) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 3)  # tokens 0 and 2 sit outside on the binding side


@given(st.integers(1, 4), st.integers(1, 6), st.floats(0.05, 0.5), st.sampled_from([0.0, 0.04, 0.3]),
       st.integers(0, 10_000))
@settings(max_examples=80, deadline=None)
def test_random_batches_equal_the_token_by_token_formula(b, t, eps, beta, seed):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    old = logp + (torch.rand(b, t, generator=g, dtype=torch.float64) - 0.5)
    ref = logp + (torch.rand(b, t, generator=g, dtype=torch.float64) - 0.5)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) < 0.7
    loss, _ = grpo_loss(logp, old, adv, mask, epsilon=eps, kl_coef=beta, ref_logprobs=ref)
    want = reference(logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), eps, beta, ref.tolist())
    assert loss.item() == pytest.approx(want, abs=1e-10)


def test_one_step_per_batch_has_ratio_one_and_the_policy_gradient():
    # logprobs == old_logprobs (one optimizer step per rollout batch): no clip, ratio 1, and the
    # gradient is -A_b / N per counted token, the plain token-level policy gradient.
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -0.9]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.tensor([0.5, -1.5], dtype=torch.float64)
    loss, stats = grpo_loss(logp, logp.detach(), adv, mask)
    loss.backward()
    assert stats["ratio"].item() == 1.0 and stats["clip_fraction"].item() == 0.0
    want = -adv[:, None].expand(2, 3) * mask / mask.sum()
    assert torch.allclose(logp.grad, want)
    assert loss.item() == pytest.approx(-(2 * 0.5 + 3 * -1.5) / 5)


def test_kl_term_needs_a_reference_and_is_zero_at_the_reference():
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="kl_coef > 0 needs ref_logprobs"):
        grpo_loss(logp, logp, torch.zeros(1, dtype=torch.float64), torch.ones(1, 2), kl_coef=0.1)
    loss, stats = grpo_loss(logp, logp, torch.zeros(1, dtype=torch.float64), torch.ones(1, 2), kl_coef=0.1,
                            ref_logprobs=logp)
    assert loss.item() == 0.0 and stats["kl"].item() == 0.0


def test_group_advantages_normalise_each_group_and_zero_the_flat_ones():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    adv, flat = group_advantages(rewards)
    assert flat.tolist() == [False, True, True, False]
    assert adv[0].tolist() == pytest.approx([1, -1, -1, 1], abs=1e-5)  # mean 0.5, population std 0.5
    assert adv[1].tolist() == adv[2].tolist() == [0.0] * 4
    std = math.sqrt(0.25 * 0.75)
    assert adv[3].tolist() == pytest.approx([0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std], abs=1e-5)
    unscaled, _ = group_advantages(rewards, scale=False)
    assert unscaled[3].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    # a zero-variance group gives no gradient at all
    logp = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    loss, _ = grpo_loss(logp, logp.detach(), adv[1].double(), torch.ones(4, 3))
    loss.backward()
    assert torch.count_nonzero(logp.grad) == 0
