"""`dail rl`: online GRPO with a LoRA adapter on the project's engine and trainer, and NuRL's hinted re-rolls.

Per rollout batch: `problems_per_step` problems (a seeded shuffle per epoch), G rollouts each on the
engine (`rollouts.py`, the sampling-stage shape of expand and eval), a reward of 1 for an answer that
grades as correct and 0 otherwise (`dail.grading`), group-normalised advantages, and
`updates_per_batch` optimizer steps of the clipped surrogate (`update.py`, `dail.objectives.grpo_loss`).
With `hints` (NuRL, Chen et al. 2025) a group whose G rollouts all fail is rolled again: rollouts
1..G-1 with the problem's hint in the prompt (`hints.py` makes the hints offline). The loop, resume and
checkpoints are `fit.py`'s. Outputs: an adapter directory like `dail train`'s, plus the rollouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import distributed as dist
from ..config import RLConfig
from ..distributed import Progress

__all__ = ["run"]


def run(cfg: RLConfig, progress: Progress | None = None, *, fresh: bool = False) -> dict[str, Any]:
    """The `dail rl` stage: train, write `out/` (adapter, log.jsonl, rollouts/, config.toml); the summary.

    `fresh` deletes an earlier RL run in `out/` first (its own files only).
    """
    from ..checkpoint import remove_run
    from ..stage import check_inputs
    from .fit import fit
    from .hints import read_hints

    check_inputs(cfg, "dir")
    hints = read_hints(cfg.hints) if cfg.hints is not None else None  # a bad hints file stops before the model loads
    if fresh:
        remove_run(Path(cfg.out))  # the rollouts are among the run's own files
    with dist.output_lock(cfg.out, main_only=True):
        return fit(cfg, progress, hints=hints)[1]
