"""The three roles' prompts: the learner never sees the solution, the privileged sees it whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dail.config import PromptConfig
from dail.data import Problem
from dail.prompts import render, render_text

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
