"""What `dail report` reads: the evaluations under its inputs (`find_evals`, placed by the rules in
`dail.report`'s docstring) and the numbers in their metrics.json (a value missing, or not a finite
number, reads as None)."""

from __future__ import annotations

import json
import math
import tomllib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import DataError
from .rundir import EvalDir, RunDir, split_name

__all__ = ["EvalEntry", "find_evals", "find_rl_logs", "ordered", "int_keyed", "num", "budget_curve", "budget_top_k"]


@dataclass
class EvalEntry:
    """One evaluation: a method on a split, with its metrics.json."""

    method: str
    split: str
    path: Path
    metrics: dict[str, Any]
    run: str | None = None


# --------------------------------------------------------------------------- finding inputs


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, None, f"invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise DataError(path, None, None, "expected a JSON object")
    return obj


def _entry(path: Path, method: str, split: str, run: str | None) -> EvalEntry:
    file = EvalDir(path).metrics
    metrics = _read_metrics(file)
    label = metrics.get("label")
    return EvalEntry(str(label) if label else method, split, file, metrics, run)


def _from_eval_dir(d: Path) -> EvalEntry:
    d = d.resolve()
    if d.parent.name == "eval":  # RUN/eval/SPLIT
        return _entry(d, d.parent.parent.name, d.name, d.parent.parent.name)
    if d.parent.parent.name == "eval":  # RUN/eval/METHOD/SPLIT
        return _entry(d, d.parent.name, d.name, d.parent.parent.parent.name)
    entry = _entry(d, d.name, "", None)
    data = str((entry.metrics.get("config") or {}).get("data") or "")
    entry.split = split_name(data) if data else "eval"
    return entry


def _from_run_dir(run: Path) -> list[EvalEntry]:
    entries = []
    for d in sorted(p for p in RunDir(run).eval_root.iterdir() if p.is_dir()):
        if EvalDir(d).metrics.is_file():
            entries.append(_entry(d, run.resolve().name, d.name, run.resolve().name))
            continue
        for s in sorted(p for p in d.iterdir() if p.is_dir()):
            if EvalDir(s).metrics.is_file():
                entries.append(_entry(s, d.name, s.name, run.resolve().name))
    return entries


def _config_methods(run: Path) -> list[str]:
    """The `methods` of a run's config.toml, in the order the user listed them ([] when absent)."""
    try:
        methods = tomllib.loads(RunDir(run).config.read_text(encoding="utf-8")).get("methods")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    return [str(m) for m in methods] if isinstance(methods, list) else []


def find_evals(inputs: Iterable[str | Path]) -> list[EvalEntry]:
    """Every evaluation under the inputs, methods named uniquely (clashes get the run's name).

    Methods of a run directory come in its config's `methods` order (base, sft-expert, dail, ...),
    not alphabetically; others follow in the order found.
    """
    entries: list[EvalEntry] = []
    order: list[str] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_file() and p.name == EvalDir.METRICS:
            p = p.parent
        if RunDir(p).eval_root.is_dir():  # first: a run directory may hold a summary metrics.json too
            entries.extend(_from_run_dir(p))
            order += [m for m in _config_methods(p) if m not in order]
        elif EvalDir(p).metrics.is_file():
            entries.append(_from_eval_dir(p))
        elif RunDir(p).traces_files():
            continue  # a run that has expanded but not evaluated yet: traces only
        elif not p.exists():
            raise DataError(p, None, None, "no such file or directory")
        else:
            raise DataError(p, None, None, "neither an eval directory (metrics.json) nor a run directory (eval/)")
    unique: dict[Path, EvalEntry] = {}
    for e in entries:
        unique.setdefault(e.path.resolve(), e)
    entries = list(unique.values())
    rank = {m: i for i, m in enumerate(order)}
    entries.sort(key=lambda e: rank.get(e.method, len(rank)))  # stable: unlisted methods keep their places
    clashes = Counter((e.method, e.split) for e in entries)
    for e in entries:
        if clashes[(e.method, e.split)] > 1:
            e.method = f"{e.run}/{e.method}" if e.run and e.run != e.method else str(e.path.parent)
    return entries


# --------------------------------------------------------------------------- metrics.json's numbers


def find_rl_logs(inputs: Iterable[str | Path]) -> dict[str, list[dict[str, Any]]]:
    """The step logs of the RL methods (`dail rl`) of each run directory among `inputs`, by method
    ("RUN/METHOD" when there are several runs); a torn last line is skipped."""
    from .rundir import AdapterDir

    runs = [Path(i) for i in inputs if RunDir(Path(i)).config.is_file()]
    logs: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for log in sorted((run / "adapter").glob(f"*/{AdapterDir(run).log.name}")):
            lines = []
            for line in log.read_text(encoding="utf-8").splitlines():
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
            if lines and "reward" in lines[0]:  # a `dail rl` log, not a `dail train` one
                method = log.parent.name
                logs[f"{run.name}/{method}" if len(runs) > 1 else method] = lines
    return logs


def ordered(values: Iterable[str]) -> list[str]:
    """The distinct values in the order first seen (methods, splits)."""
    return list(dict.fromkeys(values))


def int_keyed(table: Any) -> dict[int, Any]:
    """A JSON object keyed by integers-as-strings, as a dict keyed by int (bad keys dropped)."""
    if not isinstance(table, dict):
        return {}
    return dict(sorted((int(k), v) for k, v in table.items() if str(k).isdigit()))


def num(v: Any) -> float | None:
    """`v` as a finite float; None for anything else (missing, a string, a bool, inf, NaN)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def budget_curve(m: dict[str, Any], k: int = 1) -> dict[int, float]:
    """pass@k at each token budget: `pass_at_k_budget[b][k]` (pass@1 also from `accuracy_at_budget`)."""
    curve = {b: num(int_keyed(v).get(k)) for b, v in int_keyed(m.get("pass_at_k_budget")).items()}
    if k == 1 and not any(v is not None for v in curve.values()):
        curve = {b: num(v) for b, v in int_keyed(m.get("accuracy_at_budget")).items()}
    return {b: v for b, v in curve.items() if v is not None}


def budget_top_k(m: dict[str, Any]) -> int | None:
    """The largest k > 1 whose pass@k is known at every token budget (None when there is none)."""
    tables = [int_keyed(v) for v in int_keyed(m.get("pass_at_k_budget")).values()]
    common = set.intersection(*(set(t) for t in tables)) if tables else set()
    return max((k for k in common if k > 1), default=None)
