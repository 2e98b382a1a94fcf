"""The sharded, resumable, ordered output of a sampling stage (`ShardedJsonl`), and its progress callback."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import ranks
from .locks import lock_all
from .parts import done_keys, merge_parts, write_path

__all__ = ["Progress", "ShardedJsonl"]


Progress = Callable[..., None]
"""progress(done, total, **fields): called after every row a stage writes (the CLI draws it)."""


class ShardedJsonl:
    """One stage's JSONL output, shared out by problem over the ranks, resumable, in canonical order.

    `keys` are every row's (problem_id, sample) in canonical order. `todo` is this rank's share of
    them (interleaved by problem, see `dail.distributed.ranks`) that no earlier run wrote. The stage
    computes rows in any order and hands each over with `put(i, row)` (`i` indexes `todo`); a row
    waits for every row before it, so the file is always a prefix of the canonical order. `finish()`
    leaves this rank's part (empty when idle), waits for every rank, and rank 0 merges the parts.
    From construction to the end of the `with` the rank holds the locks of its file (and rank 0 of
    `out`): a second writer raises OutputInUse before it counts a row as done.

        with ShardedJsonl(out, keys) as sink:
            for i, row in compute(sink.todo):
                sink.put(i, row)
        # after the `with`: merged, every rank past the final barrier
    """

    def __init__(self, out: str | os.PathLike, keys: Sequence[tuple[str, int]], progress: Progress | None = None,
                 in_order: Callable[[Any], Any] | None = None):
        from ..data import JsonlAppender

        self.out, self.keys = Path(out), list(keys)
        self.path = write_path(self.out)
        # Locked before anything is read: the rows another writer appends would otherwise be written twice.
        self._locks = lock_all(list(dict.fromkeys(([self.out] if ranks.is_main() else []) + [self.path])))
        try:
            problems = list(dict.fromkeys(pid for pid, _ in self.keys))
            mine = set(ranks.shard(problems))
            done = done_keys(self.out)
            mine_keys = [k for k in self.keys if k[0] in mine]
            self.todo: list[tuple[str, int]] = [k for k in mine_keys if k not in done]
            self.resumed = len(mine_keys) - len(self.todo)  # this rank's rows an earlier run wrote
            self.progress = progress
            self.in_order = in_order or (lambda row: row)  # applied as rows are written, in canonical order
            self._ready: dict[int, Any] = {}
            self._written = 0
            self._sink = JsonlAppender(self.path) if self.todo else None
        except BaseException:
            self.release()
            raise

    def __enter__(self) -> ShardedJsonl:
        if self._sink is not None:
            self._sink.__enter__()
        return self

    def put(self, i: int, row: Any) -> None:
        """Row `i` of `todo` is done: write it and every row after it that was waiting for it."""
        self._ready[i] = row
        while self._written in self._ready:
            self._sink.write(self.in_order(self._ready.pop(self._written)))
            self._written += 1
            if self.progress:
                self.progress(self.resumed + self._written, self.resumed + len(self.todo))

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if self._sink is not None:
                self._sink.__exit__(kind, value, traceback)
            if kind is None:
                self.finish()
        finally:
            self.release()

    def release(self) -> None:
        """Drop this rank's locks (the end of the `with` does)."""
        for lock in self._locks:
            lock.release()

    def finish(self) -> None:
        """Leave this rank's part, wait for every rank, merge on rank 0, wait again."""
        if self._written != len(self.todo):
            raise RuntimeError(f"{self.out}: {len(self.todo) - self._written} row(s) of this rank were never put")
        if self.path != self.out and not self.path.exists():
            self.path.touch()  # every rank leaves its part, so a merge can tell a lost part from an idle rank
        ranks.barrier()
        if self.path != self.out:  # always so under a launcher; alone, only when parts of an earlier launch are about
            if ranks.is_main():
                merge_parts(self.out, self.keys, world=ranks.world_size())
            ranks.barrier()
