"""Where this process stands in a launch, and the part files that sharded stages merge.

The one place that knows about processes (docs/layout.md). Stages ask: which problems are mine
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

One writer per output. Two runs appending to one file would both finish and leave every row twice,
so a writer holds an advisory lock (`OutputLock`: `flock` on `<out>.lock`, which holds its pid):
each rank on the file it appends to, rank 0 on `<out>` as well, so a second launch of any world size
meets rank 0's lock, and every rank of it stops (`OutputInUse`, naming the file and the holder's
pid) before it reads or writes a row. The kernel drops the lock when its holder exits or dies, so a
crash never leaves a stale one; the lock file is removed when the lock is released.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .data import DataError, truncate_torn_tail, read_done_keys

__all__ = ["use_cpu", "check_launch", "state", "rank", "world_size", "is_main", "device_for", "barrier", "shard", "gather", "part_path",
           "find_parts", "write_path", "done_keys", "has_rows", "merge_parts", "OutputInUse", "OutputLock", "output_lock",
           "check_free", "remove_output", "Progress", "ShardedJsonl"]

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


# ---------------------------------------------------------------------------------------------
# one writer per output


class OutputInUse(DataError):
    """Another process holds the lock of an output this process was about to write."""


class OutputLock:
    """An exclusive, non-blocking, advisory lock on the output `path`: `flock` on `<path>.lock`.

    The lock file holds the holder's pid, for the error a second writer gets. flock locks belong to
    an open file description, so the kernel drops one when its holder exits or is killed, and two
    opens in one process exclude each other too. On release the file is removed while still locked;
    a process that meanwhile locked the removed file sees that it is gone and locks the new one.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.file = self.path.with_name(self.path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        """Take the lock, or raise OutputInUse naming the output and the holder's pid."""
        import fcntl

        self.file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by launched children
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputInUse(self.path, None, None,
                                  f"another process (pid {pid}) is writing this output (it holds {self.file}); two "
                                  "writers would duplicate its rows: wait for that process to end or stop it, or "
                                  "write elsewhere") from None
            try:
                current = os.stat(self.file)
                same = (current.st_dev, current.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # locked a file its holder removed on release: lock the one there now
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.file.unlink(missing_ok=True)  # while still held: no one can have locked this file since
        finally:
            os.close(fd)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, *, main_only: bool = False) -> Iterator[None]:
    """Hold `path`'s lock for the block. `main_only`: only the launch's rank 0 takes it, for stages whose
    other ranks write nothing there (read from the launcher's RANK, without joining a process group)."""
    if main_only and os.environ.get("RANK", "0") != "0":
        yield
        return
    with OutputLock(path):
        yield


def check_free(out: str | os.PathLike) -> None:
    """Raise OutputInUse now if another process writes `out` (rank 0 asks), so a second writer stops
    before it loads a model; the lock itself is the one `ShardedJsonl` takes."""
    if is_main():
        OutputLock(out).acquire().release()


def remove_output(out: str | os.PathLike, *others: str | os.PathLike) -> None:
    """`--fresh`: delete `out`, its part files and `others` (its saved config, ...), under `out`'s lock.

    Rank 0 deletes, every rank waits for it; a writer still at work makes it raise OutputInUse.
    """
    if is_main():
        with OutputLock(out):
            for path in [Path(out), *find_parts(out), *map(Path, others)]:
                path.unlink(missing_ok=True)
    barrier()


def _lock_all(paths: Sequence[Path]) -> list[OutputLock]:
    """Lock `paths` on every rank; when any rank fails, every rank releases its locks and raises that error."""
    held: list[OutputLock] = []
    error = None
    try:
        for path in paths:
            held.append(OutputLock(path).acquire())
    except OutputInUse as e:
        error = (e.path, e.message)
    except BaseException:
        for lock in held:
            lock.release()
        raise
    errors = [e for e in gather(error) if e is not None]
    if errors:
        for lock in held:
            lock.release()
        raise OutputInUse(errors[0][0], None, None, errors[0][1])
    return held


# ---------------------------------------------------------------------------------------------
# the sharded, resumable, ordered output of a sampling stage


Progress = Callable[..., None]
"""progress(done, total, **fields): called after every row a stage writes (the CLI draws it)."""


class ShardedJsonl:
    """One stage's JSONL output, shared out by problem over the ranks, resumable, in canonical order.

    `keys` are every row's (problem_id, sample) in canonical order. `todo` is this rank's share of
    them (interleaved by problem, see the module docstring) that no earlier run wrote. The stage
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
        from .data import JsonlAppender

        self.out, self.keys = Path(out), list(keys)
        self.path = write_path(self.out)
        # Locked before anything is read: the rows another writer appends would otherwise be written twice.
        self._locks = _lock_all(list(dict.fromkeys(([self.out] if is_main() else []) + [self.path])))
        try:
            problems = list(dict.fromkeys(pid for pid, _ in self.keys))
            mine = set(shard(problems))
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
        barrier()
        if self.path != self.out:  # always so under a launcher; alone, only when parts of an earlier launch are about
            if is_main():
                merge_parts(self.out, self.keys, world=world_size())
            barrier()
