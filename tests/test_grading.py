"""Tests for dail.grading: extraction, equivalence tables, and the rules' error cases."""

from __future__ import annotations

import threading
import time

import pytest

from dail.grading import answer_kind, extract_answer, extract_answer_span, grade, is_correct

# (predicted, reference, kind, expected)
IS_CORRECT_CASES = [
    # integer: AIME rules -- leading zeros and thousands commas fine, non-integers wrong.
    ("042", "42", "integer", True),
    ("42", "042", "integer", True),
    ("1,000", "1000", "integer", True),
    ("1{,}000", "1000", "integer", True),
    ("1,00", "100", "integer", False),  # malformed grouping is not a thousands separator
    ("-7", "-7", "integer", True),
    ("-7", "7", "integer", False),
    ("+7", "7", "integer", True),
    ("42.0", "42", "integer", False),
    ("42.5", "42", "integer", False),
    ("\\frac{84}{2}", "42", "integer", False),
    ("$42$", "42", "integer", True),
    ("\\text{42}", "42", "integer", True),
    ("42.", "42", "integer", True),  # trailing sentence period
    ("x = 42", "42", "integer", True),
    ("m + n = 42", "42", "integer", True),
    ("41", "42", "integer", False),
    ("42 apples", "42", "integer", False),
    (None, "42", "integer", False),
    ("", "42", "integer", False),
    # math: equivalence by math-verify.
    ("0.5", "\\frac{1}{2}", "math", True),
    ("\\frac{1}{2}", "0.5", "math", True),
    ("\\dfrac{1}{2}", "\\frac12", "math", True),
    ("1/2", "\\frac{1}{2}", "math", True),
    ("\\frac{1}{3}", "\\frac{2}{3}", "math", False),
    ("0.33", "\\frac{1}{3}", "math", False),  # rounded decimals are not the fraction
    ("\\{2,1\\}", "\\{1,2\\}", "math", True),
    ("\\{1,3\\}", "\\{1,2\\}", "math", False),
    ("(1, 2]", "(1,2]", "math", True),
    ("[1,2)", "(1,2]", "math", False),
    ("\\left(0,1\\right)", "(0,1)", "math", True),
    ("\\frac{\\sqrt2}{2}", "\\sqrt{2}/2", "math", True),
    ("\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{3}}{3}", "math", True),
    ("(x+1)^2", "x^2+2x+1", "math", True),
    ("2\\pi", "2 \\pi", "math", True),
    ("x = 3", "3", "math", True),
    ("-3", "3", "math", False),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "math", True),
    ("2+", "2", "math", False),  # malformed: no sub-expression is picked out of it
    ("garbage!!", "3", "math", False),
    ("}{\\frac{", "3", "math", False),
    ("", "3", "math", False),
    (None, "3", "math", False),
    # choice: letters only, in the usual spellings, case-insensitive.
    ("B", "B", "choice", True),
    ("(B)", "B", "choice", True),
    ("B)", "B", "choice", True),
    ("B.", "B", "choice", True),
    ("\\text{B}", "B", "choice", True),
    ("\\textbf{(B)}", "B", "choice", True),
    ("Option B", "B", "choice", True),
    ("b", "B", "choice", True),
    ("B", "(b)", "choice", True),
    ("(B) 42", "B", "choice", True),
    ("J", "J", "choice", True),
    ("C", "B", "choice", False),
    ("(A)", "B", "choice", False),
    ("K", "B", "choice", False),
    ("42", "B", "choice", False),  # the option's content, not its letter: wrong by design
    ("BC", "B", "choice", False),
    ("Bob", "B", "choice", False),
    (None, "B", "choice", False),
    ("", "B", "choice", False),
]


@pytest.mark.parametrize(("predicted", "reference", "kind", "expected"), IS_CORRECT_CASES)
def test_is_correct(predicted: str | None, reference: str, kind: str, expected: bool) -> None:
    assert is_correct(predicted, reference, kind) is expected


# (text, expected answer)
EXTRACT_CASES = [
    ("so the result is \\boxed{42}.", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\frac{\\sqrt{3}}{2^{n+1}}}", "\\frac{\\sqrt{3}}{2^{n+1}}"),
    ("first \\boxed{1}, then \\boxed{2}", "2"),  # last box wins
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces are not groups
    ("$\\boxed{ 7 }$", "7"),
    ("\\boxed {5}", "5"),
    ("\\fbox{C}", "C"),
    ("\\boxed{\\boxed{3}}", "3"),
    ("\\boxed{1} and then \\boxed{2", None),  # cut off inside the final box: no answer
    ("\\boxed{}", None),
    ("The answer is \\boxed{9}. The answer is 8.", "9"),  # a box beats a phrase
    ("Thus the answer is 12.", "12"),
    ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
    ("the answer is 3.14.", "3.14"),
    ("THE ANSWER IS 5", "5"),
    ("The final answer is 6. Let me double-check.", "6"),
    ("Answer: 17", "17"),
    ("**Answer:** 42", "42"),
    ("**Final Answer**: $x = 3$\n", "x = 3"),
    ("Final answer:\n\n  64", "64"),
    ("The answer is 1.\nOn reflection, the answer is 2.", "2"),  # last phrase wins
    ("Answer: 4. Then we restate the final answer.", "4"),  # an empty last phrase is skipped
    ("The answer is \\(12\\)", "12"),
    ("We need to answer the question.", None),
    ("no answer here", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACT_CASES)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "answer", "end"),
    [
        # Box: just past the closing brace.
        ("x \\boxed{42} y", "42", len("x \\boxed{42}")),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", len("\\boxed{\\frac{1}{2}}")),
        ("\\boxed{1} \\boxed{22}.", "22", len("\\boxed{1} \\boxed{22}")),
        # Phrase: just past the trimmed answer, before `$`, `**` and the period.
        ("So the answer is 12.", "12", len("So the answer is 12")),
        ("**Answer:** $7$**\nmore", "7", len("**Answer:** $7")),
        ("\\boxed{3", None, None),
        ("nothing", None, None),
    ],
)
def test_extract_answer_span(text: str, answer: str | None, end: int | None) -> None:
    assert extract_answer_span(text) == (answer, end)
    if end is not None:
        assert text[:end].endswith((answer, answer + "}"))


@pytest.mark.parametrize(
    ("answer", "choices", "expected"),
    [
        ("42", None, "integer"),
        ("-042", None, "integer"),
        ("1,000", None, "integer"),
        ("42.0", None, "math"),
        ("\\frac{1}{2}", None, "math"),
        ("B", ["1", "2", "3", "4"], "choice"),
        ("42", ["41", "42"], "choice"),
        (None, None, None),
        (None, ["a", "b"], None),
    ],
)
def test_answer_kind(answer: str | None, choices: list[str] | None, expected: str | None) -> None:
    assert answer_kind(answer, choices) == expected


def test_unknown_kind_names_allowed_kinds() -> None:
    with pytest.raises(ValueError, match="integer, math, choice"):
        is_correct("1", "1", "exact")


@pytest.mark.parametrize(
    ("reference", "kind"), [("4.5", "integer"), ("Z", "choice"), ("12", "choice")]
)
def test_reference_not_fitting_kind_is_an_error(reference: str, kind: str) -> None:
    with pytest.raises(ValueError, match="reference"):
        is_correct("1", reference, kind)


def test_grade() -> None:
    assert grade("so \\boxed{042}", "42", "integer") == ("042", True)
    assert grade("so \\boxed{0.5}", "\\frac12", "math") == ("0.5", True)
    assert grade("no box", "42", "integer") == (None, False)
    assert grade("so \\boxed{7}", None, None) == ("7", False)


def test_math_is_safe_off_the_main_thread() -> None:
    # signal.alarm raises in worker threads; grading there must still work, not raise.
    results: list[bool] = []
    cases = [("0.5", True), ("\\dfrac{2}{4}", True), ("1/3", False), ("garbage!!", False)]

    def work() -> None:
        results.extend(is_correct(pred, "\\frac{1}{2}", "math") for pred, _ in cases)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert results == [expected for _, expected in cases]


def test_pathological_answer_times_out_on_main_thread() -> None:
    # 9^(9^9) has ~370M digits; without the alarm sympy would grind on it for minutes.
    start = time.monotonic()
    assert is_correct("9^{9^{9}}", "3", "math", timeout_s=1) is False
    assert time.monotonic() - start < 10
