"""Generated multi-step arithmetic word problems with terse, didactic expert solutions.

`generate(n, seed)` builds problems from hand-written templates in five families (money, rates,
ages, geometry, counting), each problem a chain of 2-6 binary integer steps `a op b = c`. The
solution shows some steps as `<description>: <expression> = <value>.` and skips the others on
purpose, the way a terse teacher does: a skipped step is either folded into the line that uses its
result (`Total cost: 4 × 3 + 5 × 2 = 22.`) or left out, its result appearing unexplained where it
is used. Those gaps are what DAIL's expansion has to fill. The solution ends with
`Answer: \\boxed{N}`. The full step list stays in `meta` for analysis and is never shown to a model.

Problem i depends only on (seed, i), so a set is a prefix of any larger one with the same seed.
The shipped splits are made from these sets in `dail.datasets`. This module does not read or
write files, grade answers or talk to models.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

from dail.data import Problem

__all__ = ["FAMILIES", "SOURCE", "generate", "problem_at"]

SOURCE = "dail-arith"
FAMILIES = ("money", "rates", "ages", "geometry", "counting")

_PREC = {"+": 1, "-": 1, "×": 2, "÷": 2}
_MAX_DRAWS = 1000  # a template that needs more redraws than this has a bug


class _Redraw(Exception):
    """The numbers drawn give a fraction or a non-positive step; the template draws again."""


@dataclass(frozen=True)
class _Num:
    value: int
    step: int | None = None  # index of the step that computed it; None for a number of the text


@dataclass(frozen=True)
class _Step:
    desc: str
    a: _Num
    op: str
    b: _Num
    value: int

    def __str__(self) -> str:
        return f"{self.a.value} {self.op} {self.b.value} = {self.value}"


class _Work:
    """The steps of one problem, recorded while a template computes them."""

    def __init__(self) -> None:
        self.steps: list[_Step] = []

    def __call__(self, desc: str, a: _Num | int, op: str, b: _Num | int) -> _Num:
        a = a if isinstance(a, _Num) else _Num(a)
        b = b if isinstance(b, _Num) else _Num(b)
        if op == "÷":
            if b.value == 0 or a.value % b.value:
                raise _Redraw
            value = a.value // b.value
        else:
            value = {"+": a.value + b.value, "-": a.value - b.value, "×": a.value * b.value}[op]
        if value <= 0:  # counts, prices, ages and lengths are positive
            raise _Redraw
        self.steps.append(_Step(desc, a, op, b, value))
        return _Num(value, len(self.steps) - 1)


class _Person(NamedTuple):
    name: str
    he: str
    his: str
    He: str  # the pronoun opening a sentence


_PEOPLE = [*(_Person(n, "she", "her", "She") for n in ("Maya", "Ana", "Priya", "Lena", "Zoe", "Aisha", "Mei")),
           *(_Person(n, "he", "his", "He") for n in ("Tom", "Omar", "Ravi", "Leo", "Sam", "Jonas", "Kofi"))]
_TIMES = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}
# (plural noun, lowest price, highest price) in dollars
_GOODS = [("pens", 1, 4), ("notebooks", 2, 6), ("apples", 1, 3), ("candles", 3, 9), ("mugs", 4, 12),
          ("pairs of socks", 2, 7), ("sticker sheets", 1, 3), ("packs of batteries", 3, 8),
          ("comic books", 3, 9), ("plant pots", 2, 8)]
_ITEMS = ["jacket", "lamp", "backpack", "kettle", "chair", "helmet", "guitar", "tent", "bicycle", "kite"]


# A template draws numbers from `rng`, records its steps on `w` and returns the problem text; the
# answer is the value of the last step. `_TEMPLATES` below lists them by family.

# --- money -------------------------------------------------------------------------------------

def _shopping(rng: random.Random, w: _Work) -> str:
    p = rng.choice(_PEOPLE)
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


def _discount(rng: random.Random, w: _Work) -> str:
    p = rng.choice(_PEOPLE)
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


def _savings(rng: random.Random, w: _Work) -> str:
    p = rng.choice(_PEOPLE)
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


def _split_bill(rng: random.Random, w: _Work) -> str:
    p = rng.choice(_PEOPLE)
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


# --- rates -------------------------------------------------------------------------------------

def _trip(rng: random.Random, w: _Work) -> str:
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


def _wage(rng: random.Random, w: _Work) -> str:
    p = rng.choice(_PEOPLE)
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


def _work_together(rng: random.Random, w: _Work) -> str:
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


def _round_trip(rng: random.Random, w: _Work) -> str:
    p = rng.choice(_PEOPLE)
    verb, lo, hi = rng.choice([("cycles", 8, 20), ("drives", 30, 70), ("runs", 6, 12)])
    v, faster, t_back = rng.randint(lo, hi), rng.randint(1, 10), rng.randint(2, 6)
    dist = (v + faster) * t_back
    if dist % v:
        raise _Redraw
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


# --- ages --------------------------------------------------------------------------------------

def _older(rng: random.Random, w: _Work) -> str:
    a, b = rng.sample(_PEOPLE, 2)
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
        old = _Num(young + gap)
        text = f"{a.name} is {young + gap} and {b.name} is {young}."
    w(f"{a.name}'s age then", old, "+", until)
    return text + f" How old will {a.name} be when {b.name} is {target}?"


def _parent(rng: random.Random, w: _Work) -> str:
    c = rng.choice(_PEOPLE)
    relative = rng.choice(["mother", "father", "aunt", "uncle"])
    age, times = rng.randint(4, 15), rng.randint(2, 5)
    if not 22 <= age * times <= 60:
        raise _Redraw
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


def _years_ago(rng: random.Random, w: _Work) -> str:
    a, b = rng.sample(_PEOPLE, 2)
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


def _three_ages(rng: random.Random, w: _Work) -> str:
    a, b, c = rng.sample(_PEOPLE, 3)
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


# --- geometry ----------------------------------------------------------------------------------

def _fence(rng: random.Random, w: _Work) -> str:
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


def _tiles(rng: random.Random, w: _Work) -> str:
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


def _paint(rng: random.Random, w: _Work) -> str:
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


def _square_rect(rng: random.Random, w: _Work) -> str:
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


# --- counting ----------------------------------------------------------------------------------

def _boxes(rng: random.Random, w: _Work) -> str:
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


def _teams(rng: random.Random, w: _Work) -> str:
    size, k = rng.randint(3, 8), rng.randint(2, 4)
    total = size * rng.randint(3, 15)
    classes = 3 if k == 3 else 2
    if total < 6 * classes:
        raise _Redraw
    cuts = sorted(rng.sample(range(6, total - 5), classes - 1))
    if classes == 3 and cuts[1] - cuts[0] < 6:
        raise _Redraw
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


def _baking(rng: random.Random, w: _Work) -> str:
    p = rng.choice(_PEOPLE)
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


def _library(rng: random.Random, w: _Work) -> str:
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


_TEMPLATES = {
    "money": [_shopping, _discount, _savings, _split_bill],
    "rates": [_trip, _wage, _work_together, _round_trip],
    "ages": [_older, _parent, _years_ago, _three_ages],
    "geometry": [_fence, _tiles, _paint, _square_rect],
    "counting": [_boxes, _teams, _baking, _library],
}


# --- solutions ---------------------------------------------------------------------------------

def _skipped(rng: random.Random, k: int) -> list[int]:
    """Steps the solution leaves out: 30-50% of them (a 2-step one may skip none), never the last."""
    counts = [s for s in range(k) if 0.3 <= s / k <= 0.5] + ([0] if k == 2 else [])
    return sorted(rng.sample(range(k - 1), rng.choice(counts)))


def _expression(steps: list[_Step], j: int, folded: dict[int, int]) -> str:
    """Step j as written, with the steps folded into it (`folded[i] == j`) spelled out inline."""
    step = steps[j]

    def operand(x: _Num, right: bool) -> str:
        if x.step is None or folded.get(x.step) != j:
            return str(x.value)
        inner = steps[x.step].op
        text = _expression(steps, x.step, folded)
        # Parenthesise only where the order of operations needs it, as a person would.
        needs = _PREC[inner] < _PREC[step.op] or (
            right and _PREC[inner] == _PREC[step.op] and (step.op in "-÷" or inner == "÷"))
        return f"({text})" if needs else text

    return f"{operand(step.a, False)} {step.op} {operand(step.b, True)}"


def _solution(rng: random.Random, steps: list[_Step]) -> tuple[str, list[int]]:
    skipped = _skipped(rng, len(steps))
    folded: dict[int, int] = {}
    for i in skipped:
        # Half the skipped steps are folded into the first line that uses them; the rest vanish
        # and their result turns up unexplained. A step used twice in one line (`s × s`) is
        # never folded: writing it out twice is not what a terse teacher does.
        j = next(j for j in range(i + 1, len(steps)) if i in (steps[j].a.step, steps[j].b.step))
        if rng.random() < 0.5 and (steps[j].a.step, steps[j].b.step) != (i, i):
            folded[i] = j
    lines = [f"{s.desc[0].upper()}{s.desc[1:]}: {_expression(steps, j, folded)} = {s.value}."
             for j, s in enumerate(steps) if j not in skipped]
    lines.append(f"Answer: \\boxed{{{steps[-1].value}}}")
    return "\n".join(lines), skipped


def problem_at(seed: int, index: int, *, prefix: str = "arith") -> Problem:
    """Problem `index` of the set drawn from `seed` (what `generate` returns at that index)."""
    # One RNG per problem, seeded by text (hashed with SHA-512 by `random`, stable across runs and
    # Python versions): problem i never depends on how many others are generated.
    rng = random.Random(f"dail-arith/{seed}/{index}")
    family = rng.choice(FAMILIES)
    template = rng.choice(_TEMPLATES[family])
    for _ in range(_MAX_DRAWS):
        work = _Work()
        try:
            text = template(rng, work)
            break
        except _Redraw:
            continue
    else:
        raise RuntimeError(f"template {template.__name__} found no valid numbers in {_MAX_DRAWS} draws")
    steps = work.steps
    assert 2 <= len(steps) <= 6, (template.__name__, len(steps))
    for i in range(len(steps) - 1):  # every step feeds a later one: no dead ends in a chain
        assert any(i in (s.a.step, s.b.step) for s in steps[i + 1:]), (template.__name__, i)
    solution, skipped = _solution(rng, steps)
    return Problem(
        id=f"{prefix}-{index:05d}", problem=text, solution=solution, answer=str(steps[-1].value), source=SOURCE,
        meta={"steps": [str(s) for s in steps], "n_steps": len(steps), "family": family,
              "template": template.__name__.lstrip("_"), "skipped": skipped},
    )


def generate(n: int, seed: int, *, prefix: str = "arith") -> list[Problem]:
    """`n` problems reproducible from `seed`; problem i depends only on (seed, i)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [problem_at(seed, i, prefix=prefix) for i in range(n)]
