"""The run directory's layout, named in one place, and its one log schema.

    runs/NAME/config.toml            the run's resolved RunConfig
              selected.jsonl         `select`'s problems (and selected-samples/, its eval directory)
              waypoints.jsonl        the problems with the negative reference's partial solutions
              traces.jsonl           the mixed rollout (dail, dail-nll); traces-psd.jsonl, traces-star.jsonl
              adapter/METHOD/        one LoRA adapter per trained method
              eval/METHOD/SPLIT/     samples.jsonl, metrics.json of one method on one split
              metrics.json  report.html  report.md  plots/*.png  traces.html
              stages/STAGE.toml      the config of a stage launched under `accelerate launch`
              log.jsonl              one line per event (`RunLog`)
    runs/NAME.lock                   held by the `dail run` at work on it (and X.lock beside any output X
                                     being written: `dail.distributed.OutputLock`; gone when it ends)

Every stage saves the config it resolved beside its output under one rule (`config_path`): a file
output `X.jsonl` gets `X.config.toml`, a directory output `D/` gets `D/config.toml`. Stages ask
this module for paths and never spell a file name. What made an output (`dail.provenance`) goes
beside it under the same rule (`provenance_path`). It does no I/O beyond the log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import JsonlAppender

__all__ = ["RunDir", "RunLog", "config_path", "data_digest", "provenance_path", "split_name"]


def config_path(out: str | Path) -> Path:
    """Where a stage saves its resolved config: `X.config.toml` beside a file output, `D/config.toml` in a directory."""
    out = Path(out)
    return out.with_suffix(".config.toml") if out.suffix == ".jsonl" else out / "config.toml"


def provenance_path(out: str | Path) -> Path:
    """Where a stage records what made its output (`dail.provenance`): `X.provenance.json` beside a file output,
    `D/provenance.json` in a directory."""
    out = Path(out)
    return out.with_suffix(".provenance.json") if out.suffix == ".jsonl" else out / "provenance.json"


def data_digest(spec: str) -> str:
    """A digest of a data spec's content (blake2b of the file), or the bundled split's name."""
    import hashlib

    path = Path(spec)
    if not path.is_file():
        return f"bundled:{spec}"
    h = hashlib.blake2b(digest_size=12)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split_name(spec: str) -> str:
    """A short name for a data spec: the bundled split's name, or the file's name without .jsonl / .json."""
    name = Path(spec).name
    return Path(name).stem if name.endswith((".jsonl", ".json")) else name


@dataclass(frozen=True)
class RunDir:
    """Paths of every artifact of one run."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def selected(self) -> Path:
        return self.root / "selected.jsonl"

    @property
    def selection_samples(self) -> Path:
        """`select`'s eval directory: the base model's samples on every candidate."""
        return self.root / "selected-samples"

    @property
    def selection_rows(self) -> Path:
        """`select`'s graded samples of every candidate (what rft trains on and compute counts)."""
        return self.selection_samples / "samples.jsonl"

    @property
    def waypoints(self) -> Path:
        return self.root / "waypoints.jsonl"

    def solutions(self, method: str) -> Path:
        """The problems file a solution-trained control trains on (`solutions-oracle-sft.jsonl`, `solutions-rft.jsonl`)."""
        return self.root / f"solutions-{method}.jsonl"

    def traces(self, name: str = "traces.jsonl") -> Path:
        """A traces file by its name (traces.jsonl, traces-psd.jsonl, traces-star.jsonl)."""
        return self.root / name

    def adapter(self, method: str) -> Path:
        return self.root / "adapter" / method

    def eval_dir(self, method: str, split: str) -> Path:
        """The eval directory of a method on a split (a spec: bundled name or JSONL path)."""
        return self.root / "eval" / method / split_name(split)

    def metrics_files(self) -> list[Path]:
        """Every eval's metrics.json under this run."""
        return sorted((self.root / "eval").glob("*/*/metrics.json"))

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def stage_config(self, label: str) -> Path:
        """The config file a launched stage reads (`label` like 'expand:traces.jsonl')."""
        return self.root / "stages" / (label.replace(":", "-").replace("/", "-") + ".toml")


class RunLog:
    """`log.jsonl`: one JSON object per event, `{"time", "stage", "event", ...fields}` (one schema for every writer)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __call__(self, stage: str, event: str, **fields: Any) -> None:
        with JsonlAppender(self.path) as w:
            w.write({"time": round(time.time(), 3), "stage": stage, "event": event, **fields})
