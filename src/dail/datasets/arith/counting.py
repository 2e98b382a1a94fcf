"""The arith templates of the counting family: boxes, teams, baking and a library's books.

A template draws numbers from `rng`, records its steps on `w` and returns the problem text; the
answer is the value of the last step.
"""

from __future__ import annotations

import random

from dail.datasets.arith.steps import PEOPLE, Redraw, Work

__all__ = ["TEMPLATES"]


def _boxes(rng: random.Random, w: Work) -> str:
    place, verb = rng.choice([("shop", "sells"), ("school", "hands out"), ("club", "gives away")])
    items = rng.choice(["pencils", "muffins", "marbles", "seed packets", "erasers", "crayons"])
    boxes, each = rng.randint(3, 12), rng.randint(6, 24)
    total = boxes * each
    if rng.random() < 0.5:
        per_bag = rng.randint(2, 8)
        left = per_bag * rng.randint(1, (total - 1) // per_bag)
        question = f" The rest are packed into bags of {per_bag}. How many bags are filled?"
    else:
        per_bag, left = 0, rng.randint(1, total - 1)
        question = f" How many {items} are left?"
    text = f"A {place} has {boxes} boxes of {items} with {each} in each box. It {verb} {total - left} {items}."
    all_ = w(f"{items} in all", boxes, "×", each)
    rest = w(f"{items} left", all_, "-", total - left)
    if per_bag:
        w("bags", rest, "÷", per_bag)
    return text + question


def _teams(rng: random.Random, w: Work) -> str:
    size, k = rng.randint(3, 8), rng.randint(2, 4)
    total = size * rng.randint(3, 15)
    classes = 3 if k == 3 else 2
    if total < 6 * classes:
        raise Redraw
    cuts = sorted(rng.sample(range(6, total - 5), classes - 1))
    if classes == 3 and cuts[1] - cuts[0] < 6:
        raise Redraw
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, total])]
    children = w("children in all", sizes[0], "+", sizes[1])
    if classes == 3:
        children = w("children in all three classes", children, "+", sizes[2])
        text = f"Three classes with {sizes[0]}, {sizes[1]} and {sizes[2]} children go to a sports day."
    else:
        text = f"{sizes[0]} children from one class and {sizes[1]} from another go to a sports day."
    teams = w("teams", children, "÷", size)
    text += f" They are split into teams of {size}."
    if k < 4:
        return text + " How many teams are there?"
    balls, pack = rng.randint(2, 5), rng.choice([2, 3, 4, 5, 6, 10])
    needed = w("balls needed", teams, "×", balls)
    w("packs", needed, "÷", pack)
    return text + f" Each team gets {balls} balls; balls come in packs of {pack}. How many packs are needed?"


def _baking(rng: random.Random, w: Work) -> str:
    p = rng.choice(PEOPLE)
    food, holder = rng.choice([("cookies", "trays"), ("muffins", "trays"), ("dumplings", "plates")])
    trays, each, friends, eaten = rng.randint(2, 6), rng.randint(6, 20), rng.randint(2, 8), rng.randint(1, 9)
    first = w("first batch", trays, "×", each)
    made = first.value
    text = f"{p.name} makes {trays} {holder} of {each} {food}."
    if rng.random() < 0.5:
        trays2, each2 = rng.randint(2, 5), rng.randint(6, 20)
        second = w("second batch", trays2, "×", each2)
        first = w(f"{food} in all", first, "+", second)
        made = first.value
        text += f" Later {p.he} makes {trays2} more {holder} of {each2}."
    eaten += (made - eaten) % friends  # the rest shares out evenly
    rest = w("left to share", first, "-", eaten)
    w("each friend's share", rest, "÷", friends)
    return text + (f" {p.He} eats {eaten} and shares the rest equally among {friends} friends. "
                   "How many does each friend get?")


def _library(rng: random.Random, w: Work) -> str:
    shelves, rows, per_row, k = rng.randint(2, 8), rng.randint(3, 6), rng.randint(10, 30), rng.choice([3, 4, 6])
    text = f"A library has {shelves} shelves, each with {rows} rows of {per_row} books."
    all_rows = w("rows in all", shelves, "×", rows)
    books = w("books on the shelves", all_rows, "×", per_row)
    if k == 6:
        crates, per_crate = rng.randint(2, 6), rng.randint(10, 25)
        new = w("new books", crates, "×", per_crate)
        books = w("books with the new ones", books, "+", new)
        text += f" Then {crates} crates of {per_crate} new books arrive."
    rooms = rng.randint(2, 6) if k >= 4 else 1
    lent = rng.randint(5, 40)
    lent += (books.value - lent) % rooms
    left = w("books still there", books, "-", lent)
    text += f" {lent} books are lent out."
    if k == 3:
        return text + " How many books are still in the library?"
    w("books per room", left, "÷", rooms)
    return text + f" The rest are shared equally among {rooms} reading rooms. How many does each room get?"


TEMPLATES = [_boxes, _teams, _baking, _library]
