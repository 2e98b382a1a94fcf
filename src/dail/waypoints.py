r"""Partial solutions `s~` (waypoints): an expert solution with its reasoning deleted.

DESIGN.md "Waypoints": keep `\boxed{…}` and the right-hand sides of the key equations, drop the
explanation between them. The rule is fixed -- a few regexes and a bracket-aware scan -- and works
on any plain-text, markdown or LaTeX solution, not only the bundled ones:

* Each relation `=`, `\approx` / `≈` or `\Rightarrow` / `\implies` / `⇒` whose right-hand side
  ends a statement gives one waypoint, written with its relation (`= 12`, `\approx 3.14`). The
  right-hand side ends, outside brackets, at a line or sentence end, a math delimiter (`$`, `\]`,
  `\\`, `&`), a clause break (`, ` `;` `\quad` `\text` ` so ` ` and ` …) or an inequality. In a chain
  `a = b = c` only `c` is kept; `x = 2 \Rightarrow y = 4` keeps both 2 and 4. Right-hand sides
  longer than 40 characters are expressions still being worked on, not results, and are dropped;
  so are equations inside a LaTeX argument (`\sum_{k=1}`).
* The last `\boxed{...}` (braces may nest) closes the list, as written; boxes inside equations
  are unwrapped (`x = \boxed{3}` reads `= 3`).
* Consecutive waypoints with the same value collapse into the later one, so `= 18` followed by
  `\boxed{18}` keeps only the box.

Output: one waypoint per line, in solution order, e.g. `= 12\n= 30\n\boxed{18}`. A solution with
neither relation nor box gives its last sentence (its conclusion, cut to 200 characters); an empty
one gives "". Hand-written `waypoints` on a row always win (`waypoints_for`).

Model-based extraction (a prompt asking a model for the waypoints, DESIGN.md's option) is out of
scope here. This module does not render prompts or call models.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from dail.data import Problem, write_jsonl
from dail.grading import _matching_brace  # one brace matcher for the project

__all__ = ["partial_solution", "waypoints_for", "write_waypoints"]

MAX_RESULT_CHARS = 40
MAX_FALLBACK_CHARS = 200

_BOX = re.compile(r"\\boxed\s*\{")
# Relations whose right-hand side may be a result. `==`, `<=`, `>=`, `!=` are not equations.
_EQUALITY = r"(?<![<>!=])=(?!=)|\\approx(?![a-zA-Z])|≈"
_IMPLICATION = r"\\(?:Rightarrow|implies|Longrightarrow)(?![a-zA-Z])|⇒"
_RELATION = re.compile(f"{_EQUALITY}|{_IMPLICATION}")
_CHAINED = re.compile(_EQUALITY)  # a right-hand side ended by one of these is not the result yet
# Where a right-hand side stops (matched only outside brackets).
_STOP = re.compile(
    r"""\n | (?<!\\)\$ | \\\] | \\\) | \\\\ | & | ;
      | [.!?:](?=\s|$)            # sentence end; a decimal point is followed by a digit
      | ,(?=\s)                   # clause break; 1,000 has no space
      | \s\(                      # a remark after the result: `= 12 (the pens)`
      | \s(?:and|so|since|because|which|where|then|hence|thus|therefore|but|or|if|when|for)\b
      | \\(?:quad|qquad|text|textbf|textit|textrm|mbox|end|therefore|because)(?![a-zA-Z])
      | \\(?:le|leq|ge|geq|lt|gt|ne|neq)(?![a-zA-Z])
      | [<>≤≥≠]
    """,
    re.VERBOSE,
)
_TRAILING = re.compile(r"(?:\s|[.,;:*_]|\\[,;:! ])+$")
_CURRENCY = re.compile(r"\\?\$(?=\d)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_OPEN, _CLOSE = "([{", ")]}"


def _closing_brace(text: str, open_at: int) -> int | None:
    """Index of the `}` matching the `{` at `open_at`; None when the group never closes."""
    return _matching_brace(text, open_at + 1)


def _unbox(text: str) -> tuple[str, str | None]:
    """The text with every `\\boxed{X}` replaced by X, and the last box's X (None if no box)."""
    out, last, pos = [], None, 0
    while (m := _BOX.search(text, pos)) is not None:
        end = _closing_brace(text, m.end() - 1)
        if end is None:  # an unclosed box (a truncated solution) is plain text
            out.append(text[pos:m.end()])
            pos = m.end()
            continue
        last = text[m.end():end].strip()
        out += [text[pos:m.start()], text[m.end():end]]
        pos = end + 1
    out.append(text[pos:])
    return "".join(out), last


def _right_hand_side(text: str, start: int) -> tuple[str, bool]:
    """The right-hand side starting at `start`, and whether it is no result.

    It is none when another equality continues the chain, or when the equation sits inside a
    LaTeX argument (`\\sum_{k=1}`: a `}` closes the group around it).
    """
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if _CURRENCY.match(text, i):  # `= $12` is money, not the start of a math segment
        i = _CURRENCY.match(text, i).end()
    depth, begin = 0, start
    while i < len(text):
        c = text[i]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            if depth == 0:  # the group around the equation closes: `(x = 3)` or `_{k=1}`
                return text[begin:i], c == "}"
            depth -= 1
        elif depth == 0:
            if _STOP.match(text, i):
                return text[begin:i], False
            if _RELATION.match(text, i):
                return text[begin:i], bool(_CHAINED.match(text, i))
        i += 1
    return text[begin:], False


def _last_sentence(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    return _SENTENCE_END.split(lines[-1])[-1][:MAX_FALLBACK_CHARS]


def partial_solution(solution: str) -> str:
    """The waypoints of a solution: kept results one per line, the last `\\boxed{}` at the end."""
    text, box = _unbox(solution)
    items: list[tuple[str, str]] = []  # (relation as written, result)
    for m in _RELATION.finditer(text):
        rhs, no_result = _right_hand_side(text, m.end())
        rhs = _TRAILING.sub("", rhs).strip()
        if no_result or not rhs or len(rhs) > MAX_RESULT_CHARS:
            continue
        items.append((m.group(), rhs))
    if box is not None:
        items.append(("\\boxed", box))
    if not items:
        return _last_sentence(solution)
    kept: list[tuple[str, str]] = []
    for rel, value in items:
        if kept and "".join(kept[-1][1].split()) == "".join(value.split()):
            kept.pop()  # a repeat: the later one (the box, if it is one) stands for both
        kept.append((rel, value))
    return "\n".join(f"\\boxed{{{v}}}" if rel == "\\boxed" else f"{rel} {v}" for rel, v in kept)


def waypoints_for(problem: Problem) -> str:
    """The row's own `waypoints` if it has any, else those extracted from its solution."""
    if problem.waypoints is not None and problem.waypoints.strip():
        return problem.waypoints
    if problem.solution is None or not problem.solution.strip():
        raise ValueError(f"problem {problem.id!r} has no solution to take waypoints from")
    return partial_solution(problem.solution)


def write_waypoints(problems: Iterable[Problem], out_path: str | os.PathLike) -> int:
    """Write the problems as JSONL with `waypoints` filled in (atomically); the number written."""
    rows = [p.model_copy(update={"waypoints": waypoints_for(p)}) for p in problems]
    write_jsonl(out_path, rows)
    return len(rows)
