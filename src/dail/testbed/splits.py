"""The test-bed's problem splits: one set of function tables from the seed, and the train, val, test,
easy and ood problems drawn under each split's rule, no problem text twice across them."""

from __future__ import annotations

import random

from dail.data import Problem
from dail import seeding
from dail.testbed.config import BuildConfig
from dail.testbed.task import Chain, draw_chain, draw_tables, problem_row

__all__ = ["SPLIT_NAMES", "make_splits", "split_tables"]

SPLIT_NAMES = ("train", "val", "test", "easy", "ood")


def split_tables(cfg: BuildConfig) -> tuple[tuple[int, ...], ...]:
    """The splits' F, G and H: permutations of the digits from the seed, used by every split problem."""
    return draw_tables(seeding.rng(cfg.seed, "table"))


def _split_chain(rng: random.Random, cfg: BuildConfig, name: str, tables, hidden: int) -> Chain | None:
    """One candidate problem of split `name` with `hidden` function steps, or None when it breaks the split's rule."""
    if name == "easy":
        return draw_chain(rng, rng.randint(*cfg.easy_steps))
    n = rng.randint(*cfg.hard_steps)
    if name == "ood":
        chain = draw_chain(rng, n, swap=cfg.ood_swap)
        return chain if any(source == "swap" for _, source in chain.steps) else None
    chain = draw_chain(rng, n, tables, hidden, last=True)
    # Every fact must count: a function value that is overwritten, or one that reaches the answer only
    # as another function's input, would let a guess of fewer facts than the problem names be right.
    return chain if all(chain.direct(i) for i in chain.hidden_steps()) else None


def make_splits(cfg: BuildConfig) -> dict[str, list[Problem]]:
    """The splits; no problem text appears twice across them (pretraining documents are drawn apart and may repeat one)."""
    seen: set[str] = set()
    out: dict[str, list[Problem]] = {}
    tables = split_tables(cfg)
    for name in SPLIT_NAMES:
        rng = seeding.rng(cfg.seed, "split", name)
        rows: list[Problem] = []
        hidden = None
        while len(rows) < cfg.split_sizes.get(name, 0):
            # the number of facts is drawn once per problem, before the rules reject chains: rejection
            # would otherwise favour problems with fewer facts
            hidden = rng.randint(*cfg.hidden) if hidden is None else hidden
            chain = _split_chain(rng, cfg, name, tables, hidden)
            if chain is None or chain.text in seen:
                continue
            hidden = None
            seen.add(chain.text)
            rows.append(problem_row(chain, rng.randint(*cfg.every), f"testbed-{name}-{len(rows):04d}", name))
        out[name] = rows
    return out
