"""The part files of a sharded output: their names, which exist, the rows they hold, and merging them.

A sharded stage writes its rows to `<out>.part-RANK-of-WORLD` (e.g. `traces.jsonl.part-1-of-8`),
append-only and resumable like the single-process file, with rows in canonical order (problem-file
order, then sample index) within the part. When every rank is done (barrier), rank 0 `merge_parts`:
it appends to `<out>` the part rows that `<out>` lacks, sorted into canonical order, byte for byte as
written, then deletes the parts. The result is the bytes a single-process run writes: that run also
appends its new rows after what `<out>` held, in canonical order. A run killed before merging leaves
its parts; the next run (any world size, 1 included) counts their rows as done and merges them. A run
with world size 1 and no parts around writes `<out>` directly, exactly as before sharding existed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from ..data import read_done_keys, truncate_torn_tail
from . import ranks

__all__ = ["KEY", "part_path", "find_parts", "write_path", "done_keys", "has_rows", "merge_parts"]

KEY = ("problem_id", "sample")


def part_path(out: str | os.PathLike, rank: int, world: int) -> Path:
    """`<out>.part-RANK-of-WORLD`, e.g. traces.jsonl.part-0-of-2."""
    out = Path(out)
    return out.with_name(f"{out.name}.part-{rank}-of-{world}")


def find_parts(out: str | os.PathLike) -> list[Path]:
    """Part files of `out` left on disk (any world size), ordered by (world, rank)."""
    out = Path(out)
    pattern = re.compile(re.escape(out.name) + r"\.part-(\d+)-of-(\d+)")
    found = []
    if out.parent.is_dir():
        for path in out.parent.iterdir():
            m = pattern.fullmatch(path.name)
            if m:
                found.append(((int(m[2]), int(m[1])), path))
    return [path for _, path in sorted(found)]


def write_path(out: str | os.PathLike) -> Path:
    """Where this rank appends: `out` itself when alone with no parts around, else its own part."""
    if ranks.world_size() == 1 and not find_parts(out):
        return Path(out)
    return part_path(out, ranks.rank(), ranks.world_size())


def done_keys(out: str | os.PathLike, fields: tuple[str, ...] = KEY) -> set[tuple]:
    """Keys of complete rows in `out` and in every part of it (what a resumed run skips)."""
    done = read_done_keys(out, fields)
    for part in find_parts(out):
        done |= read_done_keys(part, fields)
    return done


def has_rows(out: str | os.PathLike) -> bool:
    """Whether `out` or a part of it holds anything (a resume, not a first run)."""
    return any(p.exists() and p.stat().st_size > 0 for p in [Path(out), *find_parts(out)])


def _complete_lines(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [line for line in f if line.endswith("\n") and line.strip()]  # a torn tail is dropped


def merge_parts(out: str | os.PathLike, order: Iterable[tuple], *, world: int | None = None,
                fields: tuple[str, ...] = KEY) -> int:
    """Append the part rows `out` lacks to `out` in canonical order, delete the parts; rows added.

    `order` lists the row keys (values of `fields`) in canonical order; rows with other keys go
    last, in the order found. Lines are copied byte for byte and a key already present (in `out`
    or an earlier part) is skipped, so a merge killed half-way is finished by the next one. With
    `world`, all `world` parts of that size must exist: a missing one raises FileNotFoundError
    naming it, before anything is written. Call it on one process only (rank 0, after a barrier).
    """
    import json

    out = Path(out)
    parts = find_parts(out)
    if world is not None:
        missing = [str(part_path(out, r, world)) for r in range(world) if not part_path(out, r, world).exists()]
        if missing:
            raise FileNotFoundError(f"cannot merge {out}: missing part file(s) {', '.join(missing)}; "
                                    "rerun the stage with the same number of processes to write them")
    if not parts:
        return 0
    position = {tuple(key): i for i, key in enumerate(order)}
    seen = read_done_keys(out, fields)
    rows: list[tuple[int, int, str]] = []
    for part in parts:
        for line in _complete_lines(part):
            key = tuple(json.loads(line).get(k) for k in fields)
            if key in seen:
                continue
            seen.add(key)
            rows.append((position.get(key, len(position)), len(rows), line))
    rows.sort()
    if rows:
        out.parent.mkdir(parents=True, exist_ok=True)
        truncate_torn_tail(out)
        with out.open("a", encoding="utf-8") as f:
            f.writelines(line for _, _, line in rows)
            f.flush()
            os.fsync(f.fileno())
    for part in parts:
        part.unlink()
    return len(rows)
