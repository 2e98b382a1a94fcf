"""CUDA-graph capture and replay of the engine's decode step, and whether a model allows them.

What it owns. Whether an engine captures its steps (`graphs_enabled`: by default on a CUDA model,
never for a RoPE variant that reads the sequence length on the host), capturing one step as a CUDA
graph whose warm-up runs leave the decode state as they found it (`capture`), and replaying the
graph of a (bucket, choose) pair, captured on its first use (`replay`). The graphs are stored in
the workspace whose addresses they captured (`dail.kvcache.Workspace.graphs`) and share its
memory pool; a captured graph freezes the model's Python-level state along with the pointers.

What it does not do: define the step (`dail.decode`), allocate what it touches (`dail.kvcache`),
or fuse kernels (graphs replay the eager kernels; torch.compile is not used).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

from .kvcache import Workspace

__all__ = ["HOST_ROPE", "capture", "graphs_enabled", "replay", "rope_type"]

# RoPE variants whose forward reads the sequence length on the host (or updates frequencies in place
# per call): a captured graph would freeze them.
HOST_ROPE = {"dynamic", "longrope"}

# A new `choose` object per call (a closure) would pile graphs up; past this many they are dropped.
_MAX_GRAPHS = 64


def rope_type(config) -> str:
    """The model's RoPE variant ("default" when plain)."""
    for name in ("rope_parameters", "rope_scaling"):
        params = getattr(config, name, None)
        if isinstance(params, dict) and params.get("rope_type", params.get("type")):
            return str(params.get("rope_type", params.get("type")))
    return "default"


def graphs_enabled(config, device: torch.device, requested: bool | None) -> bool:
    """Whether to capture decode steps: `requested`, by default on CUDA; a host-branching RoPE turns the
    default off and refuses an explicit request, as does a model off CUDA."""
    cuda = device.type == "cuda"
    enabled = cuda if requested is None else requested
    if enabled and not cuda:
        raise ValueError(f"CUDA graphs need a model on a CUDA device, not {device}")
    rope = rope_type(config)
    if enabled and rope in HOST_ROPE:
        if requested:
            raise ValueError(f"CUDA graphs cannot capture {rope!r} RoPE (it branches on the host per step)")
        enabled = False
    return enabled


def capture(ws: Workspace, step: Callable[[], None], device: torch.device) -> torch.cuda.CUDAGraph:
    """A CUDA graph of `step` (one decode step on `ws`); its warm-up runs leave the decode state as they found it."""
    saved = [x.clone() for x in ws.state()]
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(2):  # capture wants lazy initialisation (cuBLAS workspaces, kernels) done before
            step()
            # Each warm-up step wrote the current cache column and record column, which the real
            # step rewrites before anything reads them; the state goes back to what it was.
            for x, value in zip(ws.state(), saved):
                x.copy_(value)
    torch.cuda.current_stream(device).wait_stream(stream)
    if ws.pool is None:
        ws.pool = torch.cuda.graph_pool_handle()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=ws.pool):
        step()
    return graph


def replay(ws: Workspace, key: Hashable, make: Callable[[], object]) -> None:
    """Replay the graph stored in `ws` under `key`, made by `make` (a capture) on first use."""
    graph = ws.graphs.get(key)
    if graph is None:
        if len(ws.graphs) >= _MAX_GRAPHS:
            ws.graphs.clear()
        graph = ws.graphs[key] = make()
    graph.replay()
