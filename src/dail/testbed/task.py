"""The test-bed's task: two registers updated by a chain of labelled steps, three unstated functions.

A problem gives start values of `x` and `y` and a list of labelled steps: `c: y=7` sets y to 7,
`d: x=y` copies y into x, `e: y=G(x)` puts G of x's value into y, `f: swap` exchanges the two. It
asks for `10x + y` after the last step. Every step is retrieval (find step `d` in the prompt, read
the registers off the line before), but the final value hangs on a backward chain through the
steps, too many hops for one token of a small model, so it is right only by writing the states out:

    a: x=4 so x=4 y=5
    b: y=G(x) then x=4 y=2
    Answer: \\boxed{42}

The connective (`so`, `then`, `now`) is free: every writer picks one at random per line, so a
trace has tokens where any choice is right, as natural text has.

`F`, `G` and `H` are permutations of the digits that no problem states: 30 facts an expert knows and
the model lacks. The splits share one set of tables, drawn from the build's seed; pretraining
documents each draw fresh ones, so a pretrained model has learned that a function's value cannot be
known from the problem (it guesses) and that a reference naming the state after that step can be
copied. Learning the splits' tables is what training on the train split can teach.

The *expert* solution is written as a human would: the state after every few steps and after each
function step only (`After e: x=7 y=2.`). Written by the roles of the method (`write`):

* the *learner* writes every step; at a small rate it answers early with the state it has (a wrong
  shortcut of its own);
* the *privileged* writer (the expert solution in view) writes every step but sometimes jumps:
  it writes the expert's line for a state two or more steps ahead and goes on from there, a move
  only the solution makes possible;
* the *negative* writer (the hint: the answer and a few checkpoints without any function value)
  often answers early with the hint's answer or jumps to a checkpoint.

Everything here is a pure function of a `random.Random`: the splits and the corpus are fixed by a seed.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from dail.data import Problem

__all__ = ["Chain", "Style", "draw_chain", "draw_tables", "full_solution", "expert_steps", "expert_solution",
           "checkpoints", "hint", "write", "problem_row", "LABELS", "FUNCTIONS", "CONNECTIVES"]

LABELS = string.ascii_lowercase  # a step's label; at most 26 steps
FUNCTIONS = "FGH"  # upper case: a lower-case letter is a step label
CONNECTIVES = ("so", "then", "now")
IDENTITY = tuple(range(10))


@dataclass(frozen=True)
class Chain:
    """Start values, steps `(register, source)` and the tables of F, G and H.

    A step's register gets a digit ("7"), the other register's value ("y"), or a function of a
    register's value ("G(y)": `tables[1][y]`); source "swap" exchanges the registers.
    """

    x: int
    y: int
    steps: tuple[tuple[str, str], ...]
    tables: tuple[tuple[int, ...], ...] = (IDENTITY, IDENTITY, IDENTITY)

    def _run(self, regs: dict[str, int], steps) -> list[tuple[int, int]]:
        # One rule for every replay: `states` from the start, `matters` from a changed state.
        out = []
        for register, source in steps:
            if source == "swap":
                regs["x"], regs["y"] = regs["y"], regs["x"]
            elif source in regs:
                regs[register] = regs[source]
            elif source[0] in FUNCTIONS:
                regs[register] = self.tables[FUNCTIONS.index(source[0])][regs[source[2]]]
            else:
                regs[register] = int(source)
            out.append((regs["x"], regs["y"]))
        return out

    def states(self) -> list[tuple[int, int]]:
        """The (x, y) state after each step."""
        return self._run({"x": self.x, "y": self.y}, self.steps)

    def hidden_steps(self) -> list[int]:
        """Indices of the steps that apply a function."""
        return [i for i, (_, source) in enumerate(self.steps) if source[0] in FUNCTIONS]

    def facts(self) -> list[str]:
        """The function values the chain uses, in step order (`"G(3)=7"`): the hidden knowledge it needs."""
        states = [(self.x, self.y)] + self.states()
        out = []
        for i in self.hidden_steps():
            register, source = self.steps[i]
            arg = dict(zip("xy", states[i]))[source[2]]
            out.append(f"{source[0]}({arg})={dict(zip('xy', states[i + 1]))[register]}")
        return out

    def _taints(self) -> list[dict[str, bool]]:
        """Before each step and after the last: which registers hold a value a function wrote (directly or by copies)."""
        taint, out = {"x": False, "y": False}, []
        for register, source in self.steps:
            out.append(dict(taint))
            if source == "swap":
                taint["x"], taint["y"] = taint["y"], taint["x"]
            else:
                taint[register] = taint[source] if source in taint else source[0] in FUNCTIONS
        return out + [taint]

    def tainted(self) -> list[bool]:
        """After each step: whether the state holds a value a function wrote (directly or by a copy)."""
        return [t["x"] or t["y"] for t in self._taints()[1:]]

    def direct(self, i: int) -> bool:
        """Whether the value step `i` writes reaches the answer through copies alone, not only through a function.

        A model that guesses a function's value writes a chain of guesses consistent with itself: a
        value that reaches the answer only as another function's input is then never checked, and
        only the values that survive to the last state decide whether the answer is right.
        """
        truth = self.states()
        register = self.steps[i][0]
        regs = dict(zip("xy", truth[i]))
        regs[register] = (regs[register] + 1) % 10
        for j in range(i + 1, len(self.steps)):
            if j in self.hidden_steps():  # a guess does not depend on its input: hold it at its true value
                regs[self.steps[j][0]] = dict(zip("xy", truth[j]))[self.steps[j][0]]
            else:
                self._run(regs, self.steps[j: j + 1])
        return 10 * regs["x"] + regs["y"] != self.answer

    def matters(self, i: int) -> bool:
        """Whether the value step `i` writes reaches the answer (another value there changes it)."""
        register = self.steps[i][0]
        regs = dict(zip("xy", self.states()[i]))
        regs[register] = (regs[register] + 1) % 10  # tables are bijections: if one other value changes it, all do
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
        steps = "".join(f"{LABELS[i]}: {_step(r, src)}\n" for i, (r, src) in enumerate(self.steps))
        return f"Start with x={self.x} and y={self.y}. Apply these steps in order:\n{steps}What is 10x+y at the end?"


def _step(register: str, source: str) -> str:
    return "swap" if source == "swap" else f"{register}={source}"


def draw_tables(rng: random.Random) -> tuple[tuple[int, ...], ...]:
    """Random permutations of the digits: one table for each of F, G and H."""
    return tuple(tuple(rng.sample(range(10), 10)) for _ in FUNCTIONS)


def draw_chain(rng: random.Random, n_steps: int, tables: tuple[tuple[int, ...], ...] | None = None,
               hidden: int = 0, swap: float = 0.0, last: bool = False) -> Chain:
    """A chain of `n_steps` random steps from random start values; half the other steps copy a register.

    A step is a swap with probability `swap`. With `tables`, `hidden` of the steps (at random places;
    the last one only with `last`) apply a random function to a random register.
    """
    if not 1 <= n_steps <= len(LABELS):
        raise ValueError(f"n_steps must be in 1..{len(LABELS)}, got {n_steps}")
    places = n_steps if last else n_steps - 1
    if not 0 <= hidden <= places or (hidden and tables is None):
        raise ValueError(f"hidden must be in 0..{places} and come with tables, got {hidden}")
    steps = []
    for _ in range(n_steps):
        register = rng.choice("xy")
        if rng.random() < swap:
            steps.append((register, "swap"))
        else:
            steps.append((register, ("y" if register == "x" else "x") if rng.random() < 0.5 else str(rng.randint(0, 9))))
    for i in sorted(rng.sample(range(places), hidden)):
        steps[i] = (steps[i][0], f"{rng.choice(FUNCTIONS)}({rng.choice('xy')})")
    x, y = rng.randint(0, 9), rng.randint(0, 9)
    return Chain(x, y, tuple(steps)) if tables is None else Chain(x, y, tuple(steps), tables)


def _state(x: int, y: int) -> str:
    return f"x={x} y={y}"


def _line(chain: Chain, i: int, state: tuple[int, int], connective: str) -> str:
    return f"{LABELS[i]}: {_step(*chain.steps[i])} {connective} {_state(*state)}"


def _answer_line(answer: int) -> str:
    return f"Answer: \\boxed{{{answer}}}"


def full_solution(chain: Chain, rng: random.Random | None = None) -> str:
    """Every step written out: what a model must produce to be right (connective "so", or random with `rng`)."""
    return write(chain, Style(), rng)


def expert_steps(chain: Chain, every: int) -> list[int]:
    """Indices of the steps a didactic solution names: every `every`-th and every function step.

    The last step only when it applies a function: its value is a fact the answer alone does not name.
    """
    n = len(chain.steps)
    return sorted(set(range(every - 1, n - 1, every)) | set(chain.hidden_steps()))


def _after(chain: Chain, i: int, state: tuple[int, int]) -> str:
    return f"After {LABELS[i]}: {_state(*state)}."


def expert_solution(chain: Chain, every: int) -> str:
    """A human-style solution: the state after every `every`-th and every function step, then the answer."""
    states = chain.states()
    return "\n".join([_after(chain, i, states[i]) for i in expert_steps(chain, every)] + [_answer_line(chain.answer)])


def checkpoints(chain: Chain, every: int) -> list[int]:
    """The expert's named steps whose state holds no function value: what a hint may show."""
    tainted = chain.tainted()
    return [i for i in expert_steps(chain, every) if not tainted[i]]


def hint(chain: Chain, every: int) -> str:
    """The negative reference's hint: the answer and the checkpoints, none of the hidden facts."""
    states = chain.states()
    return " ".join([f"The answer is {chain.answer}."] + [_after(chain, i, states[i]) for i in checkpoints(chain, every)])


@dataclass(frozen=True)
class Style:
    """How a role writes: rates per line of an early answer and of a jump ahead (`targets`: steps it may jump to).

    `early_answer` is "state" (10x + y of the state so far: a guess) or "true" (the answer read off a
    hint). A jump goes to the nearest target at least two steps ahead.
    """

    early: float = 0.0
    early_answer: str = "state"
    jump: float = 0.0
    targets: tuple[int, ...] = ()


def write(chain: Chain, style: Style, rng: random.Random | None = None) -> str:
    """A completion written in `style`: step lines, early answers and jumps; connectives random with `rng`."""
    states, n = chain.states(), len(chain.steps)
    lines, i = [], 0
    while i < n:
        state = states[i - 1] if i else (chain.x, chain.y)
        if i and style.early and rng.random() < style.early:
            return "\n".join(lines + [_answer_line(chain.answer if style.early_answer == "true" else 10 * state[0] + state[1])])
        ahead = [j for j in style.targets if j >= i + 1]
        if ahead and style.jump and rng.random() < style.jump:
            j = min(ahead)
            lines.append(_after(chain, j, states[j]))
            i = j + 1
            continue
        lines.append(_line(chain, i, states[i], rng.choice(CONNECTIVES) if rng is not None else CONNECTIVES[0]))
        i += 1
    return "\n".join(lines + [_answer_line(chain.answer)])


def problem_row(chain: Chain, every: int, pid: str, split: str) -> Problem:
    """A `dail.data.Problem` row: expert solution, answer, hint as waypoints."""
    return Problem(
        id=pid, problem=chain.text, solution=expert_solution(chain, every), answer=str(chain.answer),
        full_solution=full_solution(chain), waypoints=hint(chain, every), source="dail-testbed",
        meta={"split": split, "n_steps": len(chain.steps), "every": every, "facts": chain.facts()},
    )
