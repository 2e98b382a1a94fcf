"""Tests for dail.study's spread across seeds: `aggregate` and the table cells on hand-made per-seed tables.

The end-to-end study on a built test-bed (test_testbed.py) has seeds whose scores all agree, which
leaves the mean and the standard deviation's denominator unexercised; here every number differs by seed.
"""

from __future__ import annotations

import math

import pytest

from dail.study import aggregate, markdown


def _row(p1: float, p2: float, tokens: float, budget: float | None) -> dict:
    return {"pass_at_k": {"1": p1, "2": p2}, "mean_tokens": tokens, "budget_pass_at_1": {"4": budget}}


# seed -> method -> split -> row, as `dail.study.run` collects them; the sweep point ran for two seeds only
PER_SEED = {
    0: {"dail": {"test": _row(0.1, 0.2, 10.0, 0.0)}, "dail tau=1": {"val": _row(0.5, 0.5, 8.0, 0.5)}},
    1: {"dail": {"test": _row(0.3, 0.2, 14.0, 0.5)}, "dail tau=1": {"val": _row(0.7, 0.9, 8.0, 0.5)}},
    2: {"dail": {"test": _row(0.8, 0.2, 30.0, None)}},  # no pass@1 known at budget 4 for this seed
}


def test_mean_and_sample_standard_deviation_across_seeds():
    dail = aggregate(PER_SEED)["dail"]["test"]
    # pass@1 0.1, 0.3, 0.8: mean 0.4; deviations -0.3, -0.1, 0.4, squares summing to 0.26,
    # over n - 1 = 2 seeds: std sqrt(0.13) = 0.3606 (over n it would be sqrt(0.26 / 3) = 0.2944)
    p1 = dail["pass_at_k"]["1"]
    assert p1["mean"] == pytest.approx(0.4, rel=1e-12)
    assert p1["std"] == pytest.approx(math.sqrt(0.13), rel=1e-12)
    assert (p1["min"], p1["max"], p1["n"]) == (0.1, 0.8, 3)
    # equal across seeds: no spread
    assert dail["pass_at_k"]["2"] == {"mean": pytest.approx(0.2), "std": 0.0, "min": 0.2, "max": 0.2, "n": 3}
    # tokens 10, 14, 30: mean 18, squares 64 + 16 + 144 = 224, std sqrt(224 / 2) = 10.583
    assert dail["mean_tokens"]["mean"] == pytest.approx(18.0, rel=1e-12)
    assert dail["mean_tokens"]["std"] == pytest.approx(math.sqrt(112.0), rel=1e-12)
    # a seed without the number is left out, not counted as 0: 0.0 and 0.5, std sqrt(0.125 / 1)
    budget = dail["budget_pass_at_1"]["4"]
    assert (budget["mean"], budget["n"]) == (pytest.approx(0.25), 2)
    assert budget["std"] == pytest.approx(math.sqrt(0.125), rel=1e-12)


def test_a_number_known_for_fewer_seeds_is_averaged_over_those():
    out = aggregate(PER_SEED)
    assert list(out) == ["dail", "dail tau=1"] and list(out["dail tau=1"]) == ["val"]
    p2 = out["dail tau=1"]["val"]["pass_at_k"]["2"]
    # 0.5, 0.9: mean 0.7, std sqrt((0.04 + 0.04) / 1)
    assert (p2["mean"], p2["n"]) == (pytest.approx(0.7), 2)
    assert p2["std"] == pytest.approx(math.sqrt(0.08), rel=1e-12)


def test_one_seed_has_no_spread():
    one = aggregate({0: PER_SEED[0]})["dail"]["test"]["pass_at_k"]["1"]
    assert one == {"mean": 0.1, "std": 0.0, "min": 0.1, "max": 0.1, "n": 1}


def test_the_table_shows_mean_and_sample_std_in_percent():
    summary = {"name": "s", "seeds": [0, 1, 2], "mean": aggregate(PER_SEED)}
    md = markdown(summary)
    # pass@1 40.0 ± 36.1 (%), pass@2 20.0 ± 0.0, mean tokens 18 ± 11
    assert "| dail | 40.0 ± 36.1 | 20.0 ± 0.0 | 18 ± 11 |" in md
