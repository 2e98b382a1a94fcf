"""Bundled problem sets: the fixed splits, their shipped files, and a resolver from name or path.

The splits are drawn by the generator in `dail.datasets.arith` from fixed seeds and shipped as
JSONL next to this file, so loading one runs no generator and needs no network. The tests
regenerate them and compare byte for byte; after changing a template, rewrite them with

    python -c "from dail.datasets import SPLITS, write_split; [write_split(s) for s in SPLITS]"

Other data comes in as a JSONL file of `dail.data.Problem` rows, or from the Hugging Face Hub by
name through `dail.datasets.hub` (imported on use: the bundled splits need neither network nor
the `datasets` library).
"""

from __future__ import annotations

import os
from pathlib import Path

from dail.data import DataError, Problem, read_problems, write_jsonl
from dail.datasets.arith import generate, problem_at

__all__ = ["SPLITS", "bundled_files", "generate", "resolve_problems", "split_path", "split_problems",
           "write_split"]

# name -> (problems, seed); order matters (see `split_problems`). Fixed for good: the shipped files.
SPLITS: dict[str, tuple[int, int]] = {"arith-train": (400, 1729), "arith-test": (200, 4104)}


def _check(name: str) -> None:
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; bundled splits: {', '.join(SPLITS)}")


def split_path(name: str) -> Path:
    """Where the shipped file of split `name` lives (inside the installed package)."""
    _check(name)
    return Path(__file__).parent / f"{name}.jsonl"


def split_problems(name: str) -> list[Problem]:
    """Split `name` generated afresh, never repeating a text of itself or of an earlier split."""
    _check(name)
    # Disjoint by construction: an index whose text was already used is passed over (ids keep
    # the index, so a gap marks it). Test therefore never repeats train.
    seen: set[str] = set()
    for earlier in SPLITS:
        if earlier == name:
            break
        seen |= {p.problem for p in split_problems(earlier)}
    n, seed = SPLITS[name]
    out: list[Problem] = []
    index = 0
    while len(out) < n:
        problem = problem_at(seed, index, prefix=name)
        index += 1
        if problem.problem not in seen:
            seen.add(problem.problem)
            out.append(problem)
    return out


def write_split(name: str, path: str | os.PathLike | None = None) -> Path:
    """Generate split `name` and write it as JSONL (by default over its shipped file)."""
    out = Path(path) if path is not None else split_path(name)
    write_jsonl(out, split_problems(name))
    return out


def bundled_files() -> dict[str, Path]:
    """Every bundled split name -> its shipped file: the arithmetic splits and the test-bed's."""
    from dail.testbed import SHIPPED, split_files

    return {**{name: split_path(name) for name in SPLITS}, **split_files(SHIPPED)}


def resolve_problems(spec: str | os.PathLike) -> list[Problem]:
    """Problems from a bundled split name, a hub set (`aime-2025`, `hub:owner/name`) or a path to a JSONL file."""
    bundled = bundled_files()
    if str(spec) in bundled:
        return read_problems(bundled[str(spec)])
    path = Path(spec)
    if path.is_file():
        return read_problems(path)
    from dail.datasets.hub import KNOWN, import_set, is_hub_spec

    if is_hub_spec(spec):
        return import_set(str(spec)).problems
    raise DataError(spec, None, None, f"neither a bundled split ({', '.join(bundled)}), a hub set "
                    f"({', '.join(KNOWN)}, hub:owner/name) nor a file")
