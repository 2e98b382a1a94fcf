"""Tests for dail.sampling: the counter-based uniforms against a plain-Python splitmix64, the sampling
transforms against hand-computed sets, inverse-CDF sampling against exact multinomials, the roles'
names, rows, letters and draws, the tag layout, and the rules (plain, threshold, nucleus) on
hand-made logits at their limits. No model: the engine and rollouts that call these are tested in
test_engine.py and test_expand.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dail.sampling as sampling_mod
from dail.roles import Role
from dail.sampling import (
    MAX_PROPOSALS,
    PRIVILEGED_DRAW,
    NucleusChoose,
    Sampler,
    ThresholdChoose,
    apply_temperature,
    inverse_cdf,
    mixed_rule,
    problem_hash,
    row_key,
    tag_rejected,
    tag_role,
    tag_source,
    top_k_filter,
    top_p_filter,
    transform,
    uniforms,
)

F64 = torch.float64


# --------------------------------------------------------------------------------------------------
# counter-based randomness

_MASK = (1 << 64) - 1


def splitmix64(state: int) -> int:
    """splitmix64's output function on Python ints, straight from its definition (Vigna)."""
    z = state & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def slow_uniform(key: int, t: int, draw: int, bits: int = 53) -> float:
    """The (t * 16 + draw + 1)-th splitmix64 output of the stream seeded with `key`, top bits as [0, 1)."""
    state = (key & _MASK) + (t * 16 + draw + 1) * 0x9E3779B97F4A7C15
    return (splitmix64(state) >> (64 - bits)) / 2.0**bits


def test_uniforms_match_plain_python_splitmix64():
    keys = [row_key(s, f"p{s % 7}", s % 3) for s in range(50)] + [0, -1, (1 << 63) - 1, -(1 << 63)]
    k = torch.tensor(keys, dtype=torch.long)
    for t, draw in [(0, 0), (0, 1), (1, 0), (977, 1), (10**6, 0), (3, 15)]:
        got64 = uniforms(k, t, draw, torch.float64).tolist()
        got32 = uniforms(k, t, draw, torch.float32).tolist()
        assert got64 == [slow_uniform(key, t, draw) for key in keys]
        assert got32 == [slow_uniform(key, t, draw, bits=24) for key in keys]
        # a step counter held in a tensor (for a future captured graph) gives the same numbers
        assert uniforms(k, torch.tensor(t), draw, torch.float64).tolist() == got64


def test_row_key_is_pinned_and_separates_its_fields():
    # Pinned: every stored trace depends on these numbers; changing them silently changes traces.
    assert row_key(0, "arith-train-00000", 0) == 4576102582898290705
    assert row_key(1, "x", 3) == -4981230295471002296
    assert problem_hash("x") == 2858720872202629029
    assert 0 <= problem_hash("any id") < 2**63
    keys = {row_key(seed, pid, s) for seed in (0, 1, -1) for pid in ("a", "b", "") for s in range(4)}
    assert len(keys) == 3 * 3 * 4


def test_stage_salts_separate_the_streams_of_select_expand_and_eval():
    # The same (seed, problem, sample) in two stages must not draw the same uniforms.
    stages = ["", "select", "expand", "eval", "eval-force"]
    keys = [row_key(0, "arith-train-00000", 0, stage) for stage in stages]
    assert len(set(keys)) == len(stages)
    assert keys[0] == row_key(0, "arith-train-00000", 0)  # no salt: the key of before
    assert keys[2] == 4452412516680341007  # pinned like the unsalted key
    u = uniforms(torch.tensor(keys), 0, 0)
    assert len(set(u.tolist())) == len(stages)


def test_uniforms_are_deterministic_and_independent_of_batch_composition():
    keys = torch.tensor([row_key(0, f"p{i}", i % 4) for i in range(64)])
    full = uniforms(keys, 5, 1)
    perm = torch.randperm(64)
    assert torch.equal(uniforms(keys[perm], 5, 1), full[perm])
    assert torch.equal(uniforms(keys[:3], 5, 1), full[:3])
    assert torch.equal(uniforms(keys, 5, 1), full)


def test_uniforms_look_independent_and_uniform():
    n = 20000
    keys = torch.tensor([row_key(7, f"problem-{i // 8}", i % 8) for i in range(n)])
    u = {(t, d): uniforms(keys, t, d) for t in (0, 1, 2) for d in (0, 1)}
    for x in u.values():
        assert 0.0 <= float(x.min()) and float(x.max()) < 1.0
        assert abs(float(x.mean()) - 0.5) < 0.01
        assert abs(float(x.var()) - 1 / 12) < 0.005
        # Kolmogorov-Smirnov distance to U(0, 1); 1.95 / sqrt(n) is the 0.1% critical value
        xs = x.sort().values
        grid = torch.arange(1, n + 1, dtype=F64) / n
        assert float((xs - grid).abs().max()) < 1.95 / math.sqrt(n)

    def corr(a, b):
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    bound = 4 / math.sqrt(n)
    assert abs(corr(u[0, 0], u[0, 1])) < bound  # draws of a step
    assert abs(corr(u[0, 0], u[1, 0])) < bound  # consecutive steps
    assert abs(corr(u[0, 0][:-1], u[0, 0][1:])) < bound  # neighbouring samples / problems
    # float32 uniforms never round up to 1
    assert float(uniforms(keys, 3, 0, torch.float32).max()) < 1.0


# --------------------------------------------------------------------------------------------------
# transforms


def test_temperature_divides_logits():
    logits = torch.tensor([1.0, 2.0, 4.0], dtype=F64)
    assert torch.allclose(transform(logits, temperature=0.5), torch.softmax(logits / 0.5, -1))
    assert torch.equal(apply_temperature(logits, 1.0), logits)
    with pytest.raises(ValueError):
        apply_temperature(logits, 0.0)


def test_top_k_keeps_the_k_largest_and_ties():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]], dtype=F64)
    kept = top_k_filter(logits, 2)
    assert torch.isinf(kept[0, [0, 2, 4]]).all() and torch.equal(kept[0, [1, 3]], logits[0, [1, 3]])
    assert torch.equal(top_k_filter(logits, 0), logits) and torch.equal(top_k_filter(logits, 5), logits)
    tied = torch.tensor([3.0, 2.0, 2.0, 1.0], dtype=F64)
    assert torch.isfinite(top_k_filter(tied, 2)).tolist() == [True, True, True, False]
    q = transform(logits[0], top_k=2)
    assert torch.allclose(q, torch.tensor([0, math.e**3, 0, math.e**2, 0], dtype=F64) / (math.e**3 + math.e**2))


@pytest.mark.parametrize("p, kept", [(0.5, [1]), (0.51, [1, 0]), (0.8, [1, 0]), (0.81, [1, 0, 2]),
                                     (0.95, [1, 0, 2]), (0.96, [1, 0, 2, 3]), (1.0, [1, 0, 2, 3])])
def test_top_p_keeps_smallest_set_including_the_crossing_token(p, kept):
    probs = torch.tensor([0.3, 0.5, 0.15, 0.05], dtype=F64)
    q = top_p_filter(probs, p)
    assert sorted(torch.nonzero(q).flatten().tolist()) == sorted(kept)
    assert torch.allclose(q[kept], probs[kept] / probs[kept].sum())
    assert math.isclose(float(q.sum()), 1.0)


def test_top_p_keeps_every_token_tied_with_the_last_kept():
    probs = torch.tensor([0.4, 0.2, 0.2, 0.2], dtype=F64)
    assert top_p_filter(probs, 0.5).gt(0).tolist() == [True, True, True, True]
    assert top_p_filter(probs, 0.4).gt(0).tolist() == [True, False, False, False]


def slow_top_p(probs: list[float], p: float) -> set[int]:
    """Tokens whose strictly-more-likely mass is < p, the rule written as a double loop."""
    return {v for v, pv in enumerate(probs) if sum(pu for pu in probs if pu > pv) < p}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-6, 6, allow_nan=False), min_size=2, max_size=40), st.floats(0.05, 0.99),
       st.integers(1, 8))
def test_top_p_matches_the_rule_with_and_without_the_cpu_head(logits, p, head):
    probs = torch.softmax(torch.tensor(logits, dtype=F64), -1)
    want = slow_top_p(probs.tolist(), p)
    full = top_p_filter(probs[None].repeat(3, 1), p)
    old = sampling_mod._TOP_P_HEAD
    sampling_mod._TOP_P_HEAD = head  # exercise the head + fallback path on a small vocabulary
    try:
        partial = top_p_filter(probs[None].repeat(3, 1), p)
    finally:
        sampling_mod._TOP_P_HEAD = old
    assert set(torch.nonzero(full[0]).flatten().tolist()) == want
    assert torch.allclose(partial, full)
    assert float(probs[sorted(want)].sum()) >= p - 1e-12


def test_transform_applies_temperature_then_top_k_then_top_p():
    logits = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=F64))
    q = transform(logits, temperature=2.0, top_p=0.6, top_k=3)
    # T=2: probs ~ sqrt(p) = [.632, .548, .447, .316]; top-3 renormalised: [.388, .337, .275];
    # top-p 0.6 keeps the first two (mass before the third is 0.725 >= 0.6)
    s = torch.sqrt(torch.tensor([0.4, 0.3], dtype=F64))
    assert torch.allclose(q, torch.cat([s / s.sum(), torch.zeros(2, dtype=F64)]))


# --------------------------------------------------------------------------------------------------
# inverse CDF


def test_inverse_cdf_on_a_grid_reproduces_the_multinomial_exactly():
    probs = torch.tensor([[0.1, 0.0, 0.25, 0.0, 0.65], [0.0, 0.0, 1.0, 0.0, 0.0]], dtype=F64)
    m = 10000
    u = (torch.arange(m, dtype=F64) + 0.5) / m  # [m] evenly spaced uniforms
    for row in probs:
        tokens = inverse_cdf(row.expand(m, -1), u)
        freq = torch.bincount(tokens, minlength=5).to(F64) / m
        assert (freq - row).abs().max() <= 1 / m


def test_inverse_cdf_with_counter_uniforms_matches_the_multinomial():
    probs = torch.softmax(torch.randn(12, generator=torch.Generator().manual_seed(3), dtype=F64), -1)
    n = 20000
    keys = torch.tensor([row_key(0, "chi", i) for i in range(n)])
    tokens = inverse_cdf(probs.expand(n, -1), uniforms(keys, 0, 0))
    observed = torch.bincount(tokens, minlength=12).to(F64)
    expected = probs * n
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 35.0  # chi-square, 11 degrees of freedom: 0.1% critical value 31.3 (+ slack)


def test_inverse_cdf_never_picks_a_zero_probability_token():
    probs = torch.tensor([0.0, 0.3, 0.0, 0.7, 0.0, 0.0], dtype=F64)
    edges = torch.tensor([0.0, 1e-300, 0.3, 1 - 2.0**-53], dtype=F64)
    assert inverse_cdf(probs.expand(4, -1), edges).tolist() == [1, 1, 3, 3]
    unnormalised = torch.tensor([0.0, 3.0, 0.0, 7.0, 0.0], dtype=torch.float32)
    u = torch.tensor([0.0, 0.29, 0.31, 1 - 2.0**-24])
    assert inverse_cdf(unnormalised.expand(4, -1), u).tolist() == [1, 1, 3, 3]



@pytest.mark.parametrize("weights, temperature, top_p, top_k, want", [
    # logits = log([4, 3, 2, 1]), T = 0.5: probs ~ w^2 = [16, 9, 4, 1] / 30 = [.533, .3, .133, .033].
    # Mass before each token: 0, .533, .833 -> top-p 0.75 keeps 2 tokens: [16, 9] / 25.
    # (Top-p first, on [.4, .3, .2, .1]: mass before 0, .4, .7 -> it would keep 3: [16, 9, 4] / 29.)
    ([4, 3, 2, 1], 0.5, 0.75, 0, [16 / 25, 9 / 25, 0, 0]),
    # logits = log([16, 4, 1, 1]), T = 2: probs ~ sqrt(w) = [4, 2, 1, 1] / 8 = [.5, .25, .125, .125].
    # Mass before each: 0, .5, .75 -> top-p 0.7 keeps 2 tokens: [4, 2] / 6.
    # (Top-p first, on [16, 4, 1, 1] / 22 = [.727, ...]: the first token alone crosses 0.7: [1, 0, 0, 0].)
    ([16, 4, 1, 1], 2.0, 0.7, 0, [2 / 3, 1 / 3, 0, 0]),
    # logits = log([8, 6, 4, 2, 1]), T = 0.5, top-k 4: probs ~ [64, 36, 16, 4] / 120 = [.533, .3, .133, .033].
    # Mass before each: 0, .533, .833 -> top-p 0.75 keeps 2 tokens: [64, 36] / 100.
    # (Top-k and top-p first, on [8, 6, 4, 2] / 20 = [.4, .3, .2, .1]: 3 kept: [64, 36, 16] / 116.)
    ([8, 6, 4, 2, 1], 0.5, 0.75, 4, [64 / 100, 36 / 100, 0, 0, 0]),
])
def test_temperature_is_applied_before_top_p_decides_the_kept_set(weights, temperature, top_p, top_k, want):
    """Temperature first: the nucleus is taken on the tempered distribution, so T changes which
    tokens top-p keeps (here 2 kept, where the untempered distribution would keep 3, or 1).
    Expected probabilities are the hand-computed fractions of the derivation beside each case."""
    logits = torch.log(torch.tensor(weights, dtype=F64))
    q = transform(logits, temperature=temperature, top_p=top_p, top_k=top_k)
    torch.testing.assert_close(q, torch.tensor(want, dtype=F64), rtol=0, atol=1e-12)
    # the same in a batch of rows ([G, R, V], as the mixed rollout calls it)
    batch = transform(logits.expand(2, 3, -1), temperature=temperature, top_p=top_p, top_k=top_k)
    torch.testing.assert_close(batch, torch.tensor(want, dtype=F64).expand(2, 3, -1), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# roles and tags


def test_role_is_its_config_name_with_a_row_a_letter_and_a_draw():
    assert [str(r) for r in Role] == ["learner", "privileged", "negative", "rationalize", "hint"]
    assert Role("privileged") is Role.PRIVILEGED and Role.NEGATIVE == "negative"
    assert {"learner": 1}[Role.LEARNER] == 1
    assert json.dumps({Role.LEARNER: Role.PRIVILEGED}) == '{"learner": "privileged"}'
    assert (Role.LEARNER.row, Role.PRIVILEGED.row, Role.RATIONALIZE.row) == (0, 1, 1)  # rationalize: privileged slot
    assert (Role.LEARNER.letter, Role.PRIVILEGED.letter, Role.RATIONALIZE.letter) == ("L", "P", "P")
    assert (Role.LEARNER.draw, Role.PRIVILEGED.draw) == (0, PRIVILEGED_DRAW)
    for role in (Role.NEGATIVE, Role.HINT):  # they score or write hints; they never take a rollout row
        with pytest.raises(ValueError, match="no row"):
            role.row
    with pytest.raises(ValueError):
        Role("teacher")


@pytest.mark.parametrize("rejected", [0, 1, 5, MAX_PROPOSALS])
@pytest.mark.parametrize("role", [Role.LEARNER, Role.PRIVILEGED])
def test_a_tag_packs_the_deciding_role_and_the_rejections(role, rejected):
    tag = 2 * rejected + role.row
    assert (tag_source(tag), tag_role(tag), tag_rejected(tag)) == (role.row, role, rejected)


# --------------------------------------------------------------------------------------------------
# rules


G, V = 400, 8


def mixed_logits(peak: float = 0.9) -> torch.Tensor:
    """[G, 2, V]: a flat learner row, and a privileged row with `peak` of its mass on token 3."""
    privileged = torch.full((V,), (1 - peak) / (V - 1), dtype=F64)
    privileged[3] = peak
    return torch.stack([torch.zeros(V, dtype=F64), privileged.log()]).expand(G, -1, -1)


def step_args(t: int = 2):
    keys = torch.tensor([row_key(1, "rule", i) for i in range(G)])
    return keys, torch.tensor(t), torch.zeros(G, V, dtype=torch.bool)


def test_sampler_draws_by_inverse_cdf_and_tags_zero():
    logits = mixed_logits()[:, :1]  # [G, 1, V]
    keys, t, seen = step_args()
    token, tag = Sampler(draw=3)(logits, keys, t, seen)
    assert torch.equal(token, inverse_cdf(torch.full((G, V), 1 / V, dtype=F64), uniforms(keys, t, 3)))
    assert tag.eq(0).all()


def test_sampler_presence_penalty_removes_seen_tokens():
    logits = torch.zeros(G, 1, V, dtype=F64)
    keys, t, seen = step_args()
    seen[:, :4] = True
    token, _ = Sampler(presence_penalty=1e3)(logits, keys, t, seen)
    assert token.ge(4).all()


@pytest.mark.parametrize("rule", [ThresholdChoose(tau=0.0, top_k=0), NucleusChoose(tau=0.0)])
def test_tau_zero_keeps_the_first_learner_proposal(rule):
    logits = mixed_logits()
    keys, t, seen = step_args()
    token, tag = rule(logits, keys, t, seen)
    assert torch.equal(token, Sampler(draw=Role.LEARNER.draw)(logits[:, :1], keys, t, seen)[0])
    assert tag.eq(Role.LEARNER.row).all()


@pytest.mark.parametrize("rule, tag", [(ThresholdChoose(tau=1.0, top_k=0, retries=4), 2 * 4 + 1),
                                       (NucleusChoose(tau=1.0), 2 * 1 + 1)])
def test_tau_one_falls_back_to_the_privileged_draw(rule, tag):
    logits = mixed_logits()
    keys, t, seen = step_args()
    token, tags = rule(logits, keys, t, seen)
    assert torch.equal(token, Sampler(draw=Role.PRIVILEGED.draw)(logits[:, 1:], keys, t, seen)[0])
    assert tags.eq(tag).all()  # every proposal rejected, privileged source


def _pinned_logits(privileged: list[float], token: int = 5, groups: int = 4) -> torch.Tensor:
    """[groups, 2, V]: a learner that proposes `token` with probability 1, and the privileged row's raw logits."""
    learner = torch.full((V,), -math.inf, dtype=F64)
    learner[token] = 0.0
    return torch.stack([learner, torch.tensor(privileged, dtype=F64)]).expand(groups, -1, -1)


# Zero logits, so that the rule's p_P = exp(0 - log n) is 1/n exactly: equal logits of 1.5 would
# give 1.5 - (1.5 + log 4) and 0.24999999999999994.
@pytest.mark.parametrize("tau, privileged", [
    (0.5, [-math.inf, -math.inf, 0.0, -math.inf, -math.inf, 0.0, -math.inf, -math.inf]),  # two equal logits
    (0.25, [-math.inf, 0.0, -math.inf, 0.0, -math.inf, 0.0, 0.0, -math.inf]),  # four
])
def test_threshold_accepts_a_proposal_whose_privileged_probability_equals_tau(tau, privileged):
    logits = _pinned_logits(privileged)
    assert torch.softmax(logits[0, 1], -1)[5].item() == tau  # the premise: p_P(5) is tau exactly
    keys, t, seen = step_args()
    keys = keys[:4]
    token, tag = ThresholdChoose(tau=tau, top_k=0, retries=3)(logits, keys, t, seen[:4])
    assert token.eq(5).all() and tag.eq(Role.LEARNER.row).all()  # the first proposal, at p_P = tau, kept
    # just above tau the same proposal fails every retry and the privileged student draws
    token, tag = ThresholdChoose(tau=math.nextafter(tau, 1), top_k=0, retries=3)(logits, keys, t, seen[:4])
    assert tag.eq(2 * 3 + Role.PRIVILEGED.row).all()
    assert set(token.tolist()) <= {i for i, x in enumerate(privileged) if x > -math.inf}


def test_threshold_with_tau_zero_accepts_a_proposal_the_privileged_student_gives_probability_zero():
    privileged = [0.0] * V
    privileged[5] = -math.inf
    logits = _pinned_logits(privileged)
    assert torch.softmax(logits[0, 1], -1)[5].item() == 0.0
    keys, t, seen = step_args()
    token, tag = ThresholdChoose(tau=0.0, top_k=0, retries=3)(logits, keys[:4], t, seen[:4])
    # kept although the privileged student could never have written it: tau = 0 is learner sampling
    assert token.eq(5).all() and tag.eq(Role.LEARNER.row).all()


def test_threshold_keeps_the_first_proposal_that_passes():
    # Only token 3 has raw p_P = 0.9 >= tau; a flat learner proposes it with probability 1/8 per draw.
    logits = mixed_logits()
    keys, t, seen = step_args()
    token, tag = ThresholdChoose(tau=0.5, top_k=0, retries=3)(logits, keys, t, seen)
    fallback = Sampler(draw=PRIVILEGED_DRAW)(logits[:, 1:], keys, t, seen)[0]
    proposals = [Sampler(draw=r)(logits[:, :1], keys, t, seen)[0] for r in range(3)]
    for g in range(G):
        passing = [r for r in range(3) if proposals[r][g] == 3]
        if passing:
            assert (int(token[g]), int(tag[g])) == (3, 2 * passing[0] + Role.LEARNER.row)
        else:
            assert (int(token[g]), int(tag[g])) == (int(fallback[g]), 2 * 3 + Role.PRIVILEGED.row)
    assert {tag_role(int(x)) for x in tag} == {Role.LEARNER, Role.PRIVILEGED}
    assert {tag_rejected(int(x)) for x in tag} == {0, 1, 2, 3}


def test_mixed_rule_builds_rules_by_name_that_compare_by_settings():
    kw = dict(temperature=0.7, top_p=0.9, top_k=20, tau=0.8, retries=4)
    assert mixed_rule("threshold", **kw) == ThresholdChoose(0.7, 0.9, 20, 0.8, 4)
    assert mixed_rule("nucleus", **kw) == NucleusChoose(0.7, 0.9, 20, 0.8)
    # equal settings, equal (and equally hashed) callbacks: the engine's captured graphs are reused
    assert hash(mixed_rule("threshold", **kw)) == hash(mixed_rule("threshold", **kw))
    with pytest.raises(ValueError, match="unknown rule 'greedy'; rules are threshold, nucleus"):
        mixed_rule("greedy", **kw)
    for retries in (0, MAX_PROPOSALS + 1):
        with pytest.raises(ValueError, match="retries must be in"):
            ThresholdChoose(retries=retries)
