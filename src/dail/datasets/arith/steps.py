"""What every arith template builds on: the recorder of a problem's steps (`Work`, which raises
`Redraw` when the numbers drawn give a fraction or a non-positive step) and the people problems name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["PEOPLE", "Num", "Person", "Redraw", "Step", "Work"]


class Redraw(Exception):
    """The numbers drawn give a fraction or a non-positive step; the template draws again."""


@dataclass(frozen=True)
class Num:
    value: int
    step: int | None = None  # index of the step that computed it; None for a number of the text


@dataclass(frozen=True)
class Step:
    desc: str
    a: Num
    op: str
    b: Num
    value: int

    def __str__(self) -> str:
        return f"{self.a.value} {self.op} {self.b.value} = {self.value}"


class Work:
    """The steps of one problem, recorded while a template computes them."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def __call__(self, desc: str, a: Num | int, op: str, b: Num | int) -> Num:
        a = a if isinstance(a, Num) else Num(a)
        b = b if isinstance(b, Num) else Num(b)
        if op == "÷":
            if b.value == 0 or a.value % b.value:
                raise Redraw
            value = a.value // b.value
        else:
            value = {"+": a.value + b.value, "-": a.value - b.value, "×": a.value * b.value}[op]
        if value <= 0:  # counts, prices, ages and lengths are positive
            raise Redraw
        self.steps.append(Step(desc, a, op, b, value))
        return Num(value, len(self.steps) - 1)


class Person(NamedTuple):
    name: str
    he: str
    his: str
    He: str  # the pronoun opening a sentence


PEOPLE = [*(Person(n, "she", "her", "She") for n in ("Maya", "Ana", "Priya", "Lena", "Zoe", "Aisha", "Mei")),
          *(Person(n, "he", "his", "He") for n in ("Tom", "Omar", "Ravi", "Leo", "Sam", "Jonas", "Kofi"))]
