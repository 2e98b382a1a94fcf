"""The test-bed's task: two registers updated by a chain of labelled steps that set or copy them.

A problem gives start values of `x` and `y` and a list of labelled steps (`c: y=7` sets y to 7,
`d: x=y` copies y into x), and asks for `10x + y` after the last one. Each step is retrieval only
(find step `d` in the prompt, read the other register off the line before); the final value hangs
on a backward chain of copies through the steps, too many hops for one token of a model this
small, so it is right only by writing the states out:

    a: x=4 so x=4 y=5
    b: y=x so x=4 y=4
    Answer: \\boxed{44}

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
    """Start values and steps `(register, source)`: the register gets a digit ("7") or the other register's value ("y")."""

    x: int
    y: int
    steps: tuple[tuple[str, str], ...]

    def states(self) -> list[tuple[int, int]]:
        """The (x, y) state after each step."""
        regs, out = {"x": self.x, "y": self.y}, []
        for register, source in self.steps:
            regs[register] = regs[source] if source in regs else int(source)
            out.append((regs["x"], regs["y"]))
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
        steps = "".join(f"{LABELS[i]}: {r}={src}\n" for i, (r, src) in enumerate(self.steps))
        return f"Start with x={self.x} and y={self.y}. Apply these steps in order:\n{steps}What is 10x+y at the end?"


def draw_chain(rng: random.Random, n_steps: int) -> Chain:
    """A chain of `n_steps` random steps from random start values; half the steps copy the other register."""
    if not 1 <= n_steps <= len(LABELS):
        raise ValueError(f"n_steps must be in 1..{len(LABELS)}, got {n_steps}")
    steps = []
    for _ in range(n_steps):
        register = rng.choice("xy")
        steps.append((register, ("y" if register == "x" else "x") if rng.random() < 0.5 else str(rng.randint(0, 9))))
    return Chain(rng.randint(0, 9), rng.randint(0, 9), tuple(steps))


def _state(x: int, y: int) -> str:
    return f"x={x} y={y}"


def full_solution(chain: Chain) -> str:
    """Every step written out: what a model must produce to be right."""
    lines = [f"{LABELS[i]}: {r}={src} so {_state(*st)}"
             for i, ((r, src), st) in enumerate(zip(chain.steps, chain.states()))]
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
