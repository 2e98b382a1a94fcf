"""Generated multi-step arithmetic word problems with terse, didactic expert solutions.

`generate(n, seed)` builds problems from hand-written templates in five families (money, rates,
ages, geometry, counting), each problem a chain of 2-6 binary integer steps `a op b = c`. The
solution shows some steps as `<description>: <expression> = <value>.` and skips the others on
purpose, the way a terse teacher does: a skipped step is either folded into the line that uses its
result (`Total cost: 4 × 3 + 5 × 2 = 22.`) or left out, its result appearing unexplained where it
is used. Those gaps are what DAIL's expansion has to fill. The solution ends with
`Answer: \\boxed{N}`. The full step list stays in `meta` for analysis and is never shown to a model.

Problem i depends only on (seed, i), so a set is a prefix of any larger one with the same seed.
The shipped splits are made from these sets in `dail.datasets`. This module does not read or
write files, grade answers or talk to models.

This module draws a problem and writes its solution; the templates live one family to a module
(`money`, `rates`, `ages`, `geometry`, `counting`), on the step recorder of `steps`.
"""

from __future__ import annotations

import random

from dail import seeding
from dail.data import Problem
from dail.datasets.arith import ages, counting, geometry, money, rates
from dail.datasets.arith.steps import Num, Redraw, Step, Work

__all__ = ["FAMILIES", "SOURCE", "generate", "problem_at"]

SOURCE = "dail-arith"
FAMILIES = ("money", "rates", "ages", "geometry", "counting")

_PREC = {"+": 1, "-": 1, "×": 2, "÷": 2}
_MAX_DRAWS = 1000  # a template that needs more redraws than this has a bug

# The order within a family is part of the draw (`rng.choice`): fixed for good, like the shipped splits.
_TEMPLATES = {
    "money": money.TEMPLATES,
    "rates": rates.TEMPLATES,
    "ages": ages.TEMPLATES,
    "geometry": geometry.TEMPLATES,
    "counting": counting.TEMPLATES,
}


# --- solutions ---------------------------------------------------------------------------------

def _skipped(rng: random.Random, k: int) -> list[int]:
    """Steps the solution leaves out: 30-50% of them (a 2-step one may skip none), never the last."""
    counts = [s for s in range(k) if 0.3 <= s / k <= 0.5] + ([0] if k == 2 else [])
    return sorted(rng.sample(range(k - 1), rng.choice(counts)))


def _expression(steps: list[Step], j: int, folded: dict[int, int]) -> str:
    """Step j as written, with the steps folded into it (`folded[i] == j`) spelled out inline."""
    step = steps[j]

    def operand(x: Num, right: bool) -> str:
        if x.step is None or folded.get(x.step) != j:
            return str(x.value)
        inner = steps[x.step].op
        text = _expression(steps, x.step, folded)
        # Parenthesise only where the order of operations needs it, as a person would.
        needs = _PREC[inner] < _PREC[step.op] or (
            right and _PREC[inner] == _PREC[step.op] and (step.op in "-÷" or inner == "÷"))
        return f"({text})" if needs else text

    return f"{operand(step.a, False)} {step.op} {operand(step.b, True)}"


def _solution(rng: random.Random, steps: list[Step]) -> tuple[str, list[int]]:
    skipped = _skipped(rng, len(steps))
    folded: dict[int, int] = {}
    for i in skipped:
        # Half the skipped steps are folded into the first line that uses them; the rest vanish
        # and their result turns up unexplained. A step used twice in one line (`s × s`) is
        # never folded: writing it out twice is not what a terse teacher does.
        j = next(j for j in range(i + 1, len(steps)) if i in (steps[j].a.step, steps[j].b.step))
        if rng.random() < 0.5 and (steps[j].a.step, steps[j].b.step) != (i, i):
            folded[i] = j
    lines = [f"{s.desc[0].upper()}{s.desc[1:]}: {_expression(steps, j, folded)} = {s.value}."
             for j, s in enumerate(steps) if j not in skipped]
    lines.append(f"Answer: \\boxed{{{steps[-1].value}}}")
    return "\n".join(lines), skipped


def problem_at(seed: int, index: int, *, prefix: str = "arith") -> Problem:
    """Problem `index` of the set drawn from `seed` (what `generate` returns at that index)."""
    # One RNG per problem, seeded by text: problem i never depends on how many others are generated.
    rng = seeding.rng(f"dail-arith/{seed}/{index}")
    family = rng.choice(FAMILIES)
    template = rng.choice(_TEMPLATES[family])
    for _ in range(_MAX_DRAWS):
        work = Work()
        try:
            text = template(rng, work)
            break
        except Redraw:
            continue
    else:
        raise RuntimeError(f"template {template.__name__} found no valid numbers in {_MAX_DRAWS} draws")
    steps = work.steps
    assert 2 <= len(steps) <= 6, (template.__name__, len(steps))
    for i in range(len(steps) - 1):  # every step feeds a later one: no dead ends in a chain
        assert any(i in (s.a.step, s.b.step) for s in steps[i + 1:]), (template.__name__, i)
    solution, skipped = _solution(rng, steps)
    return Problem(
        id=f"{prefix}-{index:05d}", problem=text, solution=solution, answer=str(steps[-1].value), source=SOURCE,
        meta={"steps": [str(s) for s in steps], "n_steps": len(steps), "family": family,
              "template": template.__name__.lstrip("_"), "skipped": skipped},
    )


def generate(n: int, seed: int, *, prefix: str = "arith") -> list[Problem]:
    """`n` problems reproducible from `seed`; problem i depends only on (seed, i)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [problem_at(seed, i, prefix=prefix) for i in range(n)]
