"""Expansion: the mixed-policy rollout of learner and privileged student, trace filters, `dail expand`.

The default rule is the authors' (`rule = "threshold"`; docs/method.md, "Expansion: the mixed
rollout"), per step t of each trace: the learner proposes up to `retries` tokens a_r ~ q_L =
T(learner logits) (draws 0..R-1); the first with p_P(a_r) >= tau under the privileged student's
*raw* softmax is kept (source L); if none is, the token is drawn from q_P = T(privileged logits)
(draw PRIVILEGED_DRAW, source P). tau = 0: every token is the learner's first proposal; tau >= 1:
every token is the privileged student's. The earlier rule stays as `rule = "nucleus"` (an ablation):
one proposal, kept when the *transformed* q_P(a) > tau. The chosen token is appended to both
contexts; EOS from either source ends the trace (the EOS token is part of it), else it ends at
`max_new_tokens`. `dail.sampling.mixed_rule` builds a rule as a `choose` callback of
`dail.engine.Engine`, so learner and privileged rows share one forward per step; `reference_rollout`
writes both rules out slowly (two full forwards per token, no cache, one trace at a time) and the
tests hold the two equal. Each token's engine tag carries its source (low bit) and how many
proposals were rejected before it (the rest), from which the run logs the acceptance rate and the
mean number of learner proposals per token.

`run(ExpandConfig)` is the stage: problems x n samples decoded in batches, every trace written to an
append-only JSONL (flushed per finished trace; a rerun skips finished (problem_id, sample) pairs)
with its filter verdict -- kept, or rejected as "length" (hit the length limit), "leak" (matches a
`leak_patterns` regex), "no_answer" or "wrong_answer" (verifiable problems only), checked in that
order, the first failing check names the reason. A problem whose longest prompt plus `max_new_tokens`
exceeds the model's context (`dail.models.context_length`) is not decoded at all -- no row, since a
row is a decoded trace -- and the summary counts it (`too_long`) and names it (`too_long_ids`); a
rerun checks it again (so a rerun with such problems loads the model). Rank 0 records what made
the traces beside them (`dail.provenance`, `<out>.provenance.json`) once the model has loaded; a
rerun whose model or tokenizer differs from that record, or that finds no record, is refused before
it adds a row. Then `keep` picks what training reads: every trace that passes ("all-correct"), only
the first that passes per problem in sample order ("first-correct", later ones become "not_first";
the authors' non-reasoning data), or one seeded random sample per problem, ungraded ("one-random",
the authors' reasoning-model prefixes; only that sample is decoded). Problems without an answer are kept without
grading. The resolved config is saved as `<out>.config.toml` (`dail.rundir.config_path`) and a
summary line is appended to `events.jsonl` beside the output (`dail.rundir.events_path`). A rerun
resumes only with the same settings of everything that makes a row (`ROW_KEYS`; otherwise a ConfigError lists each change,
before any model loads; `fresh` starts over), and only one process writes an output at a time
(`dail.distributed.OutputLock`).

Rows are written in canonical order (problem-file order, then sample index; a finished trace waits
for those before it in its batch), so the file is always a prefix of that order plus, after a
resume, the rest in the same order. Under `accelerate launch` each rank decodes its shard of the
problems into its own part file and rank 0 merges them into the same bytes (`dail.distributed`);
only rank 0 writes the config, the summary and the log line.

What it deliberately does not do: training-time filtering (training reads `kept`), or any sampling
arithmetic of its own (all of it is `dail.sampling`'s).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import distributed as dist
from .config import ExpandConfig
from .data import DataError, Problem, Trace, read_traces
from .engine import Engine, Generation, default_eos_ids
from .sampling import (
    PRIVILEGED_DRAW,
    RULES,
    inverse_cdf,
    mixed_rule,
    row_key,
    sampling_dtype,
    tag_rejected,
    tag_role,
    tag_source,
    transform,
    uniforms,
)
from .roles import Role
from .waypoints import waypoints_for

__all__ = ["rollout", "reference_rollout", "verdict", "make_trace", "random_sample", "wanted_keys", "FirstCorrect",
           "summarise", "run"]

STAGE = "expand"  # salt of this stage's random streams

# Keys of ExpandConfig that change what a trace (or its verdict) is: a resume must not mix two settings
# of them. `limit` only adds rows; batch_size and device change no row.
ROW_KEYS = ("model", "data", "data_digest", "n", "rule", "tau", "retries", "keep", "privileged_view", "sampling", "seed", "prompts",
            "leak_patterns", "dtype")
FRESH = "rerun with --fresh to delete the traces (their config and part files too) first, or write to another --out"


def rollout(engine: Engine, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], keys: Sequence[int], *,
            max_new_tokens: int, rule: str = "threshold", temperature: float = 1.0, top_p: float = 1.0,
            top_k: int = 0, tau: float = 0.0, retries: int = 5, stop_on_eos: bool = True) -> Iterator[Generation]:
    """Mixed rollouts of (learner prompt, privileged prompt) pairs in one batch, yielded as they finish."""
    choose = mixed_rule(rule, temperature=temperature, top_p=top_p, top_k=top_k, tau=tau, retries=retries)
    yield from engine.generate([list(pair) for pair in pairs], keys, choose, max_new_tokens=max_new_tokens,
                               stop_on_eos=stop_on_eos)


@torch.inference_mode()
def reference_rollout(model, learner_prompt: Sequence[int], privileged_prompt: Sequence[int], key: int, *,
                      max_new_tokens: int, rule: str = "threshold", temperature: float = 1.0, top_p: float = 1.0,
                      top_k: int = 0, tau: float = 0.0, retries: int = 5,
                      eos_token_ids: Iterable[int] = ()) -> Generation:
    """One mixed rollout, token by token: two full forwards without cache per step, the rule spelt out."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; rules are {', '.join(RULES)}")
    device = next(model.parameters()).device
    eos = set(eos_token_ids)
    contexts = [list(learner_prompt), list(privileged_prompt)]
    gen = Generation(0, logprobs=[[], []])
    key_t = torch.tensor([key], dtype=torch.long, device=device)

    def draw(q: Tensor, t: int, d: int) -> int:
        return int(inverse_cdf(q, uniforms(key_t, t, d, q.dtype)[0]))

    for t in range(max_new_tokens):
        raw = []
        for ctx in contexts:
            logits = model(input_ids=torch.tensor([ctx], device=device), use_cache=False).logits[0, -1]  # [V]
            raw.append(logits.to(sampling_dtype(logits.dtype)))
        q_learner = transform(raw[Role.LEARNER.row], temperature, top_p, top_k)  # [V]
        q_privileged = transform(raw[Role.PRIVILEGED.row], temperature, top_p, top_k)  # [V]
        token = None
        if rule == "threshold":
            p_raw = torch.softmax(raw[Role.PRIVILEGED.row], -1)  # [V]
            for r in range(retries):
                a = draw(q_learner, t, r)
                if tau < 1 and float(p_raw[a]) >= tau:
                    token, tag = a, 2 * r + Role.LEARNER.row
                    break
            rejected = retries
        else:
            a = draw(q_learner, t, 0)
            if float(q_privileged[a]) > tau:
                token, tag = a, Role.LEARNER.row
            rejected = 1
        if token is None:
            token, tag = draw(q_privileged, t, PRIVILEGED_DRAW), 2 * rejected + Role.PRIVILEGED.row
        gen.token_ids.append(token)
        gen.source.append(tag)
        for row, logits in enumerate(raw):
            gen.logprobs[row].append(float(torch.log_softmax(logits, -1)[token]))
        for ctx in contexts:
            ctx.append(token)
        if token in eos:
            gen.finish = "eos"
            break
    return gen


# ---------------------------------------------------------------------------------------------
# filters and records


def verdict(text: str, finish: str, problem: Problem, leak: Sequence[re.Pattern],
            graded: bool = True) -> tuple[str | None, str | None]:
    """(extracted answer, reject reason or None): length, then leak, then no/wrong answer if verifiable.

    Ungraded (keep = "one-random", the authors' reasoning-model prefixes) only the leak check applies.
    """
    from .grading import extract_answer, is_correct, problem_kind

    answer = extract_answer(text)
    if not graded:
        return answer, "leak" if any(p.search(text) for p in leak) else None
    if finish == "length":
        return answer, "length"
    if any(p.search(text) for p in leak):
        return answer, "leak"
    if problem.verifiable:
        if answer is None:
            return answer, "no_answer"
        if not is_correct(answer, problem.answer, problem_kind(problem)):
            return answer, "wrong_answer"
    return answer, None


def make_trace(gen: Generation, problem: Problem, sample: int, seed: int, tokenizer,
               leak: Sequence[re.Pattern], graded: bool = True) -> Trace:
    """A finished rollout as a Trace row with its filter verdict."""
    text = tokenizer.decode(gen.token_ids, skip_special_tokens=True)
    answer, reason = verdict(text, gen.finish, problem, leak, graded)
    return Trace(problem_id=problem.id, sample=sample, seed=seed, text=text, token_ids=gen.token_ids,
                 source="".join(tag_role(s).letter for s in gen.source), logprob_learner=gen.logprobs[Role.LEARNER.row],
                 logprob_privileged=gen.logprobs[Role.PRIVILEGED.row], finish=gen.finish, answer=answer,
                 kept=reason is None, reject_reason=reason)


def random_sample(seed: int, problem_id: str, n: int) -> int:
    """The sample index that keep = "one-random" takes for a problem: seeded, independent of everything else."""
    return row_key(seed, problem_id, 0, "keep") % n


def wanted_keys(cfg: ExpandConfig, problems: Sequence[Problem]) -> list[tuple[str, int]]:
    """(problem id, sample) of every trace the stage writes, in canonical order.

    With keep = "one-random" only the chosen sample of each problem is decoded: the choice does not
    depend on the traces, so decoding the other n - 1 would only make rows to throw away.
    """
    if cfg.keep == "one-random":
        return [(p.id, random_sample(cfg.seed, p.id, cfg.n)) for p in problems]
    return [(p.id, s) for p in problems for s in range(cfg.n)]


class FirstCorrect:
    """keep = "first-correct": of the traces that pass the filters, only the first of each problem (in
    sample order) stays kept; later ones become "not_first". Fed in canonical order."""

    def __init__(self, kept_problems: Iterable[str]):
        self.kept = set(kept_problems)

    def __call__(self, trace: Trace) -> Trace:
        if trace.kept and trace.problem_id in self.kept:
            return trace.model_copy(update={"kept": False, "reject_reason": "not_first"})
        if trace.kept:
            self.kept.add(trace.problem_id)
        return trace


def summarise(path: str | Path) -> dict[str, Any]:
    """Counts over every trace of an expansion file: kept, rejected per reason, lengths, sources."""
    traces = read_traces(path, kept_only=False) if Path(path).exists() else []
    tokens = sum(len(t.token_ids) for t in traces)
    privileged = sum(t.source.count("P") for t in traces)
    return {
        "traces": len(traces),
        "kept": sum(t.kept for t in traces),
        "rejected": dict(sorted(Counter(t.reject_reason for t in traces if not t.kept).items())),
        "mean_tokens": tokens / len(traces) if traces else 0.0,
        "privileged_share": privileged / tokens if tokens else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# the stage


def run(cfg: ExpandConfig, progress: dist.Progress | None = None, *, fresh: bool = False) -> dict[str, Any]:
    """`dail expand`: decode problems x n mixed rollouts, write filtered traces, return the summary.

    `fresh` deletes what an earlier run wrote to `cfg.out` first; without it a rerun resumes, and
    refuses (ConfigError) when those rows were made with other `ROW_KEYS` settings, or (ProvenanceError)
    by another model or with no record of which made them.
    """
    from .models import load
    from .prompts import render
    from .rundir import RunLog, config_path, data_digest, events_path, provenance_path
    from .stage import Sampled, check_inputs, run_sampled

    check_inputs(cfg, "file")
    cfg = cfg.model_copy(update={"data_digest": data_digest(cfg.data)})  # saved with the config, checked on resume
    problems = _problems(cfg)
    leak = [re.compile(p) for p in cfg.leak_patterns]
    out = Path(cfg.out)
    keep = _first_correct(cfg, out, fresh)
    graded = cfg.keep != "one-random"
    by_id = {p.id: p for p in problems}
    new = {"traces": 0, "tokens": 0, "privileged": 0, "proposals": 0, "seconds": 0.0}
    # STaR's rationalization: the privileged student sees only the final answer.
    privileged = {"answer": Role.RATIONALIZE, "waypoints": Role.NEGATIVE}.get(cfg.privileged_view, Role.PRIVILEGED)

    def prompts(tokenizer, pending: list[str]) -> dict[str, tuple[list[int], list[int]]]:
        return {pid: (render(tokenizer, Role.LEARNER, by_id[pid], cfg.prompts),
                      render(tokenizer, privileged, by_id[pid], cfg.prompts,
                             waypoints=waypoints_for(by_id[pid]) if privileged is Role.NEGATIVE else None))
                for pid in pending}

    def sample(sink: dist.ShardedJsonl, loaded) -> None:
        engine = Engine(loaded.model, eos_token_ids=default_eos_ids(loaded.model, loaded.tokenizer.eos_token_id))
        _decode(cfg, sink, engine, loaded.prompts, lambda gen, pid, s: make_trace(
            gen, by_id[pid], s, cfg.seed, loaded.tokenizer, leak, graded), new)

    stage = run_sampled(Sampled(
        cfg=cfg, out=out, config=config_path(out), provenance=provenance_path(out), row_keys=ROW_KEYS,
        fresh_hint=FRESH, wanted=wanted_keys(cfg, problems), what="traces",
        load=lambda: load(cfg.model, dtype=cfg.dtype, device=dist.device_for(cfg.device)),
        prompts=prompts, new_tokens=lambda tokenizer: cfg.sampling.max_new_tokens, sample=sample, in_order=keep),
        progress, fresh=fresh)
    too_long = stage.too_long
    summary = _summary(cfg, out, new, too_long)
    if dist.is_main():
        RunLog(events_path(out))("expand", "summary", **summary)
    return summary


def _problems(cfg: ExpandConfig) -> list[Problem]:
    """The config's problems (after `limit`), each with the solution the privileged student reads."""
    from .datasets import resolve_problems

    problems = resolve_problems(cfg.data)[: cfg.limit]
    missing = [p.id for p in problems if not p.solution]
    if missing:
        raise DataError(cfg.data, None, "solution",
                        f"{len(missing)} problem(s) have no solution (first: {missing[0]!r}); expand needs one each")
    return problems


def _first_correct(cfg: ExpandConfig, out: Path, fresh: bool) -> FirstCorrect | None:
    """keep = "first-correct"'s filter, told which problems this rank's rows already keep; None for other keeps."""
    # A problem's samples all live on one rank, so the rank's own rows say which problems have a kept trace.
    # (`fresh` deletes those rows before any is written.)
    earlier = () if fresh else dist.done_keys(out, ("problem_id", "kept"))
    return FirstCorrect(pid for pid, kept in earlier if kept) if cfg.keep == "first-correct" else None


def _decode(cfg: ExpandConfig, sink: dist.ShardedJsonl, engine: Engine, prompts: dict[str, tuple[list[int], list[int]]],
            trace_of, counts: dict[str, float]) -> None:
    """Roll out every (problem, sample) of `sink.todo` in batches, hand each trace to the sink, count tokens."""
    start = time.perf_counter()
    for lo in range(0, len(sink.todo), cfg.batch_size):
        chunk = sink.todo[lo: lo + cfg.batch_size]
        for gen in rollout(engine, [prompts[pid] for pid, _ in chunk],
                           [row_key(cfg.seed, pid, s, STAGE) for pid, s in chunk],
                           max_new_tokens=cfg.sampling.max_new_tokens, rule=cfg.rule,
                           temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p,
                           top_k=cfg.sampling.top_k, tau=cfg.tau, retries=cfg.retries):
            pid, sample = chunk[gen.index]
            counts["traces"] += 1
            counts["tokens"] += len(gen.token_ids)
            counts["privileged"] += sum(tag_source(tag) for tag in gen.source)
            # Proposals the learner drew for each token: those rejected, plus the one kept.
            counts["proposals"] += sum(tag_rejected(tag) + 1 - tag_source(tag) for tag in gen.source)
            sink.put(lo + gen.index, trace_of(gen, pid, sample))
    counts["seconds"] = time.perf_counter() - start


def _summary(cfg: ExpandConfig, out: Path, counts: dict[str, float], too_long: list[str]) -> dict[str, Any]:
    """The file's counts (`summarise`) and this run's, over every rank."""
    from .rundir import config_path

    ranks = dist.gather(counts)
    new = {k: sum(r[k] for r in ranks) for k in ("traces", "tokens", "privileged", "proposals")} | \
        {"seconds": max(r["seconds"] for r in ranks)}
    summary = summarise(out)
    summary.update({
        "new_traces": new["traces"],
        "new_tokens": new["tokens"],
        "rule": cfg.rule,
        "tau": cfg.tau,
        "acceptance_rate": 1 - new["privileged"] / new["tokens"] if new["tokens"] else None,
        "mean_proposals": new["proposals"] / new["tokens"] if new["tokens"] else None,
        "seconds": round(new["seconds"], 3),
        "tokens_per_s": new["tokens"] / new["seconds"] if new["seconds"] else None,
        "too_long": len(too_long),
        "too_long_ids": too_long,
        "out": str(out),
        "config": str(config_path(out)),
    })
    return summary
