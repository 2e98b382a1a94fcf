"""The run directory's layout, named in one place, and its one log schema.

    runs/NAME/config.toml            the run's resolved RunConfig
              selected.jsonl         `select`'s problems (and selected-samples/, its eval directory)
              waypoints.jsonl        the problems with the negative reference's partial solutions
              traces.jsonl           the mixed rollout (dail, dail-nll); traces-psd.jsonl, traces-star.jsonl
              adapter/METHOD/        one LoRA adapter per trained method (`AdapterDir`)
              eval/METHOD/SPLIT/     samples.jsonl, metrics.json of one method on one split (`EvalDir`)
              metrics.json  report.html  report.md  plots/*.png  traces.html
              stages/STAGE.toml      the config of a stage launched under `accelerate launch`
              trackers/              file-writing experiment trackers' logs of the run's pass@k (`report_to`)
              events.jsonl           one line per stage event (`RunLog`)
    runs/NAME.lock                   held by the `dail run` at work on it (and X.lock beside any output X
                                     being written: `dail.distributed.OutputLock`; gone when it ends)

Every stage saves the config it resolved beside its output under one rule (`config_path`): a file
output `X.jsonl` gets `X.config.toml`, a directory output `D/` gets `D/config.toml`. Stages ask
this module for paths and never spell a file name; each log file has one schema: `events.jsonl`
the stage events (`RunLog`, beside any expansion's output too), an adapter's `log.jsonl` its
training steps. What made an output (`dail.provenance`) goes
beside it under the same rule (`provenance_path`). It does no I/O beyond the log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import JsonlAppender

__all__ = ["AdapterDir", "CheckpointDir", "EvalDir", "RunDir", "RunLog", "config_path", "data_digest", "data_revision", "events_path",
           "provenance_path", "ReportDir", "selection_dir", "split_name"]


# The folder of file-writing experiment trackers, in a run and in an adapter directory alike.
TRACKERS = "trackers"


def config_path(out: str | Path) -> Path:
    """Where a stage saves its resolved config: `X.config.toml` beside a file output, `D/config.toml` in a directory."""
    out = Path(out)
    return out.with_suffix(".config.toml") if out.suffix == ".jsonl" else out / "config.toml"


def provenance_path(out: str | Path) -> Path:
    """Where a stage records what made its output (`dail.provenance`): `X.provenance.json` beside a file output,
    `D/provenance.json` in a directory."""
    out = Path(out)
    return out.with_suffix(".provenance.json") if out.suffix == ".jsonl" else out / "provenance.json"


def events_path(out: str | Path) -> Path:
    """The stage-event log (`RunLog`) beside an output: a run's own when the output is in a run directory."""
    return Path(out).parent / "events.jsonl"


def data_digest(spec: str) -> str:
    """A digest of a data spec's content: blake2b of the file or of a hub set's rows, or the bundled split's name."""
    import hashlib

    path = Path(spec)
    if not path.is_file():
        from .datasets.hub import import_set, is_hub_spec

        if is_hub_spec(spec):
            # The rows, not the commit: a commit that leaves them alone (a README edit) must not block a
            # resume. The commit is recorded apart (`data_revision`).
            got = import_set(spec)
            text = "".join(p.model_dump_json() + "\n" for p in got.problems).encode()
            return f"hub:{got.repo}:{hashlib.blake2b(text, digest_size=12).hexdigest()}"
        return f"bundled:{spec}"
    h = hashlib.blake2b(digest_size=12)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_revision(spec: str) -> str | None:
    """`owner/name@commit` of the Hub revision a data spec reads, or None for a file or a bundled split."""
    if Path(spec).is_file():
        return None
    from .datasets.hub import import_set, is_hub_spec

    if not is_hub_spec(spec):
        return None
    got = import_set(spec)
    return f"{got.repo}@{got.revision}"


def split_name(spec: str) -> str:
    """A short name for a data spec: the bundled split's name, or the file's name without .jsonl / .json."""
    name = Path(spec).name
    return Path(name).stem if name.endswith((".jsonl", ".json")) else name


@dataclass(frozen=True)
class RunDir:
    """Paths of every artifact of one run."""

    root: Path
    # the traces files: the mixed rollout, privileged-only, answer-only (STaR), the negative reference's
    MIXED, PSD, STAR, NEGATIVE = "traces.jsonl", "traces-psd.jsonl", "traces-star.jsonl", "traces-negative.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def events(self) -> Path:
        """The run's stage events (`RunLog`)."""
        return self.root / "events.jsonl"

    @property
    def selected(self) -> Path:
        return self.root / "selected.jsonl"

    @property
    def selection_samples(self) -> Path:
        """`select`'s eval directory: the base model's samples on every candidate."""
        return selection_dir(self.selected)

    @property
    def selection_rows(self) -> Path:
        """`select`'s graded samples of every candidate (what rft trains on and compute counts)."""
        return EvalDir(self.selection_samples).samples

    @property
    def waypoints(self) -> Path:
        return self.root / "waypoints.jsonl"

    def solutions(self, method: str) -> Path:
        """The problems file a solution-trained control trains on (`solutions-oracle-sft.jsonl`, `solutions-rft.jsonl`)."""
        return self.root / f"solutions-{method}.jsonl"

    def traces(self, name: str = MIXED) -> Path:
        """A traces file by its name (traces.jsonl, traces-psd.jsonl, traces-star.jsonl)."""
        return self.root / name

    def adapter(self, method: str) -> Path:
        return self.root / "adapter" / method

    @property
    def hints(self) -> Path:
        """NuRL's hints of the training problems (`dail hints`)."""
        return self.root / "hints.jsonl"

    def eval_dir(self, method: str, split: str) -> Path:
        """The eval directory of a method on a split (a spec: bundled name or JSONL path)."""
        return self.eval_root / method / split_name(split)

    def eval_dirs(self) -> list[Path]:
        """Every eval directory under this run that holds metrics, as eval/METHOD/SPLIT."""
        return sorted(p.parent for p in self.eval_root.glob(f"*/*/{EvalDir.METRICS}"))

    def metrics_files(self) -> list[Path]:
        """Every eval's metrics.json under this run."""
        return [EvalDir(d).metrics for d in self.eval_dirs()]

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        return ReportDir(self.root).html

    @property
    def eval_root(self) -> Path:
        """eval/: one METHOD/SPLIT directory per evaluation."""
        return self.root / "eval"

    def traces_files(self) -> list[Path]:
        """Every traces file of the run: the mixed rollout first, then the others by name."""
        return sorted(self.root.glob("traces*.jsonl"), key=lambda t: (t.name != self.MIXED, t.name))

    @property
    def trackers(self) -> Path:
        """Where file-writing experiment trackers (TensorBoard) log the run's results (`report_to`)."""
        return self.root / TRACKERS

    def stage_config(self, label: str) -> Path:
        """The config file a launched stage reads (`label` like 'expand:traces.jsonl')."""
        return self.root / "stages" / (label.replace(":", "-").replace("/", "-") + ".toml")


def selection_dir(selected: str | Path) -> Path:
    """`select`'s eval directory beside its output (`selected.jsonl` -> `selected-samples/`)."""
    selected = Path(selected)
    return selected.with_name(selected.stem + "-samples")


@dataclass(frozen=True)
class ReportDir:
    """What `dail report` writes into its output directory (a run's own directory in `dail run`)."""

    root: Path

    @property
    def markdown(self) -> Path:
        return self.root / "report.md"

    @property
    def html(self) -> Path:
        return self.root / "report.html"

    @property
    def traces_html(self) -> Path:
        """The trace viewer the report links to."""
        return self.root / "traces.html"

    def plot(self, name: str) -> Path:
        return self.root / "plots" / f"{name}.png"


@dataclass(frozen=True)
class EvalDir:
    """Paths of one evaluation directory (a method on a split, or select's samples)."""

    root: Path
    METRICS = "metrics.json"

    @property
    def samples(self) -> Path:
        """One graded sample per line, appended as they finish."""
        return self.root / "samples.jsonl"

    @property
    def metrics(self) -> Path:
        """pass@k and the rest, written atomically once every sample is in."""
        return self.root / self.METRICS

    @property
    def config(self) -> Path:
        return config_path(self.root)


@dataclass(frozen=True)
class AdapterDir:
    """Paths of one training run's directory: the final adapter, its step log and its checkpoints."""

    root: Path

    @property
    def log(self) -> Path:
        """One line per optimizer step (the training log: its own schema, never the stage events')."""
        return self.root / "log.jsonl"

    @property
    def config(self) -> Path:
        return config_path(self.root)

    @property
    def done(self) -> Path:
        """peft's adapter_config.json, written last: its presence means the adapter is whole."""
        return self.root / "adapter_config.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step}"

    @property
    def trackers(self) -> Path:
        """Where file-writing experiment trackers (TensorBoard) log the training steps, unless `logging_dir` says."""
        return self.root / TRACKERS

    @property
    def rollouts(self) -> Path:
        """An RL run's rollouts, one file per rollout batch (`dail rl`)."""
        return self.root / "rollouts"

    def own_files(self) -> list[Path]:
        """Every file or folder a training run writes here (what `--fresh` deletes), and no other."""
        peft = ("adapter_model.safetensors", "adapter_model.bin")  # peft's weights (its README.md may be the user's)
        return [self.done, self.log, self.config, self.checkpoints, self.trackers, provenance_path(self.root),
                self.rollouts, *(self.root / name for name in peft)]


@dataclass(frozen=True)
class CheckpointDir:
    """Paths inside one checkpoint (`AdapterDir.checkpoint(step)`): peft's files beside these."""

    root: Path

    @property
    def weights(self) -> Path:
        return self.root / "adapter_model.safetensors"

    @property
    def optimizer(self) -> Path:
        return self.root / "optimizer.pt"

    @property
    def scheduler(self) -> Path:
        return self.root / "scheduler.pt"

    @property
    def state(self) -> Path:
        return self.root / "state.json"


class RunLog:
    """`events.jsonl`: one JSON object per event, `{"time", "stage", "event", ...fields}` (one schema for every writer)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __call__(self, stage: str, event: str, **fields: Any) -> None:
        with JsonlAppender(self.path) as w:
            w.write({"time": round(time.time(), 3), "stage": stage, "event": event, **fields})
