"""A finished run read back from its directory: the results table and one problem's four traces.

Nothing here runs a stage; `dail run` calls these once its stages are done, and the CLI draws
what they return.
"""

from __future__ import annotations

import json
from typing import Any

from .config import RunConfig
from .data import read_problems
from .rundir import EvalDir, RunDir

__all__ = ["four_traces", "results_table"]


def four_traces(root: RunDir) -> dict[str, Any] | None:
    """One problem as each writer solves it: the expert's solution, and sample 0 of the privileged-only, mixed and
    negative-reference rollouts (those the run made); None when the run made no negative rollout."""
    from .data import read_traces

    negative = root.traces(RunDir.NEGATIVE)
    if not negative.exists():
        return None
    first = read_traces(negative, kept_only=False)
    if not first:
        return None
    pid = first[0].problem_id
    problem = next(p for p in read_problems(root.waypoints) if p.id == pid)
    out: dict[str, Any] = {"problem": problem.problem, "expert": problem.solution}
    for key, name in (("privileged_only", RunDir.PSD), ("mixed", RunDir.MIXED), ("negative", RunDir.NEGATIVE)):
        path = root.traces(name)
        trace = next((t for t in read_traces(path, kept_only=False) if t.problem_id == pid and t.sample == 0),
                     None) if path.exists() else None
        if trace is not None:
            out[key] = trace.model_dump(include={"text", "token_ids", "source", "reject_reason"})
    return out


def results_table(root: RunDir, cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """pass@k and mean tokens per method and split, read back from the eval directories (config order)."""
    rows: dict[str, dict[str, Any]] = {}
    for method in cfg.methods:
        for split in cfg.eval_splits():
            path = EvalDir(root.eval_dir(method, split.label)).metrics
            if not path.exists():
                continue
            m = json.loads(path.read_text())
            pass_at = {str(k): v for k, v in m["pass_at_k"].items()}
            rows.setdefault(method, {})[split.label] = {"pass_at_k": pass_at, "mean_tokens": m["mean_tokens"]}
    return rows
