"""Tests for dail.waypoints: the rule on the bundled data, on general LaTeX, and row overrides."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dail.data import Problem, read_problems
from dail.datasets import SPLITS, load_split
from dail.waypoints import partial_solution, waypoints_for, write_waypoints


@pytest.fixture(scope="module")
def rows():
    return [p for name in SPLITS for p in load_split(name)]


def test_bundled_waypoints_keep_the_box_and_every_stated_result(rows):
    for p in rows:
        kept = partial_solution(p.solution).split("\n")
        assert kept[-1] == f"\\boxed{{{p.answer}}}", p.id
        # Read independently of the module: every number right of `=` in the solution.
        for value in re.findall(r"= (\d+)\.", p.solution):
            assert f"= {value}" in kept or value == p.answer, (p.id, value)


def test_bundled_waypoints_are_much_shorter(rows):
    ratios = [len(partial_solution(p.solution)) / len(p.solution) for p in rows]
    # Measured on the shipped splits: mean 0.19, max 0.25.
    assert sum(ratios) / len(ratios) < 0.5


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        # inline math, a chain (only its end is a result), a nested box
        ("Let $x = 3$. Then $y = x + 1 = 4$, so the answer is $\\boxed{\\frac{1}{2}}$.",
         "= 3\n= 4\n\\boxed{\\frac{1}{2}}"),
        # display math with an implication; `= 3` repeats the box and collapses into it
        ("$$2x + 1 = 7 \\Rightarrow x = 3$$\nThus \\boxed{3}.", "= 7\n\\boxed{3}"),
        ("\\begin{align} a &= 2 + 2 \\\\ &= 4 \\end{align}", "= 2 + 2\n= 4"),
        ("\\pi \\approx 3.14, so the area is about 12.56.", "\\approx 3.14"),
        ("$x^2 = 9 \\implies x = 3$ (the positive root).", "= 9\n= 3"),
        ("The total is $\\boxed{\\dfrac{\\sqrt{3}}{2}}$", "\\boxed{\\dfrac{\\sqrt{3}}{2}}"),
        ("First \\boxed{1}, on reflection \\boxed{2}.", "\\boxed{2}"),
        ("So $x = \\boxed{5}$.", "\\boxed{5}"),
        ("**Total:** 4 × 3 = 12", "= 12"),
        ("Since a <= b and c == d, e = 7.", "= 7"),
        ("The pens cost = $12 (three packs), tax = \\$3.50.", "= $12\n= \\$3.50"),
        ("\\[ \\sum_{k=1}^{n} k = \\frac{n(n+1)}{2} \\]", "= \\frac{n(n+1)}{2}"),
        ("x = 5. So y = 5.", "= 5"),
        # no relation, no box: the conclusion
        ("First we count the pairs. There are twelve ways.", "There are twelve ways."),
        ("The answer is \\boxed{3", "The answer is \\boxed{3"),  # an unclosed box is no box
        ("", ""),
    ],
)
def test_partial_solution_general(solution, expected):
    assert partial_solution(solution) == expected


def test_long_right_hand_sides_are_not_results():
    long = " + ".join(f"x^{i}" for i in range(20))
    assert partial_solution(f"f(x) = {long}. Hence \\boxed{{1}}") == "\\boxed{1}"


# Text made of the pieces that steer the rule: relations, brackets, delimiters, other boxes.
_PIECES = [*"ab xy=+-/()[]{}$.,;:&\n07", "\\frac", "\\approx", "\\Rightarrow", "\\]", "\\\\", "\\boxed{"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)


@given(before=_TEXT, after=_TEXT.filter(lambda s: "\\" not in s), n=st.integers(-10**6, 10**6))
def test_a_box_in_any_text_survives(before, after, n):
    assert f"\\boxed{{{n}}}" in partial_solution(f"{before}\\boxed{{{n}}}{after}")


def _problem(**kw) -> Problem:
    return Problem(id="p1", problem="What is 2 + 2?", **kw)


def test_waypoints_for_prefers_the_rows_own():
    assert waypoints_for(_problem(solution="2 + 2 = 4. \\boxed{4}", waypoints="four")) == "four"
    assert waypoints_for(_problem(solution="2 + 2 = 4. \\boxed{4}")) == "\\boxed{4}"
    assert waypoints_for(_problem(solution="2 + 2 = 4. \\boxed{4}", waypoints="  ")) == "\\boxed{4}"


@pytest.mark.parametrize("solution", [None, "", "  \n"])
def test_waypoints_for_needs_a_solution(solution):
    with pytest.raises(ValueError, match="p1"):
        waypoints_for(_problem(solution=solution))


def test_write_waypoints(tmp_path, rows):
    out = tmp_path / "waypoints.jsonl"
    assert write_waypoints(rows[:5], out) == 5
    back = read_problems(out)
    assert [p.waypoints for p in back] == [partial_solution(p.solution) for p in rows[:5]]
    assert [p.model_copy(update={"waypoints": None}) for p in back] == rows[:5]
