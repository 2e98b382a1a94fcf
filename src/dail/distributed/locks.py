"""One writer per output: the advisory lock a writer holds on its file, and what is done under it.

Two runs appending to one file would both finish and leave every row twice, so a writer holds an
advisory lock (`OutputLock`: `flock` on `<out>.lock`, which holds its pid): each rank on the file it
appends to, rank 0 on `<out>` as well, so a second launch of any world size meets rank 0's lock, and
every rank of it stops (`OutputInUse`, naming the file and the holder's pid) before it reads or
writes a row. The kernel drops the lock when its holder exits or dies, so a crash never leaves a
stale one; the lock file is removed when the lock is released.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..data import DataError
from . import ranks
from .parts import find_parts

__all__ = ["OutputInUse", "OutputLock", "output_lock", "check_free", "remove_output", "lock_all"]


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
        # From the absolute path: '.' (an empty --out) names a folder too, and its lock goes beside it.
        full = Path(os.path.abspath(path))
        self.file = full.with_name(full.name + ".lock") if full.name else full / ".lock"
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
    if ranks.is_main():
        OutputLock(out).acquire().release()


def remove_output(out: str | os.PathLike, *others: str | os.PathLike) -> None:
    """`--fresh`: delete `out`, its part files and `others` (its saved config, ...), under `out`'s lock.

    Rank 0 deletes, every rank waits for it; a writer still at work makes it raise OutputInUse.
    """
    if ranks.is_main():
        with OutputLock(out):
            for path in [Path(out), *find_parts(out), *map(Path, others)]:
                path.unlink(missing_ok=True)
    ranks.barrier()


def lock_all(paths: Sequence[Path]) -> list[OutputLock]:
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
    errors = [e for e in ranks.gather(error) if e is not None]
    if errors:
        for lock in held:
            lock.release()
        raise OutputInUse(errors[0][0], None, None, errors[0][1])
    return held
