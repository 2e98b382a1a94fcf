"""Experiment trackers (`report_to`) through accelerate's tracking API, never a writer of our own.

Training logs its step lines through the Accelerator (`dail.train`); a run logs its pass@k per
method and split through accelerate's tracker classes (`log_results`). This module knows which
names accelerate accepts, whether their packages are installed, and what a config looks like as
the flat hyperparameters every tracker takes. accelerate is imported only when a tracker is named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .config import ConfigError

__all__ = ["PROJECT", "accelerator_kwargs", "check_names", "hparams", "init_kwargs", "log_results", "require_installed",
           "result_scalars", "step_scalars"]

# The project every tracker files a run under (wandb's project, TensorBoard's folder under the logging dir).
PROJECT = "dail"


def check_names(names: list[str]) -> list[str]:
    """`names` if accelerate knows each (its `LoggerType`s, `all`, and registered trackers); else ValueError."""
    if not names:
        return names
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS
    from accelerate.utils import LoggerType

    known = list(dict.fromkeys([*LoggerType.list(), *LOGGER_TYPE_TO_CLASS]))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown tracker(s) {unknown}; accelerate knows {known}")
    return names


def require_installed(names: list[str]) -> None:
    """ConfigError naming the pip package of each named tracker that is not installed.

    Not a validator: a config written for a machine with wandb still loads where it is missing. Called
    before any work, because accelerate itself would drop a missing tracker with a debug line only.
    """
    if not names:
        return
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    available = {str(t) for t in get_available_trackers()}
    # Registered trackers and `all` (whatever is installed) need no package of their own.
    missing = [n for n in names if n in LoggerType.list() and n != "all" and n not in available]
    if missing:
        raise ConfigError(f"report_to: tracker(s) {missing} not installed; pip install {' '.join(missing)}")


def accelerator_kwargs(names: list[str], logging_dir: str | Path) -> dict[str, Any]:
    """The Accelerator's tracking arguments: the trackers and where file-writing ones write; none without trackers."""
    if not names:
        return {}
    from accelerate.utils import ProjectConfiguration

    return {"log_with": list(names),
            "project_config": ProjectConfiguration(project_dir=str(logging_dir), logging_dir=str(logging_dir))}


def init_kwargs(first_step: int) -> dict[str, dict[str, Any]]:
    """Per-tracker start arguments for a session whose first logged step is `first_step`.

    TensorBoard drops what an earlier session logged from that step on (a killed run's steps past its
    checkpoint), as the JSONL log is cut back on resume, so each step keeps one value.
    """
    return {"tensorboard": {"purge_step": first_step}}


def hparams(config: BaseModel, exclude: set[str] = frozenset({"prompts", "data_digests"})) -> dict[str, Any]:
    """A config as the flat `a.b` scalars trackers take as hyperparameters; lists as JSON, unset keys left out."""
    def flat(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            elif isinstance(v, list):
                out[f"{prefix}{k}"] = json.dumps(v)
            elif v is not None:  # TensorBoard's hparams refuse None
                out[f"{prefix}{k}"] = v
        return out

    # Prompts are long template text and digests are bookkeeping: neither is a knob to compare runs by.
    return flat(config.model_dump(mode="json", exclude=set(exclude)), "")


def step_scalars(record: dict[str, Any]) -> dict[str, float | int]:
    """A training log line as tracker scalars (`train/loss`, `train/lr`, ...); the step is the x-axis, not a value."""
    return {f"train/{k}": v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}


def result_scalars(table: dict[str, dict[str, Any]]) -> dict[str, float]:
    """A run's results table (`results.results_table`) as `eval/SPLIT/METHOD/pass@K` and `.../mean_tokens` scalars."""
    out: dict[str, float] = {}
    for method, splits in table.items():
        for split, row in splits.items():
            out.update({f"eval/{split}/{method}/pass@{k}": float(v) for k, v in row["pass_at_k"].items()})
            out[f"eval/{split}/{method}/mean_tokens"] = float(row["mean_tokens"])
    return out


def log_results(names: list[str], logging_dir: str | Path, table: dict[str, dict[str, Any]],
                config: BaseModel | None = None) -> None:
    """Log a results table, and `config` as hyperparameters, to a tracker run of each named tracker at step 0."""
    if not names:
        return
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, filter_trackers

    require_installed(names)
    values = result_scalars(table)
    starts = init_kwargs(0)  # a rerun with new results replaces the old ones
    for kind in filter_trackers(names, str(logging_dir)):
        cls = LOGGER_TYPE_TO_CLASS[str(kind)]
        extra = starts.get(str(kind), {})
        tracker = cls(PROJECT, str(logging_dir), **extra) if cls.requires_logging_directory else cls(PROJECT, **extra)
        tracker.start()
        try:
            if config is not None:
                tracker.store_init_configuration(hparams(config))
            tracker.log(values, step=0)
        finally:
            tracker.finish()
