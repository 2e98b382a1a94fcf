"""A finished run read back from its directory: the results table, the compute each method used, and one
problem's four traces.

Nothing here runs a stage; `dail run` calls these once its stages are done, and the CLI draws
what they return.
"""

from __future__ import annotations

import json
from typing import Any

from .config import RunConfig
from .data import read_problems
from .methods import RL_TRAINED, TRAINED
from .rundir import AdapterDir, EvalDir, RunDir

__all__ = ["compute", "four_traces", "results_table"]


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


def compute(root: RunDir, cfg: RunConfig) -> dict[str, dict[str, int]]:
    """Tokens each method cost beyond the shared selection: those sampled for its training data, those trained on.

    `sampled` counts trace tokens of its expansion (a mixed or privileged rollout runs two rows per
    token); `rft` reuses selection's samples and the solution-trained methods sample nothing.
    `trained` is the target tokens over all optimizer steps (a contrastive step runs two reference
    forwards besides the student's). An RL method's are read from its rollout files (`_rl_compute`).
    `selection` (in every row alike) is select's sampled tokens.
    """
    from .data import Sample, read_jsonl, read_traces

    samples = root.selection_rows
    selection = sum(s.n_tokens for s in read_jsonl(samples, Sample)) if samples.exists() else 0
    out = {}
    for method in cfg.methods:
        traces, _ = TRAINED.get(method, (None, None))
        path = root.traces(traces) if traces else None
        sampled = sum(len(t.token_ids) for t in read_traces(path, kept_only=False)) if path and path.exists() else 0
        trained = _last_log_line(root, method).get("tokens_seen", 0)
        if method in RL_TRAINED:
            sampled, trained = _rl_compute(root, cfg, method)
        out[method] = {"selection": selection, "sampled": sampled, "trained": trained}
    return out


def _last_log_line(root: RunDir, method: str) -> dict[str, Any]:
    """A trained method's last log line; empty when it has none."""
    log = AdapterDir(root.adapter(method)).log
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return json.loads(lines[-1]) if lines else {}


def _rl_compute(root: RunDir, cfg: RunConfig, method: str) -> tuple[int, int]:
    """An RL method's sampled and trained tokens, from its rollout files: nurl's are grpo's up to the switch,
    its own hinted stage's after, and its hints."""
    from .rl.rollouts import compute_from_files

    def read(name: str, upto: int | None = None) -> dict[str, int]:
        out = root.adapter(name)
        return compute_from_files(out, upto) if AdapterDir(out).config.exists() else {"sampled": 0, "trained": 0}

    own = read(method)
    if method != "nurl":
        return own["sampled"], own["trained"]
    before = read("grpo", upto=cfg.nurl_switch())
    return own["sampled"] + before["sampled"] + _hint_tokens(root), own["trained"] + before["trained"]


def _hint_tokens(root: RunDir) -> int:
    """Tokens nurl's hints stage sampled: every attempt, leaking or not."""
    from .data import read_jsonl
    from .rl.hints import Hint

    return sum(h.n_tokens for h in read_jsonl(root.hints, Hint)) if root.hints.exists() else 0
