"""Where this process stands in a launch, and the part files that sharded stages merge.

The one place that knows about processes (STYLE.md, point 10). Stages ask: which problems are mine
(`shard`), am I rank 0 (`is_main`), which device is mine (`device_for`), and wait for the others
(`barrier`). Underneath is `accelerate.PartialState`: under `accelerate launch --multi_gpu` or
torchrun it joins the process group (gloo on CPU, NCCL on GPU); with no launcher it is world size 1
with no process group, and every function here degrades to a no-op. (`accelerate launch --cpu`
starts ONE process whatever `--num_processes` says, unless given an MPI hostfile.)

Sharding is interleaved by problem: rank r of W takes problems r, r + W, r + 2W, ... of the problem
file (after `limit`), all n samples of each. The split depends only on (problem order, W), so a
rerun with the same W gives every rank the same problems.

Part files. A sharded stage writes its rows to `<out>.part-RANK-of-WORLD` (e.g.
`traces.jsonl.part-1-of-8`), append-only and resumable like the single-process file, with rows in
canonical order (problem-file order, then sample index) within the part. When every rank is done
(barrier), rank 0 `merge_parts`: it appends to `<out>` the part rows that `<out>` lacks, sorted into
canonical order, byte for byte as written, then deletes the parts. The result is the bytes a
single-process run writes: that run also appends its new rows after what `<out>` held, in canonical
order. A run killed before merging leaves its parts; the next run (any world size, 1 included)
counts their rows as done and merges them. A run with world size 1 and no parts around writes
`<out>` directly, exactly as before sharding existed.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .data import _truncate_torn_tail, read_done_keys

__all__ = ["use_cpu", "check_launch", "state", "rank", "world_size", "is_main", "device_for", "barrier", "shard", "gather", "part_path",
           "find_parts", "write_path", "done_keys", "merge_parts"]

T = TypeVar("T")
KEY = ("problem_id", "sample")


def use_cpu() -> bool:
    """Whether this process's stages run on the CPU: no CUDA, or a launcher that asked for the CPU."""
    import torch

    forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return forced or not torch.cuda.is_available()


def check_launch(num_processes: int) -> None:
    """Fail when the launcher started more processes than joined the process group.

    Each process would then believe it is alone and do the whole job, all of them writing the same
    files -- silently, which is worse than any error.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > num_processes:
        raise RuntimeError(f"launched as {launched} processes (WORLD_SIZE) but the process group has "
                           f"{num_processes}: on a CPU-only host launch with `accelerate launch --multi_gpu` "
                           "or torchrun, not `accelerate launch --cpu` (which starts one process)")


@functools.cache
def state():
    """The process's `accelerate.PartialState` (created once; world size 1 without a launcher)."""
    from accelerate import PartialState

    # cpu=True is what makes accelerate join a launched CPU process group (gloo); without it a
    # CPU-only process under torchrun reports world size 1 and works alone.
    current = PartialState(cpu=use_cpu())
    check_launch(current.num_processes)
    return current


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    return state().process_index


def world_size() -> int:
    """Number of processes in the launch (1 without a launcher)."""
    return state().num_processes


def is_main() -> bool:
    """Rank 0: the one process that writes configs, summaries, logs and merged files."""
    return rank() == 0


def device_for(requested: str) -> str:
    """The device this rank loads its model on: `auto`/`cuda` become this rank's GPU under a launcher.

    With world size 1 this is the old rule (`auto` -> cuda when present, else cpu); an explicit
    device (`cpu`, `cuda:3`) is always kept as given.
    """
    if requested not in ("auto", "cuda"):
        return requested
    if world_size() == 1:
        import torch

        return "cuda" if requested == "cuda" or torch.cuda.is_available() else "cpu"
    device = state().device  # cuda:LOCAL_RANK, or cpu under `accelerate launch --cpu`
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else 0}"
    return "cpu" if requested == "auto" else "cuda"  # asked for cuda without one: let loading fail loudly


def barrier() -> None:
    """Wait until every process gets here (no-op with world size 1)."""
    if world_size() > 1:
        state().wait_for_everyone()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's items: every world_size-th one, starting at its rank (interleaved, deterministic)."""
    return list(items[rank():: world_size()])


def gather(obj: Any) -> list[Any]:
    """`obj` of every rank, in rank order (picklable objects; `[obj]` with world size 1)."""
    if world_size() == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------
# part files


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
    if world_size() == 1 and not find_parts(out):
        return Path(out)
    return part_path(out, rank(), world_size())


def done_keys(out: str | os.PathLike, fields: tuple[str, ...] = KEY) -> set[tuple]:
    """Keys of complete rows in `out` and in every part of it (what a resumed run skips)."""
    done = read_done_keys(out, fields)
    for part in find_parts(out):
        done |= read_done_keys(part, fields)
    return done


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
        _truncate_torn_tail(out)
        with out.open("a", encoding="utf-8") as f:
            f.writelines(line for _, _, line in rows)
            f.flush()
            os.fsync(f.fileno())
    for part in parts:
        part.unlink()
    return len(rows)
