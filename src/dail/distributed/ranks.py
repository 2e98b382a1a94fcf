"""Where this process stands in a launch: its rank, the world size, its device, its shard, barriers, gather.

Underneath is `accelerate.PartialState`: under `accelerate launch --multi_gpu` or torchrun it joins
the process group (gloo on CPU, NCCL on GPU); with no launcher it is world size 1 with no process
group, and every function here degrades to a no-op. (`accelerate launch --cpu` starts ONE process
whatever `--num_processes` says, unless given an MPI hostfile.)

Sharding is interleaved by problem: rank r of W takes problems r, r + W, r + 2W, ... of the problem
file (after `limit`), all n samples of each. The split depends only on (problem order, W), so a
rerun with the same W gives every rank the same problems.

The other modules of `dail.distributed` call these through this module (`ranks.world_size()`), so
a test that patches one here emulates a rank for all of them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["use_cpu", "check_launch", "state", "rank", "world_size", "is_main", "device_for", "barrier", "shard", "gather"]

T = TypeVar("T")


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
