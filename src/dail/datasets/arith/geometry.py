"""The arith templates of the geometry family: fences, tiles, paint and a square against a rectangle.

A template draws numbers from `rng`, records its steps on `w` and returns the problem text; the
answer is the value of the last step.
"""

from __future__ import annotations

import random

from dail.datasets.arith.steps import Work

__all__ = ["TEMPLATES"]


def _fence(rng: random.Random, w: Work) -> str:
    place = rng.choice(["garden", "field", "yard", "paddock", "playground"])
    width, length = sorted((rng.randint(5, 40), rng.randint(8, 60)))
    k = rng.randint(2, 4)
    half = w("length plus width", length, "+", width)
    fence = w("perimeter", half, "×", 2)
    text = f"A rectangular {place} is {length} m long and {width} m wide."
    if k == 2:
        return text + " How many metres of fence go all the way around it?"
    if k == 4:
        gate = rng.randint(1, 4)
        fence = w("fence needed", fence, "-", gate)
        text += f" A {gate} m gap is left for the gate."
    cost = rng.randint(2, 15)
    w("cost of the fence", fence, "×", cost)
    return text + f" Fencing costs ${cost} per metre. How many dollars does the fence cost?"


def _tiles(rng: random.Random, w: Work) -> str:
    room = rng.choice(["kitchen", "hall", "bathroom", "patio", "classroom"])
    length, width, cover, price = rng.randint(3, 15), rng.randint(3, 12), rng.randint(2, 6), rng.randint(8, 40)
    area = w("floor area", length, "×", width)
    boxes = w("boxes of tiles", area, "÷", cover)
    text = rng.choice([f"A {room} floor is {length} m by {width} m.",
                       f"The floor of a {room} measures {length} m by {width} m."])
    text += f" One box of tiles covers {cover} square metres and costs ${price}."
    if rng.random() < 0.5:
        have = rng.randint(1, 5)
        boxes = w("boxes to buy", boxes, "-", have)
        text += f" {have} boxes are left over from an earlier job."
    w("cost of the tiles", boxes, "×", price)
    return text + " How many dollars must be spent on tiles?"


def _paint(rng: random.Random, w: Work) -> str:
    length, height, win_w, win_h = rng.randint(4, 20), rng.randint(2, 6), rng.randint(1, 3), rng.randint(1, 3)
    wall = w("wall area", length, "×", height)
    window = w("window area", win_w, "×", win_h)
    left = w("area to paint", wall, "-", window)
    text = f"A wall is {length} m wide and {height} m high, with a window {win_w} m by {win_h} m."
    if rng.random() < 0.5:
        return text + " How many square metres of wall are there to paint?"
    cover = rng.randint(2, 5)
    w("cans of paint", left, "÷", cover)
    return text + f" One can of paint covers {cover} square metres. How many cans are needed?"


def _square_rect(rng: random.Random, w: Work) -> str:
    side, k = rng.randint(3, 25), rng.choice([2, 3, 6])
    perimeter = 4 * side
    if k == 3:
        width = rng.randint(2, 20)
        length = width + rng.randint(1, 20)
        perimeter = 2 * (length + width)
    if k != 3:
        s = w("side of the square", perimeter, "÷", 4)
        square = w("area of the square", s, "×", s)
        if k == 2:
            return f"A square has a perimeter of {perimeter} cm. What is its area in square centimetres?"
        length = side + rng.randint(1, side - 1)
    half = w("length plus width", perimeter, "÷", 2)
    width = w("width", half, "-", length)
    rect = w("area of the rectangle", length, "×", width)
    if k == 3:
        return (f"A rectangle has a perimeter of {perimeter} cm and is {length} cm long. "
                "What is its area in square centimetres?")
    w("difference", square, "-", rect)
    return (f"A square and a rectangle both have a perimeter of {perimeter} cm. The rectangle is {length} cm "
            "long. By how many square centimetres is the square's area larger?")


TEMPLATES = [_fence, _tiles, _paint, _square_rect]
