"""Tests for dail.datasets: reproducibility, the shipped splits, and the arithmetic of every row."""

from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction

import pytest

from dail.data import read_problems, write_jsonl
from dail.datasets import SPLITS, generate, resolve_problems, split_path, write_split
from dail.datasets.arith import FAMILIES, SOURCE, problem_at

_OPS = {"+": operator.add, "-": operator.sub, "×": operator.mul, "÷": Fraction}
_STEP = re.compile(r"(\d+) ([-+×÷]) (\d+) = (\d+)")
_LINE = re.compile(r"^[^:\n]+: (?P<expr>[-+×÷()\d ]+) = (?P<value>\d+)\.$")


def _step_value(step: str) -> int:
    """`a op b = c` checked and evaluated by hand: the value c, asserted equal to a op b."""
    m = _STEP.fullmatch(step)
    assert m, step
    a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
    assert _OPS[op](a, b) == c, step
    return c


def _evaluate(expr: str) -> Fraction:
    """A solution line's expression (+ - × ÷ and brackets only), evaluated exactly."""
    tree = ast.parse(expr.replace("×", "*").replace("÷", "/"), mode="eval")
    binops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in binops:
            return binops[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        raise AssertionError(f"unexpected {ast.dump(node)} in {expr!r}")

    return ev(tree.body)


@pytest.fixture(scope="module")
def train():
    return resolve_problems("arith-train")


@pytest.fixture(scope="module")
def test_split():
    return resolve_problems("arith-test")


@pytest.fixture(scope="module")
def rows(train, test_split):
    return train + test_split


def test_same_seed_same_problems():
    assert generate(30, 7) == generate(30, 7)
    assert [p.problem for p in generate(30, 7)] != [p.problem for p in generate(30, 8)]


def test_problem_i_does_not_depend_on_n():
    assert generate(40, 3)[:5] == generate(5, 3)
    assert generate(40, 3)[17] == generate(18, 3)[17]


def test_ids_unique_with_prefix():
    problems = generate(50, 1, prefix="demo")
    assert [p.id for p in problems] == [f"demo-{i:05d}" for i in range(50)]


@pytest.mark.parametrize("name", list(SPLITS))
def test_shipped_file_equals_regeneration(name, tmp_path):
    out = write_split(name, tmp_path / f"{name}.jsonl")
    assert out.read_bytes() == split_path(name).read_bytes(), f"rewrite with write_split({name!r})"


@pytest.mark.parametrize("name", list(SPLITS))
def test_shipped_file_reads_back(name):
    problems = read_problems(split_path(name))
    assert len(problems) == SPLITS[name][0]
    assert problems == resolve_problems(name) == resolve_problems(name)
    assert all(p.id.startswith(f"{name}-") and p.source == SOURCE for p in problems)


def test_an_unknown_split_name_lists_the_splits():
    with pytest.raises(ValueError, match="arith-train"):
        resolve_problems("arith-dev")


def test_resolve_problems_from_a_path(tmp_path):
    path = tmp_path / "mine.jsonl"
    write_jsonl(path, generate(3, 11))
    assert resolve_problems(str(path)) == generate(3, 11)
    with pytest.raises(ValueError, match="neither a bundled split"):
        resolve_problems(str(tmp_path / "missing.jsonl"))


def test_train_and_test_share_no_problem_text(train, test_split):
    assert not {p.problem for p in train} & {p.problem for p in test_split}
    assert len({p.problem for p in train}) == len(train)
    assert len({p.problem for p in test_split}) == len(test_split)


def test_answers_are_integers_and_boxed_at_the_end(rows):
    for p in rows:
        assert re.fullmatch(r"[1-9]\d*", p.answer), p.id
        assert p.solution.endswith(f"\\boxed{{{p.answer}}}"), p.id


def test_train_covers_every_family_and_step_count(train):
    assert {p.meta["family"] for p in train} == set(FAMILIES)
    assert {p.meta["n_steps"] for p in train} == {2, 3, 4, 5, 6}


def test_steps_are_right_and_end_in_the_answer(rows):
    for p in rows:
        steps = p.meta["steps"]
        assert len(steps) == p.meta["n_steps"]
        values = [_step_value(s) for s in steps]
        assert str(values[-1]) == p.answer, p.id


def test_solutions_skip_steps(rows):
    skipped = [p.meta["skipped"] for p in rows]
    for p, s in zip(rows, skipped):
        assert set(s) <= set(range(p.meta["n_steps"] - 1)), p.id  # the last step is always shown
    long = [s for p, s in zip(rows, skipped) if p.meta["n_steps"] >= 3]
    assert sum(bool(s) for s in long) >= 0.8 * len(long)
    share = sum(map(len, skipped)) / sum(p.meta["n_steps"] for p in rows)
    assert 0.3 <= share <= 0.5


def test_solution_lines_are_right_and_show_the_unskipped_steps(rows):
    for p in rows:
        *lines, last = p.solution.split("\n")
        assert last == f"Answer: \\boxed{{{p.answer}}}"
        assert 1 <= len(lines) <= 6
        shown = []
        for line in lines:
            m = _LINE.match(line)
            assert m, (p.id, line)
            assert _evaluate(m["expr"]) == int(m["value"]), (p.id, line)
            shown.append(int(m["value"]))
        expected = [_step_value(s) for i, s in enumerate(p.meta["steps"]) if i not in p.meta["skipped"]]
        assert shown == expected, p.id


def test_problems_are_short(rows):
    assert max(len(p.problem) for p in rows) < 400
    assert max(len(p.solution) for p in rows) < 400
