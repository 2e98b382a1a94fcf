"""Where this process stands in a launch, and the part files that sharded stages merge.

The one place that knows about processes (docs/layout.md). Stages ask: which problems are mine
(`shard`), am I rank 0 (`is_main`), which device is mine (`device_for`), and wait for the others
(`barrier`); they write through `ShardedJsonl`, which shares the rows out over the ranks, resumes,
keeps the canonical order and merges the ranks' part files into the one output, under a lock that
keeps a second writer out.

The package: `ranks` (rank, world size, device, shard, barrier, gather: a no-op alone), `parts` (the
part files of a sharded output and their merge), `locks` (one writer per output), `sharded`
(`ShardedJsonl`). This module is its public face; callers import from here.
"""

from __future__ import annotations

from .locks import OutputInUse, OutputLock, check_free, output_lock, remove_output
from .parts import KEY, done_keys, find_parts, has_rows, merge_parts, part_path, write_path
from .ranks import barrier, check_launch, device_for, gather, is_main, rank, shard, state, use_cpu, world_size
from .sharded import Progress, ShardedJsonl

__all__ = ["use_cpu", "check_launch", "state", "rank", "world_size", "is_main", "device_for", "barrier", "shard", "gather",
           "KEY", "part_path", "find_parts", "write_path", "done_keys", "has_rows", "merge_parts", "OutputInUse",
           "OutputLock", "output_lock", "check_free", "remove_output", "Progress", "ShardedJsonl"]
