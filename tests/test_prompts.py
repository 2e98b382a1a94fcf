"""The roles' prompts: the learner never sees the solution, the privileged sees it whole (within its
budget), the negative and rationalize prompts see the answer but not the solution."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dail.config import PromptConfig
from dail.data import Problem
from dail.datasets import resolve_problems
from dail.prompts import fit_solution, prompt_text, render, render_text
from dail.waypoints import waypoints_for

T = PromptConfig()
PROBLEM = Problem(id="p", problem="A pen costs 3 dollars. How much do 4 pens cost?",
                  solution="4 pens: 4 × 3 = 12.\n\\boxed{12}", answer="12", waypoints="= 12; \\boxed{12}")


def test_roles_hold_what_they_should(tokenizer):
    learner = render_text(tokenizer, "learner", PROBLEM, T)
    privileged = render_text(tokenizer, "privileged", PROBLEM, T)
    negative = render_text(tokenizer, "negative", PROBLEM, T)
    for text in (learner, privileged, negative):
        assert PROBLEM.problem in text
        assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    assert PROBLEM.solution not in learner and "\\boxed{12}" not in learner
    assert PROBLEM.solution in privileged
    assert PROBLEM.waypoints in negative and PROBLEM.solution not in negative


def test_ids_match_text(tokenizer):
    ids = render(tokenizer, "privileged", PROBLEM, T)
    assert tokenizer.decode(ids) == render_text(tokenizer, "privileged", PROBLEM, T)


@settings(max_examples=30, deadline=None)
@given(solution=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=3, max_size=80)
       .filter(lambda s: s.strip()))
def test_solution_never_in_learner_prompt(tokenizer, solution):
    problem = Problem(id="p", problem="Compute it.", solution=solution)
    assert solution in render_text(tokenizer, "privileged", problem, T)
    learner = render_text(tokenizer, "learner", problem, T)
    assert solution not in learner.replace(T.learner.format(problem="Compute it."), "")


def test_overrides_and_system_message(tokenizer):
    templates = PromptConfig(system="You are terse.", learner="Q: {problem}", privileged="Q: {problem}\nS: {solution}")
    text = render_text(tokenizer, "learner", PROBLEM, templates)
    assert "You are terse." in text and f"Q: {PROBLEM.problem}" in text


def test_multiple_choice_gets_letters(tokenizer):
    problem = Problem(id="mc", problem="Which is prime?", choices=["4", "6", "7", "9"], answer="C")
    text = render_text(tokenizer, "learner", problem, T)
    assert "(A) 4\n(B) 6\n(C) 7\n(D) 9" in text and T.choice_instruction in text


def test_missing_context_is_a_clear_error(tokenizer):
    bare = Problem(id="bare", problem="x")
    with pytest.raises(ValueError, match="'bare' has no solution"):
        render(tokenizer, "privileged", bare, T)
    with pytest.raises(ValueError, match="'bare' has no waypoints"):
        render(tokenizer, "negative", bare, T)


def test_without_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    assert render_text(tok, "learner", PROBLEM, T) == T.learner.format(problem=PROBLEM.problem) + "\n"


def _sentences(solution: str) -> list[str]:
    """The solution's lines, the unit the negative and rationalize prompts must not repeat."""
    return [line.strip() for line in solution.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def arith():
    return resolve_problems("arith-train")


def test_bundled_negative_prompt_holds_the_answer_not_the_solution(tokenizer, arith):
    for p in arith:
        text = render_text(tokenizer, "negative", p, T, waypoints=waypoints_for(p))
        assert f"The final answer is {p.answer}." in text, p.id
        for sentence in _sentences(p.solution):
            assert sentence not in text, (p.id, sentence)


def test_bundled_privileged_and_learner_prompts(tokenizer, arith):
    for p in arith:
        assert p.solution in render_text(tokenizer, "privileged", p, T), p.id
        learner = render_text(tokenizer, "learner", p, T)
        assert not any(sentence in learner for sentence in _sentences(p.solution)), p.id


def test_rationalize_prompt_holds_the_answer_only(tokenizer, arith):
    for p in arith[:50]:
        text = render_text(tokenizer, "rationalize", p, T)
        assert f"the answer is {p.answer}." in text and p.problem in text, p.id
        for sentence in _sentences(p.solution):
            assert sentence not in text, (p.id, sentence)


def test_rationalize_answer_falls_back_to_the_last_box():
    problem = Problem(id="r", problem="Halve 1.", solution="Half: \\boxed{1} no, \\boxed{\\frac{1}{2}}.")
    assert "the answer is \\frac{1}{2}." in prompt_text("rationalize", problem, T)
    assert "the answer is 7." in prompt_text("rationalize", problem.model_copy(update={"answer": "7"}), T)
    with pytest.raises(ValueError, match="'r' has no answer"):
        prompt_text("rationalize", Problem(id="r", problem="x", solution="no box"), T)


def test_default_templates_say_what_the_method_needs():
    assert "\\boxed{}" in T.learner.format(problem="")
    privileged = T.privileged.format(problem="", solution="")
    for intent in ("Never mention", "every intermediate result yourself", "before your reasoning reaches it",
                   "Length does not matter", "\\boxed{}"):
        assert intent in privileged
    assert T.negative.format(problem="P", waypoints="H").startswith("P\n\nHint: H\n\n")


def test_unknown_role():
    with pytest.raises(ValueError, match="roles are learner, privileged, negative, rationalize"):
        prompt_text("teacher", PROBLEM, T)


# --------------------------------------------------------------------------- the solution budget


@pytest.mark.parametrize(
    ("solution", "limit", "expected"),
    [
        ("Solution 1: a = 1.\nSolution 2: b = 2.\nSolution 3: c = 3.", 40, "Solution 1: a = 1.\nSolution 2: b = 2."),
        ("Solution 1: a = 1.\nSolution 2: b = 2.\nSolution 3: c = 3.", 20, "Solution 1: a = 1."),
        ("Solution 1: a = 1.\nSolution 2: b = 2.", 100, "Solution 1: a = 1.\nSolution 2: b = 2."),  # fits: unchanged
        ("abcdefgh", 5, "abcd"),  # no label: the first half
        ("abcdefgh", 3, "ab"),  # halved twice
        ("Solution 1: abcdefgh", 12, "Solution 1"),  # a label at the start is not cut at: halved
        ("Intro. Solution 2: more", 8, "Intro."),
    ],
)
def test_fit_solution(solution, limit, expected):
    assert fit_solution(solution, lambda s: len(s) <= limit) == expected


def test_fit_solution_gives_up_on_an_empty_cut():
    with pytest.raises(ValueError, match="no part"):
        fit_solution("abc", lambda s: False)
    with pytest.raises(ValueError, match="no part"):
        fit_solution("   Solution 2: x", lambda s: len(s) < 2)


@settings(max_examples=50, deadline=None)
@given(blocks=st.lists(st.text(alphabet="ab =1.\n", min_size=1, max_size=20), min_size=1, max_size=5),
       limit=st.integers(1, 120))
def test_fit_solution_is_a_prefix_that_fits(blocks, limit):
    solution = "x " + " ".join(f"Solution {i + 1}: {b}" for i, b in enumerate(blocks))
    try:
        cut = fit_solution(solution, lambda s: len(s) <= limit)
    except ValueError:
        return
    assert solution.startswith(cut) and len(cut) <= limit and cut.strip()
    if len(solution) <= limit:
        assert cut == solution


def test_privileged_prompt_within_budget(tokenizer):
    solution = "Solution 1: 4 × 3 = 12. \\boxed{12}\nSolution 2: " + "three and three and " * 40 + "\\boxed{12}"
    problem = PROBLEM.model_copy(update={"solution": solution})
    whole = render(tokenizer, "privileged", problem, T)
    assert solution in render_text(tokenizer, "privileged", problem, PromptConfig(max_prompt_tokens=len(whole)))
    budget = PromptConfig(max_prompt_tokens=len(whole) - 1)
    text = render_text(tokenizer, "privileged", problem, budget)
    assert "Solution 1: 4 × 3 = 12. \\boxed{12}" in text and "Solution 2" not in text
    assert len(render(tokenizer, "privileged", problem, budget)) <= len(whole) - 1
    # other roles are never cut
    assert render(tokenizer, "learner", problem, budget) == render(tokenizer, "learner", problem, T)
    with pytest.raises(ValueError, match="max_prompt_tokens = 5 leaves no room"):
        render(tokenizer, "privileged", problem, PromptConfig(max_prompt_tokens=5))
