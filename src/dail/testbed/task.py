"""The test-bed's task: two registers updated by a chain of labelled steps.

A problem gives start values of `x` and `y` and a list of labelled steps (`c: y=7` sets y to 7,
`d: x=y` copies y into x, `e: y=F(x)` puts F of x's value into y), and asks for `10x + y` after
the last one. Setting and copying are retrieval only (find step `d` in the prompt, read the other
register off the line before); the final value hangs on a backward chain of copies through the
steps, too many hops for one token of a model this small, so it is right only by writing the
states out:

    a: x=4 so x=4 y=5
    b: y=x so x=4 y=4
    Answer: \\boxed{44}

`F` is a permutation of the digits the problem does not state: the *knowledge* an expert has and
the model lacks. Every problem of the splits uses one `F`, drawn from the build's seed; pretraining
documents each use a fresh random one, so a pretrained model has learned that F's values cannot be
known from the problem (it guesses) and that a reference naming the state after an F step can be
copied. Learning the splits' `F` is what training on the train split can teach.

The *expert* solution is written as a human would: the state after every few steps and after each
F step only (the key facts), so it skips exactly the routine steps the model needs (`After c: x=7
y=2.`). The hint for the negative reference is the final answer and the states the expert solution
names, without their labels. Everything here is a pure function of a `random.Random`: the splits
and the pretraining corpus are fixed by a seed.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from dail.data import Problem

__all__ = ["Chain", "draw_chain", "draw_table", "full_solution", "expert_solution", "hint", "problem_row", "LABELS"]

LABELS = string.ascii_lowercase  # a step's label; at most 26 steps


@dataclass(frozen=True)
class Chain:
    """Start values, steps `(register, source)` and the table of `F`.

    A step's register gets a digit ("7"), the other register's value ("y"), or `F` of a register's
    value ("F(y)", "F(x)": `table[value]`). `F` is upper case: a lower-case letter is a step label.
    """

    x: int
    y: int
    steps: tuple[tuple[str, str], ...]
    table: tuple[int, ...] = tuple(range(10))

    def _run(self, regs: dict[str, int], steps) -> list[tuple[int, int]]:
        # One rule for every replay: `states` from the start, `matters` from a changed state.
        out = []
        for register, source in steps:
            regs[register] = (regs[source] if source in regs else
                              self.table[regs[source[2]]] if source.startswith("F(") else int(source))
            out.append((regs["x"], regs["y"]))
        return out

    def states(self) -> list[tuple[int, int]]:
        """The (x, y) state after each step."""
        return self._run({"x": self.x, "y": self.y}, self.steps)

    def f_steps(self) -> list[int]:
        """Indices of the F steps."""
        return [i for i, (_, source) in enumerate(self.steps) if source.startswith("F(")]

    def matters(self, i: int) -> bool:
        """Whether the value step `i` writes reaches the answer (another value there changes it)."""
        register = self.steps[i][0]
        regs = dict(zip("xy", self.states()[i]))
        regs[register] = (regs[register] + 1) % 10  # F is a bijection: if one other value changes it, all do
        x, y = ([(regs["x"], regs["y"])] + self._run(regs, self.steps[i + 1:]))[-1]
        return 10 * x + y != self.answer

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


def draw_table(rng: random.Random) -> tuple[int, ...]:
    """A random permutation of the digits: one `F`."""
    return tuple(rng.sample(range(10), 10))


def draw_chain(rng: random.Random, n_steps: int, table: tuple[int, ...] | None = None, f_steps: int = 0) -> Chain:
    """A chain of `n_steps` random steps from random start values; half the steps copy the other register.

    With a `table`, `f_steps` of the steps but the last (at random places) become F steps.
    """
    if not 1 <= n_steps <= len(LABELS):
        raise ValueError(f"n_steps must be in 1..{len(LABELS)}, got {n_steps}")
    if not 0 <= f_steps <= n_steps - 1 or (f_steps and table is None):
        raise ValueError(f"f_steps must be in 0..{n_steps - 1} and come with a table, got {f_steps}")
    steps = []
    for _ in range(n_steps):
        register = rng.choice("xy")
        steps.append((register, ("y" if register == "x" else "x") if rng.random() < 0.5 else str(rng.randint(0, 9))))
    # F steps are drawn after the others, so a chain without them is the same as before they existed
    for i in sorted(rng.sample(range(n_steps - 1), f_steps)):
        steps[i] = (steps[i][0], f"F({rng.choice('xy')})")
    x, y = rng.randint(0, 9), rng.randint(0, 9)
    return Chain(x, y, tuple(steps)) if table is None else Chain(x, y, tuple(steps), table)


def _state(x: int, y: int) -> str:
    return f"x={x} y={y}"


def full_solution(chain: Chain) -> str:
    """Every step written out: what a model must produce to be right."""
    lines = [f"{LABELS[i]}: {r}={src} so {_state(*st)}"
             for i, ((r, src), st) in enumerate(zip(chain.steps, chain.states()))]
    return "\n".join(lines) + f"\nAnswer: \\boxed{{{chain.answer}}}"


def expert_steps(chain: Chain, every: int) -> list[int]:
    """Indices of the steps a didactic solution names: every `every`-th and every F step, never the last."""
    n = len(chain.steps)
    return sorted(set(range(every - 1, n - 1, every)) | {i for i in chain.f_steps() if i < n - 1})


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
        meta={"split": split, "n_steps": len(chain.steps), "every": every, "f_steps": len(chain.f_steps()),
              "full_solution": full_solution(chain)},
    )
