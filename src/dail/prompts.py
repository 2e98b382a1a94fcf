"""The roles' prompts (learner, privileged student, negative reference; rationalize), rendered to token ids.

All roles share one set of weights; only the prompt differs (docs/method.md, "The three roles"):

* `learner` -- the problem only: the ordinary inference prompt. It never holds the solution.
* `privileged` -- the problem and the full expert solution(s), with rules for using them (derive
  everything, never cite them). With `PromptConfig.max_prompt_tokens` set, a solution too long for
  the budget is cut by `fit_solution`.
* `negative` -- the problem and the waypoints (`dail.waypoints`; by default the hint made of the
  final answer and the intermediate results).
* `rationalize` -- not one of the three roles: STaR's rationalization (the authors' `answer_only`),
  the privileged student shown the final answer instead of the solution. `expand` uses it in the
  privileged slot for the `star` baseline. The answer is the row's `answer`, else the solution's
  last `\\boxed{}`.

A role is a `dail.sampling.Role` or its name (`Role` is a `StrEnum` whose values are the names above,
so configs and callers may pass plain strings).

Rendering goes through the tokenizer's chat template with the generation prompt appended, so a
trace continues the assistant turn. Templates come from `PromptConfig`. This module does no
sampling, holds no model, and does not build waypoints (the negative role takes them from the row
or the caller).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

from .config import PromptConfig
from .data import Problem
from .roles import Role
from .waypoints import final_box

__all__ = ["LETTERS", "problem_text", "prompt_text", "fit_solution", "render", "render_text"]

LETTERS = string.ascii_uppercase[:10]  # A-J, the letters `grading` accepts

# Where a further reference solution starts, when several are given in one string.
_SOLUTION_LABEL = re.compile(r"Solution \d+:")


def problem_text(problem: Problem, templates: PromptConfig) -> str:
    """The problem statement, with lettered options appended for a multiple-choice problem."""
    if not problem.choices:
        return problem.problem
    if len(problem.choices) > len(LETTERS):
        raise ValueError(f"problem {problem.id!r}: {len(problem.choices)} choices, at most {len(LETTERS)} supported")
    options = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(problem.choices))
    return f"{problem.problem}\n\n{templates.choices_header}\n{options}\n\n{templates.choice_instruction}"


def _answer(problem: Problem) -> str:
    """The final answer the rationalize role is shown: the row's, else the solution's last box."""
    if problem.answer is not None and problem.answer.strip():
        return problem.answer.strip()
    answer = final_box(problem.solution or "")
    if answer is None:
        raise ValueError(f"problem {problem.id!r} has no answer and its solution no \\boxed{{}}: "
                         "the rationalize prompt needs one")
    return answer


def prompt_text(role: Role | str, problem: Problem, templates: PromptConfig, waypoints: str | None = None) -> str:
    """The user message of a role, before the chat template."""
    try:
        role = Role(role)
    except ValueError:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(Role)}") from None
    fields = {"problem": problem_text(problem, templates)}
    if role is Role.PRIVILEGED:
        if not problem.solution:
            raise ValueError(f"problem {problem.id!r} has no solution: the privileged prompt needs one")
        fields["solution"] = problem.solution
    elif role is Role.NEGATIVE:
        wp = waypoints if waypoints is not None else problem.waypoints
        if wp is None:
            raise ValueError(f"problem {problem.id!r} has no waypoints: run `dail waypoints` or pass them")
        fields["waypoints"] = wp
    elif role in (Role.RATIONALIZE, Role.HINT):
        fields["answer"] = _answer(problem)
    # format_map with only the role's fields: a learner template cannot reach the solution.
    return getattr(templates, role.value).format_map(fields)


def fit_solution(solution: str, fits: Callable[[str], bool]) -> str:
    """`solution` cut by the authors' rule until `fits` accepts it (unchanged if it already does).

    While it does not fit: drop the last "Solution N:" block (cut where the last label starts,
    trailing space removed), or, with no label after the first text, keep the first half of the
    characters; repeat. One deviation: a label at the very start is never cut at (the authors' cut
    would leave nothing), the text is halved instead. Raises ValueError when nothing but blank
    text would remain.
    """
    while not fits(solution):
        labels = [m.start() for m in _SOLUTION_LABEL.finditer(solution) if solution[:m.start()].strip()]
        solution = solution[: labels[-1]].rstrip() if labels else solution[: len(solution) // 2]
        if not solution.strip():
            raise ValueError("no part of the solution fits the budget")
    return solution


def _messages(content: str, templates: PromptConfig) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": templates.system}] if templates.system is not None else []
    return messages + [{"role": "user", "content": content}]


def _chat(tokenizer, content: str, templates: PromptConfig) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(_messages(content, templates), tokenize=False, add_generation_prompt=True)
    # Base models without a chat template: plain text, the trace starts on the next line.
    return f"{templates.system}\n\n{content}\n" if templates.system else f"{content}\n"


def _ids(tokenizer, text: str) -> list[int]:
    # The chat template already holds any BOS it wants; adding special tokens again would double it.
    return tokenizer(text, add_special_tokens=not getattr(tokenizer, "chat_template", None))["input_ids"]


def _within_budget(tokenizer, problem: Problem, templates: PromptConfig) -> Problem:
    """The problem with its solution cut so the privileged prompt has at most `max_prompt_tokens` tokens."""
    budget = templates.max_prompt_tokens

    def fits(solution: str) -> bool:
        cut = problem.model_copy(update={"solution": solution})
        return len(_ids(tokenizer, _chat(tokenizer, prompt_text(Role.PRIVILEGED, cut, templates), templates))) <= budget

    try:
        solution = fit_solution(problem.solution, fits)
    except ValueError:
        raise ValueError(f"problem {problem.id!r}: prompts.max_prompt_tokens = {budget} leaves no room for "
                         "the solution in the privileged prompt") from None
    return problem if solution == problem.solution else problem.model_copy(update={"solution": solution})


def render_text(tokenizer, role: Role | str, problem: Problem, templates: PromptConfig,
                waypoints: str | None = None) -> str:
    """The full prompt string of a role through the chat template (generation prompt appended).

    The privileged prompt is cut to `templates.max_prompt_tokens` when that is set (`fit_solution`).
    """
    if role == Role.PRIVILEGED and templates.max_prompt_tokens is not None and problem.solution:
        problem = _within_budget(tokenizer, problem, templates)
    return _chat(tokenizer, prompt_text(role, problem, templates, waypoints), templates)


def render(tokenizer, role: Role | str, problem: Problem, templates: PromptConfig,
           waypoints: str | None = None) -> list[int]:
    """Token ids of a role's prompt, ready for decoding."""
    return _ids(tokenizer, render_text(tokenizer, role, problem, templates, waypoints))
