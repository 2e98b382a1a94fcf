"""The test-bed's task: two registers updated by a chain of labelled steps, mod 10.

A problem gives start values of `x` and `y` and a list of labelled steps (`c: y-7`), and asks for
`10x + y` after the last one. Each step is one addition or subtraction mod 10 on one register; a
model this small cannot do several in one token, so it is right only by writing the states out:

    a: x+4 so x=7 y=5
    b: y-2 so x=7 y=3
    Answer: \\boxed{73}

The *expert* solution is written as a human would: the state after every few steps only, so it
skips exactly the steps the model needs (`After c: x=7 y=2.`). The hint for the negative
reference is the final answer and the states the expert solution names, without their labels.
Everything here is a pure function of a `random.Random`: the splits and the pretraining corpus are
fixed by a seed.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from dail.data import Problem

__all__ = ["Chain", "draw_chain", "full_solution", "expert_solution", "hint", "problem_row", "LABELS"]

LABELS = string.ascii_lowercase  # a step's label; at most 26 steps


@dataclass(frozen=True)
class Chain:
    """Start values and steps `(register, sign, digit)`."""

    x: int
    y: int
    steps: tuple[tuple[str, str, int], ...]

    def states(self) -> list[tuple[int, int]]:
        """The (x, y) state after each step."""
        x, y, out = self.x, self.y, []
        for register, sign, digit in self.steps:
            delta = digit if sign == "+" else -digit
            if register == "x":
                x = (x + delta) % 10
            else:
                y = (y + delta) % 10
            out.append((x, y))
        return out

    @property
    def answer(self) -> int:
        """10x + y after the last step."""
        x, y = self.states()[-1]
        return 10 * x + y

    @property
    def text(self) -> str:
        """The problem statement."""
        # One step per line, as the solution writes them: the label is then the same token in both.
        steps = "".join(f"{LABELS[i]}: {r}{s}{d}\n" for i, (r, s, d) in enumerate(self.steps))
        return (f"Start with x={self.x} and y={self.y}. Apply these steps in order, keeping only the last "
                f"digit of each result:\n{steps}What is 10x+y at the end?")


def draw_chain(rng: random.Random, n_steps: int) -> Chain:
    """A chain of `n_steps` random steps from random start values."""
    if not 1 <= n_steps <= len(LABELS):
        raise ValueError(f"n_steps must be in 1..{len(LABELS)}, got {n_steps}")
    steps = tuple((rng.choice("xy"), rng.choice("+-"), rng.randint(1, 9)) for _ in range(n_steps))
    return Chain(rng.randint(0, 9), rng.randint(0, 9), steps)


def _state(x: int, y: int) -> str:
    return f"x={x} y={y}"


def full_solution(chain: Chain) -> str:
    """Every step written out: what a model must produce to be right."""
    lines = [f"{LABELS[i]}: {r}{s}{d} so {_state(*st)}"
             for i, ((r, s, d), st) in enumerate(zip(chain.steps, chain.states()))]
    return "\n".join(lines) + f"\nAnswer: \\boxed{{{chain.answer}}}"


def expert_steps(chain: Chain, every: int) -> list[int]:
    """Indices of the steps a didactic solution names: every `every`-th, and never the last."""
    n = len(chain.steps)
    return [i for i in range(every - 1, n - 1, every)]


def expert_solution(chain: Chain, every: int) -> str:
    """A human-style solution: the state after every `every`-th step, then the answer."""
    states = chain.states()
    lines = [f"After {LABELS[i]}: {_state(*states[i])}." for i in expert_steps(chain, every)]
    return "\n".join(lines + [f"Answer: \\boxed{{{chain.answer}}}"])


def hint(chain: Chain, every: int) -> str:
    """The negative reference's hint: the answer and the expert's states, sorted, without labels."""
    states = chain.states()
    named = sorted({_state(*states[i]) for i in expert_steps(chain, every)})
    text = f"The answer is {chain.answer}."
    return text + (f" States along the way include: {', '.join(named)}." if named else "")


def problem_row(chain: Chain, every: int, pid: str, split: str) -> Problem:
    """A `dail.data.Problem` row: expert solution, answer, hint as waypoints."""
    return Problem(
        id=pid, problem=chain.text, solution=expert_solution(chain, every), answer=str(chain.answer),
        waypoints=hint(chain, every), source="dail-testbed",
        meta={"split": split, "n_steps": len(chain.steps), "every": every,
              "full_solution": full_solution(chain)},
    )
