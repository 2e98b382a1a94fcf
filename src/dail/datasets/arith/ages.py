"""The arith templates of the ages family: age gaps, parents' ages, ages years ago and three people's ages.

A template draws numbers from `rng`, records its steps on `w` and returns the problem text; the
answer is the value of the last step.
"""

from __future__ import annotations

import random

from dail.datasets.arith.steps import PEOPLE, Num, Redraw, Work

__all__ = ["TEMPLATES"]


_TIMES = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}


def _older(rng: random.Random, w: Work) -> str:
    a, b = rng.sample(PEOPLE, 2)
    young, gap, k = rng.randint(4, 30), rng.randint(2, 15), rng.randint(2, 4)
    if k == 4:
        years = rng.randint(2, 12)
        old = w(f"{a.name}'s age", young, "+", gap)
        now = w("sum of their ages now", old, "+", young)
        grow = w("years added in all", years, "×", 2)
        w(f"sum in {years} years", now, "+", grow)
        return (f"{a.name} is {gap} years older than {b.name}, who is {young}. "
                f"What will the sum of their ages be in {years} years?")
    target = young + rng.randint(3, 20)
    until = w("years until then", target, "-", young)
    if k == 3:
        old = w(f"{a.name}'s age now", young, "+", gap)
        text = f"{a.name} is {gap} years older than {b.name}. {b.name} is {young} now."
    else:
        old = Num(young + gap)
        text = f"{a.name} is {young + gap} and {b.name} is {young}."
    w(f"{a.name}'s age then", old, "+", until)
    return text + f" How old will {a.name} be when {b.name} is {target}?"


def _parent(rng: random.Random, w: Work) -> str:
    c = rng.choice(PEOPLE)
    relative = rng.choice(["mother", "father", "aunt", "uncle"])
    age, times = rng.randint(4, 15), rng.randint(2, 5)
    if not 22 <= age * times <= 60:
        raise Redraw
    text = f"{c.name} is {age} years old, and {c.his} {relative} is {_TIMES[times]} as old."
    if rng.random() < 0.5:
        parent = w(f"the {relative}'s age", age, "×", times)
        w(f"the {relative}'s age at {c.name}'s birth", parent, "-", age)
        return text + f" How old was the {relative} when {c.name} was born?"
    target = age + rng.randint(2, 15)
    until = w("years until then", target, "-", age)
    parent = w(f"the {relative}'s age now", age, "×", times)
    w(f"the {relative}'s age then", parent, "+", until)
    return text + f" How old will the {relative} be when {c.name} is {target}?"


def _years_ago(rng: random.Random, w: Work) -> str:
    a, b = rng.sample(PEOPLE, 2)
    ago, young, times = rng.randint(2, 12), rng.randint(3, 15), rng.randint(2, 4)
    text = f"{ago} years ago, {a.name} was {young} and {b.name} was {_TIMES[times]} as old."
    k = rng.randint(2, 4)
    if k == 4:
        a_now = w(f"{a.name}'s age now", young, "+", ago)
    b_then = w(f"{b.name}'s age then", young, "×", times)
    b_now = w(f"{b.name}'s age now", b_then, "+", ago)
    if k == 2:
        return text + f" How old is {b.name} now?"
    if k == 3:
        later = rng.randint(2, 10)
        w(f"{b.name}'s age in {later} years", b_now, "+", later)
        return text + f" How old will {b.name} be {later} years from now?"
    w("sum of their ages now", a_now, "+", b_now)
    return text + " What is the sum of their ages now?"


def _three_ages(rng: random.Random, w: Work) -> str:
    a, b, c = rng.sample(PEOPLE, 3)
    age, gap, k = rng.randint(5, 30), rng.randint(2, 20), rng.randint(4, 6)
    gap += (age + gap) % 2  # half of an even age is whole
    text = (f"{a.name} is {age}. {b.name} is {gap} years older than {a.name}, "
            f"and {c.name} is half as old as {b.name}.")
    b_age = w(f"{b.name}'s age", age, "+", gap)
    c_age = w(f"{c.name}'s age", b_age, "÷", 2)
    years = rng.randint(2, 10)
    if k == 5:
        pair = w(f"{b.name} and {c.name} now", b_age, "+", c_age)
        grow = w("years added", years, "×", 2)
        w(f"their sum in {years} years", pair, "+", grow)
        return text + f" What will the sum of {b.name}'s and {c.name}'s ages be in {years} years?"
    pair = w(f"{a.name} and {b.name}", age, "+", b_age)
    total = w("sum of the three ages", pair, "+", c_age)
    if k == 4:
        return text + " What is the sum of their three ages?"
    grow = w("years added", years, "×", 3)
    w(f"sum in {years} years", total, "+", grow)
    return text + f" What will the sum of their three ages be in {years} years?"


TEMPLATES = [_older, _parent, _years_ago, _three_ages]
