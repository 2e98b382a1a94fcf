"""pass@k and token-budget counting: pure arithmetic on per-problem sample counts.

What it does: the unbiased pass@k estimator ``1 - C(n-c, k) / C(n, k)`` for one problem
(n samples, c correct), its mean over problems, tables over several k, and the counts needed
for pass@k at a token budget (DESIGN.md, "Evaluation").

What it deliberately does not do: no grading (``grading.py``), no tokenisation, no I/O, no
confidence intervals. Counts in, floats out.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `n` samples of which `c` are correct."""
    if n < 1:
        raise ValueError(f"n must be >= 1 (number of samples), got n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n={n}] (number correct), got c={c}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i). The binomials themselves overflow a
    # float near n = 1030; summing log1p and finishing with expm1 keeps small pass@k values
    # (product near 1) accurate in relative terms, not just absolute ones.
    log_fail = math.fsum(math.log1p(-k / i) for i in range(n - c + 1, n + 1))
    return -math.expm1(log_fail)


def mean_pass_at_k(per_problem_counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean of pass_at_k over problems given as (n, c) pairs."""
    if len(per_problem_counts) == 0:
        raise ValueError("mean_pass_at_k needs at least one problem")
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    values = []
    for index, (n, c) in enumerate(per_problem_counts):
        if n < k:
            raise ValueError(f"problem {index} has n={n} samples, fewer than k={k}")
        try:
            values.append(pass_at_k(n, c, k))
        except ValueError as err:
            raise ValueError(f"problem {index}: {err}") from err
    return math.fsum(values) / len(values)


def pass_at_k_table(
    per_problem_counts: Sequence[tuple[int, int]], ks: Iterable[int]
) -> dict[int, float]:
    """Mean pass@k for each k in `ks`, keyed by k in the order given."""
    return {k: mean_pass_at_k(per_problem_counts, k) for k in ks}


def budget_counts(samples: Iterable[Mapping[str, Any] | Any], budget: int | None) -> int:
    """Number of samples that are correct with their answer inside the first `budget` tokens.

    Each sample has ``correct: bool`` and ``answer_token: int | None``, the 0-based index of
    the generated token in which the answer ends (so the answer is complete after
    ``answer_token + 1`` tokens). A sample counts iff it is correct and, when `budget` is not
    None, ``answer_token is not None and answer_token < budget``. ``budget=None`` means no
    budget: every correct sample counts. Samples may be mappings or objects with attributes.
    """
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be >= 0 tokens or None, got {budget}")
    count = 0
    for sample in samples:
        if not _field(sample, "correct"):
            continue
        if budget is None:
            count += 1
            continue
        token = _field(sample, "answer_token")
        if token is not None and token < budget:
            count += 1
    return count


def answer_token_index(token_ends: Sequence[int], answer_end: int | None) -> int | None:
    """Index of the first token whose text reaches character `answer_end` (None if none does).

    `token_ends[i]` is the character offset just past token i in the decoded text
    (non-decreasing); `answer_end` comes from ``grading.extract_answer_span``.
    """
    if answer_end is None:
        return None
    index = bisect.bisect_left(token_ends, answer_end)
    return index if index < len(token_ends) else None


def _field(sample: Mapping[str, Any] | Any, name: str) -> Any:
    if isinstance(sample, Mapping):
        return sample[name]
    return getattr(sample, name)
