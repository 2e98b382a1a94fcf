"""`dail hints`: NuRL's self-hints, made offline by the model from each problem and its final answer.

Each problem gets `attempts` samples (a sampling stage like expand and eval: sharded, resumable, one
row per (problem, attempt), stream `row_key(seed, p, a, "hint")`). A sample becomes a hint in one of
two ways: `abstract` -- the model's answer to the `hint` prompt (problem + final answer; NuRL's
self-hint, in one pass where NuRL takes two: an explanation, then its abstraction) -- or `partial` --
the first lines of its answer to the `rationalize` prompt (partial steps, NuRL's second-best kind of
hint, for a model that follows no instruction). A hint that contains the answer leaks it: the row is
kept, marked `leaked`, and counted; `read_hints` takes each problem's first attempt that does not
leak, so a problem all of whose attempts leak gets no hint.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field

from .. import distributed as dist
from ..config import HintConfig
from ..data import Problem, Row, read_jsonl
from ..grading import grade, problem_kind, token_pieces
from ..roles import Role

__all__ = ["Hint", "HINT_KEYS", "leaks", "make_hints", "read_hints"]

HINT_KEYS = ("model", "data", "data_digest", "seed", "mode", "partial_lines", "sampling", "prompts", "dtype")
FRESH = "rerun with --fresh to delete its hints first, or use another --out file"


class Hint(Row):
    """One drawn hint of a problem, and whether it gives the answer away."""

    problem_id: str
    sample: int = Field(description="The attempt.")
    hint: str
    n_tokens: int = Field(description="Tokens sampled for it (the compute a hint cost).")
    leaked: bool = Field(description="The hint contains the final answer: never used.")


def leaks(hint: str, problem: Problem) -> bool:
    """Whether `hint` gives `problem`'s answer away: an answer in it that grades as correct, or the answer's text
    standing alone (not inside a longer number or word)."""
    answer = (problem.answer or "").strip()
    if not answer:
        return False
    if grade(hint, answer, problem_kind(problem))[1]:
        return True
    return re.search(rf"(?<![\w.]){re.escape(answer)}(?![\w]|\.\d)", hint) is not None


def _hint_text(text: str, cfg: HintConfig) -> str:
    """The hint a sample gives: the whole answer (abstract), or its first `partial_lines` non-empty lines."""
    if cfg.mode == "abstract":
        return text.strip()
    return "\n".join([line for line in text.splitlines() if line.strip()][: cfg.partial_lines])


def make_hints(cfg: HintConfig, progress: dist.Progress | None = None, *, fresh: bool = False) -> dict[str, Any]:
    """Draw the hints of `cfg.data` into `cfg.out`; how many problems got one, and how many attempts leaked."""
    from ..models import load
    from ..prompts import render
    from ..rundir import config_path, data_digest, provenance_path
    from ..stage import Sampled, check_inputs, run_sampled

    check_inputs(cfg, "file")
    from .fit import load_problems

    problems = load_problems(cfg.data)[: cfg.limit]
    cfg = cfg.model_copy(update={"data_digest": data_digest(cfg.data)})
    by_id, out = {p.id: p for p in problems}, Path(cfg.out)
    role = Role.HINT if cfg.mode == "abstract" else Role.RATIONALIZE
    run_sampled(Sampled(
        cfg=cfg, out=out, config=config_path(out), provenance=provenance_path(out), row_keys=HINT_KEYS,
        fresh_hint=FRESH, wanted=[(p.id, a) for p in problems for a in range(cfg.attempts)], what="hints",
        load=lambda: load(cfg.model, dtype=cfg.dtype, device=dist.device_for(cfg.device)),
        prompts=lambda tokenizer, pending: {pid: render(tokenizer, role, by_id[pid], cfg.prompts) for pid in pending},
        new_tokens=lambda tokenizer: cfg.sampling.max_new_tokens,
        sample=lambda sink, loaded: _sample(cfg, by_id, sink, loaded)), progress, fresh=fresh)
    rows = read_jsonl(out, Hint)
    return {"out": str(out), "problems": len(problems), "with_hint": len(read_hints(out)),
            "attempts": len(rows), "leaked": sum(r.leaked for r in rows)}


def _sample(cfg: HintConfig, by_id: dict[str, Problem], sink: dist.ShardedJsonl, loaded: Any) -> None:
    """Decode this rank's share of the attempts in batches; each becomes a Hint row, marked when it leaks."""
    from ..engine import Engine, default_eos_ids
    from ..sampling import Sampler, row_key

    engine = Engine(loaded.model, default_eos_ids(loaded.model, loaded.tokenizer.eos_token_id))
    choose = Sampler(cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.top_k)
    for start in range(0, len(sink.todo), cfg.batch_size):
        chunk = sink.todo[start:start + cfg.batch_size]
        keys = [row_key(cfg.seed, pid, a, "hint") for pid, a in chunk]
        for gen in engine.generate([[loaded.prompts[pid]] for pid, _ in chunk], keys, choose,
                                   max_new_tokens=cfg.sampling.max_new_tokens):
            pid, a = chunk[gen.index]
            text = _hint_text("".join(token_pieces(loaded.tokenizer, gen.token_ids)), cfg)
            sink.put(start + gen.index, Hint(problem_id=pid, sample=a, hint=text, n_tokens=len(gen.token_ids),
                                             leaked=leaks(text, by_id[pid])))


def read_hints(path: str | Path) -> dict[str, str]:
    """Each problem's hint: its first attempt that neither leaks the answer nor is empty."""
    hints: dict[str, str] = {}
    for row in sorted(read_jsonl(path, Hint), key=lambda r: r.sample):
        if not row.leaked and row.hint.strip():
            hints.setdefault(row.problem_id, row.hint)
    return hints
