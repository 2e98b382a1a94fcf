"""Tests for dail.waypoints: the hint and the rule on the bundled data and general LaTeX; row overrides."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dail.data import Problem, read_problems
from dail.datasets import SPLITS, resolve_problems
from dail.waypoints import (final_box, intermediate_results, partial_solution, solution_hint, waypoints_for,
                            write_waypoints)


@pytest.fixture(scope="module")
def rows():
    return [p for name in SPLITS for p in resolve_problems(name)]


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
    for mode in ("hint", "rule"):
        assert waypoints_for(_problem(solution="2 + 2 = 4. \\boxed{4}", waypoints="four"), mode) == "four"
    assert waypoints_for(_problem(solution="2 + 2 = 4. \\boxed{4}"), "rule") == "\\boxed{4}"
    assert waypoints_for(_problem(solution="2 + 2 = 4. \\boxed{4}", waypoints="  "), "rule") == "\\boxed{4}"
    hint = "The final answer is 4. Intermediate results along the way include: 2."
    assert waypoints_for(_problem(solution="2 + 2 = 4. \\boxed{4}")) == hint  # hint is the default
    assert waypoints_for(_problem(solution="2 + 2 = 4. \\boxed{4}", waypoints="  "), "hint") == hint


@pytest.mark.parametrize("mode", ["hint", "rule"])
@pytest.mark.parametrize("solution", [None, "", "  \n"])
def test_waypoints_for_needs_a_solution(solution, mode):
    with pytest.raises(ValueError, match="p1"):
        waypoints_for(_problem(solution=solution), mode)


def test_waypoints_for_unknown_mode():
    with pytest.raises(ValueError, match="unknown waypoints mode 'rules'"):
        waypoints_for(_problem(solution="\\boxed{4}"), "rules")


@pytest.mark.parametrize("mode", ["hint", "rule"])
def test_write_waypoints(tmp_path, rows, mode):
    out = tmp_path / "waypoints.jsonl"
    assert write_waypoints(rows[:5], out, mode=mode) == 5
    back = read_problems(out)
    build = solution_hint if mode == "hint" else partial_solution
    assert [p.waypoints for p in back] == [build(p.solution) for p in rows[:5]]
    assert [p.model_copy(update={"waypoints": None}) for p in back] == rows[:5]


def test_write_waypoints_default_is_the_hint(tmp_path, rows):
    out = tmp_path / "waypoints.jsonl"
    write_waypoints(rows[:2], out)
    assert [p.waypoints for p in read_problems(out)] == [solution_hint(p.solution) for p in rows[:2]]


# --------------------------------------------------------------------------- hint mode


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        # the bundled shape; 80 is the answer and is dropped, "100" sorts before "2"
        ("Sale price: 100 - 6000 ÷ 100 = 40.\nCost of 2 guitars: 40 × 2 = 80.\nAnswer: \\boxed{80}",
         "The final answer is 80. Intermediate results along the way include: 100, 2, 40, 6000."),
        # a nested box is read whole; the numbers inside it still count as results
        ("Half of it: $\\boxed{\\frac{1}{2}}$",
         "The final answer is \\frac{1}{2}. Intermediate results along the way include: 1, 2."),
        # string order: "10" before "9"; the last box decides, the earlier box's 9 is a result
        ("Try \\boxed{9}, then 10 - 1 = 9 is wrong; it is 12. \\boxed{12}",
         "The final answer is 12. Intermediate results along the way include: 1, 10, 9."),
        # the answer is compared with its spaces removed
        ("So x = 2n+1.\n\\boxed{2n + 1}",
         "The final answer is 2n + 1. Intermediate results along the way include: 1, 2n."),
        # powers, integer-letter, letter±integer, signed, decimal and exponent numbers
        ("We get 2^{10} and x^2, 3x, n-1, 2n+1, -4, 0.5 and 6.02e23.",
         "Intermediate results along the way include: -4, 0.5, 1, 10, 2, 2^{10}, 2n, 2n+1, 3x, 6.02e23, n-1, x^2."),
        # labels count; letters glued to digits are no standalone numbers
        ("Solution 1: x2 and 7th. Solution 2: 5", "Intermediate results along the way include: 1, 2, 5."),
        # only the answer: no list sentence; nothing at all: ""
        ("The total is \\boxed{42}.", "The final answer is 42."),
        ("There are twelve ways.", ""),
        ("The answer is \\boxed{3", "Intermediate results along the way include: 3."),  # an unclosed box is no box
    ],
)
def test_solution_hint(solution, expected):
    assert solution_hint(solution) == expected


def test_final_box():
    assert final_box("\\boxed{1} then \\boxed{ \\frac{1}{2} }") == "\\frac{1}{2}"
    assert final_box("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert final_box("\\boxed{}") is None and final_box("no box") is None


@given(answer=st.integers(-10**6, 10**6), others=st.lists(st.integers(0, 10**6), max_size=8))
def test_hint_holds_the_answer_and_lists_the_rest(answer, others):
    solution = "".join(f"Step: {n}.\n" for n in others) + f"Answer: \\boxed{{{answer}}}"
    hint = solution_hint(solution)
    assert hint.startswith(f"The final answer is {answer}.")
    rest = sorted({str(n) for n in others} - {str(answer)})
    assert intermediate_results(solution, str(answer)) == rest
    assert (", ".join(rest) in hint) if rest else hint == f"The final answer is {answer}."


def test_bundled_hints_hold_the_answer_not_the_sentences(rows):
    for p in rows:
        hint = solution_hint(p.solution)
        assert hint.startswith(f"The final answer is {p.answer}."), p.id
        assert p.answer not in intermediate_results(p.solution, p.answer), p.id
        for line in p.solution.splitlines():
            assert line.strip() not in hint, (p.id, line)
