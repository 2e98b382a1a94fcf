"""The arith templates of the money family: prices, change, discounts, savings and split bills.

A template draws numbers from `rng`, records its steps on `w` and returns the problem text; the
answer is the value of the last step.
"""

from __future__ import annotations

import random

from dail.datasets.arith.steps import PEOPLE, Work

__all__ = ["TEMPLATES"]


# (plural noun, lowest price, highest price) in dollars
_GOODS = [("pens", 1, 4), ("notebooks", 2, 6), ("apples", 1, 3), ("candles", 3, 9), ("mugs", 4, 12),
          ("pairs of socks", 2, 7), ("sticker sheets", 1, 3), ("packs of batteries", 3, 8),
          ("comic books", 3, 9), ("plant pots", 2, 8)]
_ITEMS = ["jacket", "lamp", "backpack", "kettle", "chair", "helmet", "guitar", "tent", "bicycle", "kite"]


def _shopping(rng: random.Random, w: Work) -> str:
    p = rng.choice(PEOPLE)
    (g1, lo1, hi1), (g2, lo2, hi2) = rng.sample(_GOODS, 2)
    n1, n2, p1, p2 = rng.randint(2, 9), rng.randint(2, 9), rng.randint(lo1, hi1), rng.randint(lo2, hi2)
    c1 = w(f"cost of the {g1}", n1, "×", p1)
    c2 = w(f"cost of the {g2}", n2, "×", p2)
    total = w("total cost", c1, "+", c2)
    text = rng.choice([
        f"{p.name} buys {n1} {g1} at ${p1} each and {n2} {g2} at ${p2} each.",
        f"At the market, {p.name} picks up {n1} {g1} for ${p1} apiece and {n2} {g2} for ${p2} apiece.",
        f"{g1[0].upper() + g1[1:]} cost ${p1} each and {g2} cost ${p2} each. "
        f"{p.name} buys {n1} {g1} and {n2} {g2}.",
    ])
    if rng.random() < 0.5:
        return text + rng.choice([f" How many dollars does {p.he} spend?", " What is the total cost in dollars?"])
    bill = rng.choice([b for b in (20, 50, 100, 200, 500) if b > total.value][:2])
    w("change", bill, "-", total)
    return text + f" {p.He} pays with a ${bill} bill. How much change does {p.he} get, in dollars?"


def _discount(rng: random.Random, w: Work) -> str:
    p = rng.choice(PEOPLE)
    item = rng.choice(_ITEMS)
    # A multiple of 20 times a multiple of 5 is a multiple of 100: the discount is whole.
    price, pct, k = 20 * rng.randint(1, 15), 5 * rng.randint(1, 12), rng.randint(2, 5)
    text = rng.choice([f"A {item} costs ${price}. This week it is {pct}% off.",
                       f"The price of a {item} is ${price}, and the shop takes {pct}% off."])
    x = w("price times the percentage", price, "×", pct)
    disc = w("discount", x, "÷", 100)
    if k == 2:
        return text + " How many dollars is the discount?"
    sale = w("sale price", price, "-", disc)
    if k == 3:
        return text + " What is the sale price in dollars?"
    n = rng.randint(2, 4)
    total = w(f"cost of {n} {item}s", sale, "×", n)
    text += f" {p.name} buys {n} of them at the sale price."
    if k == 4:
        return text + f" How many dollars does {p.he} pay?"
    bill = 100 * (total.value // 100 + 1)
    w("change", bill, "-", total)
    return text + f" {p.He} pays with ${bill}. How much change does {p.he} get?"


def _savings(rng: random.Random, w: Work) -> str:
    p = rng.choice(PEOPLE)
    job = rng.choice(["walking dogs", "delivering papers", "helping at a café", "mowing lawns"])
    saved, spent, weeks = rng.randint(4, 30), rng.randint(3, 25), rng.randint(3, 15)
    text = rng.choice([f"{p.name} earns ${saved + spent} a week {job} and spends ${spent} of it.",
                       f"Every week {p.name} makes ${saved + spent} {job} and saves all but ${spent}."])
    rest = goal = saved * weeks
    if rng.random() < 0.5:
        start = rng.randint(5, 60)
        goal = rest + start
        rest = w("still to save", goal, "-", start)
        text += f" {p.He} already has ${start}."
    per_week = w("saved per week", saved + spent, "-", spent)
    w("weeks needed", rest, "÷", per_week)
    return text + f" How many weeks until {p.he} has ${goal} for a {rng.choice(_ITEMS)}?"


def _split_bill(rng: random.Random, w: Work) -> str:
    p = rng.choice(PEOPLE)
    n, pizzas, price, tip = rng.randint(3, 6), rng.randint(2, 6), rng.randint(8, 16), rng.randint(3, 15)
    drink = rng.randint(2, 5) if rng.random() < 0.5 else 0
    tip += -(pizzas * price + n * drink + tip) % n  # a tip that makes the shares whole
    food = w("pizzas", pizzas, "×", price)
    if drink:
        drinks = w("drinks", n, "×", drink)
        food = w("food and drinks", food, "+", drinks)
    total = w("bill with the tip", food, "+", tip)
    w("each share", total, "÷", n)
    who = rng.choice([f"{n} friends", f"{p.name} and {n - 1} friends"])
    order = f"{pizzas} pizzas at ${price} each" + (f" and one ${drink} drink each" if drink else "")
    return (f"{who} order {order}, and leave a ${tip} tip. They split the bill equally. "
            "How many dollars does each person pay?")


TEMPLATES = [_shopping, _discount, _savings, _split_bill]
