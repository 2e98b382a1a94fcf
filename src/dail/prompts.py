"""The three roles' prompts (learner, privileged student, negative reference), rendered to token ids.

All roles share one set of weights; only the prompt differs (DESIGN.md, "The three roles"). The
learner's prompt is the ordinary inference prompt and never holds the solution. Rendering goes
through the tokenizer's chat template with the generation prompt appended, so a trace continues the
assistant turn. Templates come from `PromptConfig`. This module does no sampling and holds no model.
"""

from __future__ import annotations

import string
from typing import Literal

from .config import PromptConfig
from .data import Problem

__all__ = ["Role", "ROLES", "LETTERS", "problem_text", "prompt_text", "render", "render_text", "render_roles"]

Role = Literal["learner", "privileged", "negative"]
ROLES: tuple[Role, ...] = ("learner", "privileged", "negative")
LETTERS = string.ascii_uppercase[:10]  # A-J, the letters `grading` accepts


def problem_text(problem: Problem, templates: PromptConfig) -> str:
    """The problem statement, with lettered options appended for a multiple-choice problem."""
    if not problem.choices:
        return problem.problem
    if len(problem.choices) > len(LETTERS):
        raise ValueError(f"problem {problem.id!r}: {len(problem.choices)} choices, at most {len(LETTERS)} supported")
    options = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(problem.choices))
    return f"{problem.problem}\n\n{templates.choices_header}\n{options}\n\n{templates.choice_instruction}"


def prompt_text(role: Role, problem: Problem, templates: PromptConfig, waypoints: str | None = None) -> str:
    """The user message of a role, before the chat template."""
    fields = {"problem": problem_text(problem, templates)}
    if role == "privileged":
        if not problem.solution:
            raise ValueError(f"problem {problem.id!r} has no solution: the privileged prompt needs one")
        fields["solution"] = problem.solution
    elif role == "negative":
        wp = waypoints if waypoints is not None else problem.waypoints
        if wp is None:
            raise ValueError(f"problem {problem.id!r} has no waypoints: run `dail waypoints` or pass them")
        fields["waypoints"] = wp
    elif role != "learner":
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    # format_map with only the role's fields: a learner template cannot reach the solution.
    return getattr(templates, role).format_map(fields)


def _messages(content: str, templates: PromptConfig) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": templates.system}] if templates.system is not None else []
    return messages + [{"role": "user", "content": content}]


def render_text(tokenizer, role: Role, problem: Problem, templates: PromptConfig, waypoints: str | None = None) -> str:
    """The full prompt string of a role through the chat template (generation prompt appended)."""
    content = prompt_text(role, problem, templates, waypoints)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(_messages(content, templates), tokenize=False, add_generation_prompt=True)
    # Base models without a chat template: plain text, the trace starts on the next line.
    return f"{templates.system}\n\n{content}\n" if templates.system else f"{content}\n"


def render(tokenizer, role: Role, problem: Problem, templates: PromptConfig, waypoints: str | None = None) -> list[int]:
    """Token ids of a role's prompt, ready for decoding."""
    text = render_text(tokenizer, role, problem, templates, waypoints)
    # The chat template already holds any BOS it wants; adding special tokens again would double it.
    return tokenizer(text, add_special_tokens=not getattr(tokenizer, "chat_template", None))["input_ids"]


def render_roles(tokenizer, problem: Problem, templates: PromptConfig, roles: tuple[Role, ...] = ROLES) -> dict[str, list[int]]:
    """Token ids of several roles' prompts for one problem."""
    return {role: render(tokenizer, role, problem, templates) for role in roles}
