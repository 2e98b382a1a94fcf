"""Paired comparisons: per-problem scores, seed means and the bootstrap interval, against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dail.data import Sample
from dail.stats import mean_over_seeds, paired_bootstrap, parse_metric, problem_scores


def _sample(pid: str, i: int, correct: bool, n_tokens: int = 10) -> Sample:
    return Sample(problem_id=pid, sample=i, seed=0, text="t", n_tokens=n_tokens, finish="eos",
                  answer="1" if correct else "2", correct=correct)


def test_per_problem_pass_at_k_and_tokens_by_hand():
    samples = [_sample("p", 0, True, 30), _sample("p", 1, False, 50), _sample("p", 2, False, 7), _sample("p", 3, True, 10),
               _sample("q", 0, False), _sample("q", 1, False), _sample("q", 2, False), _sample("q", 3, False)]
    assert problem_scores(samples, "pass@1") == {"p": 0.5, "q": 0.0}
    # pass@2 of p: 1 - C(2,2)/C(4,2) = 1 - 1/6
    assert problem_scores(samples, "pass@2")["p"] == pytest.approx(5 / 6)
    # tokens: the mean length of p's correct samples; q has none and no value
    assert problem_scores(samples, "tokens") == {"p": 20.0}
    with pytest.raises(ValueError, match="pass@8 needs at least 8"):
        problem_scores(samples, "pass@8")
    for bad in ("pass@0", "pass@", "acc", "pass@x"):
        with pytest.raises(ValueError, match="unknown metric"):
            parse_metric(bad)


def test_seed_means_are_taken_per_problem_over_the_seeds_that_have_it():
    seeds = [{"a": 0.1, "b": 0.5}, {"a": 0.3, "b": 0.0}, {"a": 0.8}]
    means = mean_over_seeds(seeds)
    assert means["a"] == pytest.approx((0.1 + 0.3 + 0.8) / 3)
    assert means["b"] == pytest.approx(0.25)


def _slow_bootstrap(a, b, resamples, seed, level, clusters=None):
    """The same resampling written as loops: one draw of clusters per resample, the mean over the problems drawn."""
    common = sorted(set(a) & set(b))
    groups = [clusters[p] for p in common] if clusters else common
    names = sorted(set(groups))
    members = {g: [p for p, h in zip(common, groups) if h == g] for g in names}
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.integers(0, len(names), size=(resamples, len(names)))
    means = []
    for row in draws:
        picked = [p for j in row for p in members[names[j]]]
        means.append(sum(a[p] - b[p] for p in picked) / len(picked))
    means.sort()
    tail = (1 - level) / 2

    def q(x):  # numpy's default (linear) quantile
        pos = x * (len(means) - 1)
        lo = math.floor(pos)
        return means[lo] + (means[min(lo + 1, len(means) - 1)] - means[lo]) * (pos - lo)

    return q(tail), q(1 - tail)


def test_the_interval_of_a_hand_made_comparison_matches_a_loop_implementation():
    a = {"p1": 0.5, "p2": 0.25, "p3": 1.0, "p4": 0.0, "only-a": 1.0}
    b = {"p1": 0.25, "p2": 0.25, "p3": 0.0, "p4": 0.5, "only-b": 0.0}
    got = paired_bootstrap(a, b, resamples=2000, seed=3)
    assert got.n == 4  # only the problems both methods have
    assert got.mean == pytest.approx((0.25 + 0.0 + 1.0 - 0.5) / 4)
    lo, hi = _slow_bootstrap(a, b, 2000, 3, 0.95)
    assert (got.lo, got.hi) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert got.lo < got.mean < got.hi


def test_a_constant_difference_has_no_width_and_clusters_resample_whole():
    a, b = {f"p{i}": 0.7 for i in range(6)}, {f"p{i}": 0.2 for i in range(6)}
    got = paired_bootstrap(a, b, resamples=500)
    assert (got.mean, got.lo, got.hi) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))
    # Two clusters: A's problems differ by 0, B's by 1. A resample draws AA, AB, BA or BB (a quarter each),
    # so the 2.5% and 97.5% points are exactly 0 and 1, whatever the problems' count inside each cluster.
    a = {"a1": 0.0, "a2": 0.0, "a3": 0.0, "b1": 1.0}
    b = {"a1": 0.0, "a2": 0.0, "a3": 0.0, "b1": 0.0}
    clusters = {"a1": "A", "a2": "A", "a3": "A", "b1": "B"}
    got = paired_bootstrap(a, b, resamples=4000, seed=1, clusters=clusters)
    assert got.mean == pytest.approx(0.25) and got.lo == 0.0 and got.hi == 1.0
    lo, hi = _slow_bootstrap(a, b, 4000, 1, 0.95, clusters)
    assert (got.lo, got.hi) == (lo, hi)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=30), st.integers(0, 2**32 - 1))
def test_swapping_the_methods_negates_the_interval(pairs, seed):
    a = {f"p{i}": x for i, (x, _) in enumerate(pairs)}
    b = {f"p{i}": y for i, (_, y) in enumerate(pairs)}
    ab = paired_bootstrap(a, b, resamples=300, seed=seed)
    ba = paired_bootstrap(b, a, resamples=300, seed=seed)
    assert ba.mean == pytest.approx(-ab.mean, abs=1e-12)
    assert ba.lo == pytest.approx(-ab.hi, abs=1e-12) and ba.hi == pytest.approx(-ab.lo, abs=1e-12)
    assert ab.lo <= ab.hi


def test_no_shared_problem_is_an_error():
    with pytest.raises(ValueError, match="share no problem"):
        paired_bootstrap({"a": 1.0}, {"b": 0.0})
