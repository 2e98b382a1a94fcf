"""Paired comparisons of two methods over the same problems: per-problem scores and a bootstrap interval.

Every comparison here is *paired*: both methods answered the same problems, so the difference is
taken problem by problem and the problems are resampled together (a problem that is hard for one
method tends to be hard for the other; an unpaired interval would be far wider). With several
training seeds a problem's score is its mean over the seeds first: seeds vary within a problem,
problems are the unit that is sampled from the world.

* `problem_scores(samples, metric)`: per problem, unbiased pass@k of its samples (`"pass@k"`),
  or the mean number of tokens of its correct samples (`"tokens"`: problems without a correct
  sample have no value and drop out of a paired comparison).
* `paired_bootstrap(a, b)`: mean of `a[p] - b[p]` over the problems both have, with a percentile
  bootstrap interval; `clusters` resamples whole clusters instead of problems.

Pure numpy; nothing here knows about runs beyond reading one eval directory's samples.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .metrics import pass_at_k

__all__ = ["Interval", "paired_bootstrap", "problem_scores", "mean_over_seeds", "parse_metric", "read_samples"]


@dataclass(frozen=True)
class Interval:
    """A paired difference: its mean over `n` problems and the `level` bootstrap interval [lo, hi]."""

    mean: float
    lo: float
    hi: float
    n: int
    level: float = 0.95
    resamples: int = 10_000

    def as_dict(self) -> dict[str, float | int]:
        """The interval as JSON-able numbers."""
        return asdict(self)


def parse_metric(metric: str) -> tuple[str, int | None]:
    """`"pass@16"` -> ("pass", 16); `"tokens"` -> ("tokens", None); anything else is a ValueError."""
    if metric == "tokens":
        return "tokens", None
    if metric.startswith("pass@") and metric[5:].isdigit() and int(metric[5:]) >= 1:
        return "pass", int(metric[5:])
    raise ValueError(f"unknown metric {metric!r}: use pass@K (K >= 1) or tokens")


def problem_scores(samples: Sequence, metric: str) -> dict[str, float]:
    """Per problem id: unbiased pass@k of its samples, or the mean tokens of its correct samples (`"tokens"`)."""
    kind, k = parse_metric(metric)
    by_problem: dict[str, list] = defaultdict(list)
    for s in samples:
        by_problem[s.problem_id].append(s)
    out = {}
    for pid, rows in by_problem.items():
        if kind == "pass":
            if k > len(rows):
                raise ValueError(f"problem {pid!r} has {len(rows)} samples: pass@{k} needs at least {k}")
            out[pid] = pass_at_k(len(rows), sum(r.correct for r in rows), k)
        else:
            correct = [r.n_tokens for r in rows if r.correct]
            if correct:
                out[pid] = statistics.fmean(correct)
    return out


def mean_over_seeds(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per problem, the mean of its scores over the seeds that have one."""
    values: dict[str, list[float]] = defaultdict(list)
    for scores in per_seed:
        for pid, v in scores.items():
            values[pid].append(v)
    return {pid: statistics.fmean(v) for pid, v in values.items()}


def paired_bootstrap(a: Mapping[str, float], b: Mapping[str, float], *, resamples: int = 10_000, seed: int = 0,
                     level: float = 0.95, clusters: Mapping[str, str] | None = None) -> Interval:
    """Mean of a - b over the problems both have, with a percentile bootstrap interval over problems (or clusters).

    Deterministic for a given `seed`. Each resample draws as many problems (clusters) as there are,
    with replacement, and takes the mean difference over the problems drawn.
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two methods share no problem with a score")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    diff = np.array([a[p] - b[p] for p in common], dtype=np.float64)
    groups = [clusters[p] for p in common] if clusters is not None else common
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    member = np.array([index[g] for g in groups])
    sums = np.bincount(member, weights=diff, minlength=len(names))  # per cluster: sum of differences
    sizes = np.bincount(member, minlength=len(names)).astype(np.float64)
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.integers(0, len(names), size=(resamples, len(names)))
    means = sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return Interval(float(diff.mean()), float(lo), float(hi), len(common), level, resamples)


def read_samples(eval_dir: str | Path) -> list:
    """The graded samples of one eval directory."""
    from .data import Sample, read_jsonl

    from .rundir import EvalDir

    return list(read_jsonl(EvalDir(Path(eval_dir)).samples, Sample))
