"""pass@k and token-budget counting: pure arithmetic on per-problem sample counts.

What it does: the unbiased pass@k estimator ``1 - C(n-c, k) / C(n, k)`` for one problem
(n samples, c correct), its mean over problems, tables over several k, and the counts needed
for pass@k at a token budget (docs/method.md, "Evaluation"): a sample counts at budget B when the
sample a run with ``max_new_tokens = B`` draws is correct (its first B tokens, graded by the
evaluation stage and recorded in the sample's row).

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


def correct_at_budget(sample: Mapping[str, Any] | Any, budget: int | None) -> bool:
    """Whether a sample is correct when sampled with at most `budget` new tokens (None: no budget).

    A sample has ``correct: bool``, ``n_tokens: int`` and ``budgets``, its verdicts keyed by
    ``str(B)`` at each budget B < n_tokens (mappings or objects with ``correct``). A sample that
    ended within the budget (``n_tokens <= budget``) is what a run with that budget samples too, so
    its own verdict stands; one that ran past it is judged by its verdict on its first `budget`
    tokens, which must be recorded. Samples may be mappings or objects with attributes.
    """
    if budget is not None and budget < 1:
        raise ValueError(f"budget must be >= 1 token or None, got {budget}")
    if budget is None or _field(sample, "n_tokens") <= budget:
        return bool(_field(sample, "correct"))
    verdicts = _field(sample, "budgets") or {}
    if str(budget) not in verdicts:
        raise ValueError(f"a sample of {_field(sample, 'n_tokens')} tokens has no verdict at budget {budget} "
                         f"(verdicts at {sorted(verdicts, key=int)}): it was sampled with other budgets")
    return bool(_field(verdicts[str(budget)], "correct"))


def budget_counts(samples: Iterable[Mapping[str, Any] | Any], budget: int | None) -> int:
    """Number of samples correct at token budget `budget` (`correct_at_budget`); None means no budget."""
    return sum(correct_at_budget(s, budget) for s in samples)


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
