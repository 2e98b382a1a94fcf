"""Tests for dail.metrics: pass@k against brute force and exact arithmetic, verdicts at budgets."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dail.metrics import (
    answer_token_index,
    budget_counts,
    correct_at_budget,
    mean_pass_at_k,
    pass_at_k,
    pass_at_k_table,
)


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_brute_force_over_subsets() -> None:
    # pass@k is, by definition, the fraction of k-subsets of the n samples holding a correct one.
    for n in range(1, 9):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-14), (n, c, k)


@pytest.mark.parametrize(
    ("n", "c", "k"),
    [(1024, 1, 1), (1024, 1, 128), (1024, 3, 1), (1024, 10, 128), (1024, 512, 128), (1024, 900, 64),
     (1024, 1, 1024), (1024, 1023, 2), (1000, 7, 500)],
)
def test_pass_at_k_is_accurate_at_large_n(n: int, c: int, k: int) -> None:
    exact = exact_pass_at_k(n, c, k)
    got = pass_at_k(n, c, k)
    assert abs(Fraction(got) - exact) < Fraction(1, 10**12)
    if exact:  # small values keep their relative accuracy too (log1p/expm1, not 1 - product)
        assert abs(Fraction(got) / exact - 1) < Fraction(1, 10**12)


def test_pass_at_k_edge_cases() -> None:
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0  # k = n sees every sample
    assert pass_at_k(10, 3, 8) == 1.0  # n - c < k: every subset has a correct sample
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("n", "c", "k", "message"),
    [(4, 1, 5, "k must be in"), (4, 1, 0, "k must be in"), (4, -1, 1, "c must be in"),
     (4, 5, 1, "c must be in"), (0, 0, 1, "n must be")],
)
def test_pass_at_k_rejects_bad_arguments(n: int, c: int, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


@st.composite
def n_c_k(draw: st.DrawFn) -> tuple[int, int, int]:
    n = draw(st.integers(1, 300))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@settings(max_examples=200, deadline=None)
@given(n_c_k())
def test_pass_at_k_is_a_probability_monotone_in_k_and_c(args: tuple[int, int, int]) -> None:
    n, c, k = args
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    # Slack for rounding: neighbours may tie exactly (e.g. both 1.0).
    if k < n:
        assert pass_at_k(n, c, k + 1) >= value - 1e-12
    if c < n:
        assert pass_at_k(n, c + 1, k) >= value - 1e-12
    assert (value > 0) == (c > 0)
    if n - c < k:
        assert value == 1.0


@settings(max_examples=100, deadline=None)
@given(n_c_k())
def test_pass_at_1_is_the_fraction_correct(args: tuple[int, int, int]) -> None:
    n, c, _ = args
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


def test_mean_pass_at_k_and_table() -> None:
    counts = [(4, 0), (4, 1), (4, 4)]
    assert mean_pass_at_k(counts, 1) == pytest.approx((0 + 0.25 + 1) / 3)
    assert mean_pass_at_k(counts, 4) == pytest.approx(2 / 3)
    assert pass_at_k_table(counts, [1, 2, 4]) == {
        1: pytest.approx((0 + 0.25 + 1) / 3),
        2: pytest.approx((0 + 0.5 + 1) / 3),
        4: pytest.approx(2 / 3),
    }


def test_mean_pass_at_k_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="problem 1 has n=2"):
        mean_pass_at_k([(8, 1), (2, 1)], 4)
    with pytest.raises(ValueError, match="problem 0: c must be"):
        mean_pass_at_k([(8, 9)], 1)
    with pytest.raises(ValueError, match="at least one problem"):
        mean_pass_at_k([], 1)


@dataclass
class Sample:
    correct: bool
    n_tokens: int
    budgets: dict


@dataclass
class Verdict:
    correct: bool


@pytest.mark.parametrize(("budget", "expected"), [
    (None, [True, False, True, False]),  # no budget: each sample's own verdict
    (10, [True, False, False, True]),  # only the 12-token samples are cut; their prefixes decide
    (11, [True, False, True, False]),  # 11 < 12: still cut, other verdicts recorded
    (12, [True, False, True, False]),  # every sample ended within 12 tokens: its own verdict
    (100, [True, False, True, False]),
])
def test_correct_at_budget(budget, expected) -> None:
    samples = [
        {"correct": True, "n_tokens": 10, "budgets": {}},  # ended within 10 tokens
        {"correct": False, "n_tokens": 3, "budgets": {}},
        {"correct": True, "n_tokens": 12, "budgets": {"10": {"correct": False}, "11": {"correct": True}}},
        Sample(False, 12, {"10": Verdict(True), "11": Verdict(False)}),  # objects with attributes too
    ]
    assert [correct_at_budget(s, budget) for s in samples] == expected
    assert budget_counts(samples, budget) == sum(expected)


def test_correct_at_budget_errors() -> None:
    cut = {"correct": True, "n_tokens": 12, "budgets": {"10": {"correct": False}}}
    with pytest.raises(ValueError, match="no verdict at budget 4"):
        correct_at_budget(cut, 4)
    with pytest.raises(ValueError, match="budget must be >= 1"):
        correct_at_budget(cut, 0)
    assert budget_counts([], 4) == 0


def test_answer_token_index() -> None:
    ends = [3, 7, 7, 12]  # token 2 decodes to nothing
    assert answer_token_index(ends, 1) == 0
    assert answer_token_index(ends, 3) == 0
    assert answer_token_index(ends, 4) == 1
    assert answer_token_index(ends, 12) == 3
    assert answer_token_index(ends, 13) is None
    assert answer_token_index(ends, None) is None
