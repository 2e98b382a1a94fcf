"""The arith templates of the rates family: trips, wages, machines working together and round trips.

A template draws numbers from `rng`, records its steps on `w` and returns the problem text; the
answer is the value of the last step.
"""

from __future__ import annotations

import random

from dail.datasets.arith.steps import PEOPLE, Redraw, Work

__all__ = ["TEMPLATES"]


def _trip(rng: random.Random, w: Work) -> str:
    vehicle, lo, hi = rng.choice([("car", 40, 90), ("bus", 30, 70), ("cyclist", 10, 25),
                                  ("train", 60, 120), ("boat", 12, 30)])
    v1, v2, t1, t2 = rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(2, 5), rng.randint(2, 5)
    d1 = w("first part", v1, "×", t1)
    d2 = w("second part", v2, "×", t2)
    total = w("total distance", d1, "+", d2)
    text = rng.choice([f"A {vehicle} goes {v1} km per hour for {t1} hours, then {v2} km per hour for {t2} hours.",
                       f"For {t1} hours a {vehicle} does {v1} km per hour, then for {t2} hours {v2} km per hour."])
    kind = rng.choice(["total", "left", "average"])
    if kind == "total":
        return text + " How many km does it travel in all?"
    if kind == "left":
        route = total.value + rng.randint(10, 150)
        w("distance left", route, "-", total)
        return text + f" The whole route is {route} km. How many km are still left?"
    hours = w("total time", t1, "+", t2)
    w("average speed", total, "÷", hours)
    return text + " What is its average speed in km per hour?"


def _wage(rng: random.Random, w: Work) -> str:
    p = rng.choice(PEOPLE)
    place = rng.choice(["bakery", "library", "garage", "cinema", "farm shop", "pool"])
    rate, hours, days, k = rng.randint(8, 25), rng.randint(3, 8), rng.randint(2, 6), rng.randint(2, 5)
    daily = w("pay per day", rate, "×", hours)
    pay = w("pay for the days", daily, "×", days)
    text = rng.choice([f"{p.name} works at the {place} for ${rate} an hour, {hours} hours a day, {days} days.",
                       f"{p.name} works {days} days at the {place}, {hours} hours each day, at ${rate} an hour."])
    if k == 2:
        return text + f" How many dollars does {p.he} earn?"
    if k == 4:
        bonus = 5 * rng.randint(2, 10)
        pay = w("pay with the bonus", pay, "+", bonus)
        text += f" {p.He} also gets a ${bonus} bonus."
    elif k == 5:
        extra, extra_rate = rng.randint(2, 6), rate + rng.randint(2, 8)
        overtime = w("overtime pay", extra, "×", extra_rate)
        pay = w("total pay", pay, "+", overtime)
        text += f" {p.He} also works {extra} extra hours at ${extra_rate} an hour."
    spend = rng.randint(10, pay.value - 1)
    w("money left", pay, "-", spend)
    thing = rng.choice(["rent", "groceries", "a train pass", "a gift"])
    return text + f" {p.He} spends ${spend} on {thing}. How many dollars are left?"


def _work_together(rng: random.Random, w: Work) -> str:
    maker, unit = rng.choice([("printer", "pages"), ("machine", "bottles"), ("pump", "litres"),
                              ("baker", "rolls"), ("robot", "parts")])
    a, b, minutes = rng.randint(2, 12), rng.randint(2, 12), rng.randint(3, 20)
    text = f"One {maker} makes {a} {unit} a minute and a second {maker} makes {b} {unit} a minute."
    if rng.random() < 0.5:
        alone = rng.randint(2, 10)
        job = (a + b) * minutes + a * alone
        early = w(f"{unit} from the first {maker} alone", a, "×", alone)
        rest = w(f"{unit} still to make", job, "-", early)
        question = (f" The first works alone for {alone} minutes, then both work together. "
                    f"How many minutes do they work together to make {job} {unit} in all?")
    else:
        rest = (a + b) * minutes
        question = f" Working together, how many minutes do they need for {rest} {unit}?"
    rate = w(f"{unit} per minute together", a, "+", b)
    w("minutes", rest, "÷", rate)
    return text + question


def _round_trip(rng: random.Random, w: Work) -> str:
    p = rng.choice(PEOPLE)
    verb, lo, hi = rng.choice([("cycles", 8, 20), ("drives", 30, 70), ("runs", 6, 12)])
    v, faster, t_back = rng.randint(lo, hi), rng.randint(1, 10), rng.randint(2, 6)
    dist = (v + faster) * t_back
    if dist % v:
        raise Redraw
    hours = dist // v
    place = rng.choice(["the lake", "the coast", "a farm", "the next town"])
    k = rng.randint(2, 4)
    text = f"{p.name} {verb} {dist} km to {place} in {hours} hours."
    speed = w("speed there", dist, "÷", hours)
    if k == 2:
        other = v * rng.randint(2, 8)
        w("time for the new trip", other, "÷", speed)
        return text + f" At the same speed, how many hours does a trip of {other} km take?"
    speed_back = w("speed back", speed, "+", faster)
    back = w("time back", dist, "÷", speed_back)
    text += f" On the way back {p.he} is {faster} km per hour faster."
    if k == 3:
        return text + " How many hours does the way back take?"
    w("total time", hours, "+", back)
    return text + " How many hours does the round trip take?"


TEMPLATES = [_trip, _wage, _work_together, _round_trip]
