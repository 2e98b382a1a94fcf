r"""Partial solutions `s~` (waypoints): an expert solution with its reasoning deleted.

docs/method.md, "Waypoints". Two fixed constructions, picked by `mode` (`WaypointsConfig.mode`):

**hint** (default, the method's authors' construction, re-implemented): a short hint made of the
final answer and the intermediate results the solution contains, without any of its sentences
(`solution_hint`), e.g. "The final answer is 80. Intermediate results along the way include: 100,
2, 40, 6000."

* The final answer is the content of the LAST `\boxed{...}`, read with brace matching, so
  `\boxed{\frac{1}{2}}` gives `\frac{1}{2}` (the authors' regex stops at the first `}` and gives
  `\frac{1`). An unclosed box is not a box.
* The intermediate results are every match of five patterns over the whole solution, as a set:
  standalone numbers (`12`, `-3`, `0.5`, `6.02e23`), powers (`2^{10}`, `x^2`), integer-letter
  (`2x`), letter±integer (`n+1`) and integer-letter±integer (`2n+1`). Those equal to the final
  answer (spaces removed) are dropped; the rest are sorted as strings ("10" before "9") and all
  listed. Labels count too ("Solution 2:" gives `2`): the list is deliberately crude.
* Without a box only the list sentence is written; an empty list is left out (the authors write
  the sentence with nothing after it); a solution with neither gives "".

**rule** (the project's first construction): keep `\boxed{…}` and the right-hand sides of the key
equations, drop the explanation between them (`partial_solution`). The rule is a few regexes and a
bracket-aware scan, and works on any plain-text, markdown or LaTeX solution:

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
one gives "".

Hand-written `waypoints` on a row always win, whatever the mode (`waypoints_for`).

Model-based extraction (a prompt asking a model for the waypoints) is left out: both constructions
above are fixed functions of the solution, so the negative reference never depends on a model's
output. This module does not render prompts or call models.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Literal, get_args

from dail.data import Problem, check_output, write_jsonl
from dail.grading import matching_brace  # one brace matcher for the project

__all__ = ["Mode", "MODES", "final_box", "intermediate_results", "solution_hint", "partial_solution",
           "waypoints_for", "write_waypoints"]

Mode = Literal["hint", "rule"]
MODES: tuple[str, ...] = get_args(Mode)

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

# hint mode: what counts as an intermediate result. Each pattern is searched on its own and the
# matches are pooled, so one span may give several results (`2n+1` also gives `1`).
_RESULT_PATTERNS = [re.compile(p, re.VERBOSE) for p in (
    r"(?<!\w) [-+]? \d* \.? \d+ (?:[eE] [-+]? \d+)? (?!\w)",  # a standalone number: 12, -3, .5, 6.02e23
    r"[a-zA-Z0-9.]+ \^ \{? [a-zA-Z0-9+\-.]+ \}?",  # a power: 2^{10}, x^2, n^{k+1}
    r"(?<!\w) \d+ [a-zA-Z] (?!\w)",  # integer times a letter: 2x
    r"(?<!\w) [a-zA-Z] [-+] \d+ (?!\w)",  # letter plus or minus an integer: n+1, x-3
    r"(?<!\w) \d+ [a-zA-Z] [-+] \d+ (?!\w)",  # both: 2n+1
)]
HINT_ANSWER = "The final answer is {answer}."
HINT_RESULTS = "Intermediate results along the way include: {results}."


def _closing_brace(text: str, open_at: int) -> int | None:
    """Index of the `}` matching the `{` at `open_at`; None when the group never closes."""
    return matching_brace(text, open_at + 1)


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


def final_box(text: str) -> str | None:
    """Content of the last closed `\\boxed{...}` (brace-matched, stripped); None without one or if empty."""
    return _unbox(text)[1] or None


def intermediate_results(solution: str, answer: str | None = None) -> list[str]:
    """The numbers and simple expressions of a solution, deduplicated and sorted as strings.

    Results equal to `answer` once spaces are removed are left out. String order on purpose
    (the authors' order): "10" sorts before "9".
    """
    found = {m.group() for pattern in _RESULT_PATTERNS for m in pattern.finditer(solution)}
    if answer is not None:
        found.discard("".join(answer.split()))
    return sorted(found)


def solution_hint(solution: str) -> str:
    """The hint of the negative reference: the final answer, then the intermediate results.

    The authors' `form_cheating_hint` in our words (module docstring), with one fix: the final
    answer is brace-matched, so nested braces (`\\boxed{\\frac{1}{2}}`) survive whole.
    """
    answer = final_box(solution)
    results = intermediate_results(solution, answer)
    sentences = [HINT_ANSWER.format(answer=answer)] if answer is not None else []
    if results:
        sentences.append(HINT_RESULTS.format(results=", ".join(results)))
    return " ".join(sentences)


def waypoints_for(problem: Problem, mode: Mode = "hint") -> str:
    """The row's own `waypoints` if it has any, else those built from its solution by `mode`."""
    if mode not in MODES:
        raise ValueError(f"unknown waypoints mode {mode!r}; modes are {', '.join(MODES)}")
    if problem.waypoints is not None and problem.waypoints.strip():
        return problem.waypoints
    if problem.solution is None or not problem.solution.strip():
        raise ValueError(f"problem {problem.id!r} has no solution to take waypoints from")
    return solution_hint(problem.solution) if mode == "hint" else partial_solution(problem.solution)


def write_waypoints(problems: Iterable[Problem], out_path: str | os.PathLike, mode: Mode = "hint") -> int:
    """Write the problems as JSONL with `waypoints` filled in (atomically); the number written."""
    check_output(out_path)  # one DataError naming a bad output, as every stage gives
    rows = [p.model_copy(update={"waypoints": waypoints_for(p, mode)}) for p in problems]
    write_jsonl(out_path, rows)
    return len(rows)
