"""Expansion: the mixed-policy rollout of learner and privileged student, trace filters, `dail expand`.

The rule (DESIGN.md, "Mixed-policy rollout"), per step t of each trace: draw `a ~ q_L = T(learner
logits)` (draw 0); keep it, source L, if `q_P(a) > tau` where `q_P = T(privileged logits)` is the
*transformed* privileged distribution (zero outside its kept set); otherwise draw `b ~ q_P`
(draw 1), source P. The chosen token is appended to both contexts; EOS from either source ends the
trace (the EOS token is part of it), else it ends at `max_new_tokens`. `mixed_choose` is that rule
as a `choose` callback of `dail.engine.Engine`, so learner and privileged rows share one forward per
step; `reference_rollout` is the same rule written out slowly (two full forwards per token, no
cache, one trace at a time) and the tests hold the two equal.

`run(ExpandConfig)` is the stage: problems x n samples decoded in batches, every trace written to an
append-only JSONL (flushed per finished trace; a rerun skips finished (problem_id, sample) pairs)
with its filter verdict -- kept, or rejected as "length" (hit the length limit), "leak" (matches a
`leak_patterns` regex), "no_answer" or "wrong_answer" (verifiable problems only), checked in that
order, the first failing check names the reason. The resolved config is saved as
`<out>.config.toml` (e.g. traces.config.toml) and a summary line is appended to `log.jsonl` beside
the output.

Rows are written in canonical order (problem-file order, then sample index; a finished trace waits
for those before it in its batch), so the file is always a prefix of that order plus, after a
resume, the rest in the same order. Under `accelerate launch` each rank decodes its shard of the
problems into its own part file and rank 0 merges them into the same bytes (`dail.distributed`);
only rank 0 writes the config, the summary and the log line.

What it deliberately does not do: training-time filtering (training reads `kept`), or any sampling
arithmetic of its own (all of it is `dail.engine`'s).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import distributed as dist
from .config import ExpandConfig, save_config
from .data import DataError, JsonlAppender, Problem, Trace, read_traces
from .engine import (
    Choose,
    Engine,
    Generation,
    sampling_dtype,
    default_eos_ids,
    inverse_cdf,
    row_key,
    transform,
    uniforms,
)

__all__ = ["LEARNER", "PRIVILEGED", "SOURCES", "MixedChoose", "mixed_choose", "rollout", "reference_rollout", "verdict",
           "make_trace", "summarise", "run"]

LEARNER, PRIVILEGED = 0, 1  # row of a group, draw index, and source tag all at once
SOURCES = "LP"  # source tag -> letter in Trace.source


@dataclass(frozen=True)
class MixedChoose:
    """The mixed rule as an engine `choose` over groups of (learner, privileged) rows."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    tau: float = 0.0

    def __call__(self, logits: Tensor, keys: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        q = transform(logits, self.temperature, self.top_p, self.top_k)  # [G, 2, V]
        a = inverse_cdf(q[:, LEARNER], uniforms(keys, t, LEARNER, q.dtype))  # [G]
        # b is drawn for every group, needed or not: a branch per group would cost a host sync.
        b = inverse_cdf(q[:, PRIVILEGED], uniforms(keys, t, PRIVILEGED, q.dtype))  # [G]
        accept = q[:, PRIVILEGED].gather(-1, a[:, None])[:, 0] > self.tau  # [G]
        return torch.where(accept, a, b), (~accept).long()


def mixed_choose(temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, tau: float = 0.0) -> Choose:
    """The mixed rule with these settings (equal settings give equal callbacks, which share CUDA graphs)."""
    return MixedChoose(temperature, top_p, top_k, tau)


def rollout(engine: Engine, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], keys: Sequence[int], *,
            max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, tau: float = 0.0,
            stop_on_eos: bool = True) -> Iterator[Generation]:
    """Mixed rollouts of (learner prompt, privileged prompt) pairs in one batch, yielded as they finish."""
    choose = mixed_choose(temperature, top_p, top_k, tau)
    yield from engine.generate([list(pair) for pair in pairs], keys, choose, max_new_tokens=max_new_tokens,
                               stop_on_eos=stop_on_eos)


@torch.inference_mode()
def reference_rollout(model, learner_prompt: Sequence[int], privileged_prompt: Sequence[int], key: int, *,
                      max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                      tau: float = 0.0, eos_token_ids: Iterable[int] = ()) -> Generation:
    """One mixed rollout, token by token: two full forwards without cache per step, the rule spelt out."""
    device = next(model.parameters()).device
    eos = set(eos_token_ids)
    contexts = [list(learner_prompt), list(privileged_prompt)]
    gen = Generation(0, logprobs=[[], []])
    key_t = torch.tensor([key], dtype=torch.long, device=device)
    for t in range(max_new_tokens):
        raw = []
        for ctx in contexts:
            logits = model(input_ids=torch.tensor([ctx], device=device), use_cache=False).logits[0, -1]  # [V]
            raw.append(logits.to(sampling_dtype(logits.dtype)))
        q_learner = transform(raw[LEARNER], temperature, top_p, top_k)  # [V]
        q_privileged = transform(raw[PRIVILEGED], temperature, top_p, top_k)  # [V]
        a = int(inverse_cdf(q_learner, uniforms(key_t, t, LEARNER, q_learner.dtype)[0]))
        if float(q_privileged[a]) > tau:
            token, source = a, LEARNER
        else:
            token = int(inverse_cdf(q_privileged, uniforms(key_t, t, PRIVILEGED, q_privileged.dtype)[0]))
            source = PRIVILEGED
        gen.token_ids.append(token)
        gen.source.append(source)
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


def verdict(text: str, finish: str, problem: Problem, leak: Sequence[re.Pattern]) -> tuple[str | None, str | None]:
    """(extracted answer, reject reason or None): length, then leak, then no/wrong answer if verifiable."""
    from .grading import answer_kind, extract_answer, is_correct

    answer = extract_answer(text)
    if finish == "length":
        return answer, "length"
    if any(p.search(text) for p in leak):
        return answer, "leak"
    if problem.verifiable:
        if answer is None:
            return answer, "no_answer"
        if not is_correct(answer, problem.answer, answer_kind(problem.answer, problem.choices)):
            return answer, "wrong_answer"
    return answer, None


def make_trace(gen: Generation, problem: Problem, sample: int, seed: int, tokenizer,
               leak: Sequence[re.Pattern]) -> Trace:
    """A finished rollout as a Trace row with its filter verdict."""
    text = tokenizer.decode(gen.token_ids, skip_special_tokens=True)
    answer, reason = verdict(text, gen.finish, problem, leak)
    return Trace(problem_id=problem.id, sample=sample, seed=seed, text=text, token_ids=gen.token_ids,
                 source="".join(SOURCES[s] for s in gen.source), logprob_learner=gen.logprobs[LEARNER],
                 logprob_privileged=gen.logprobs[PRIVILEGED], finish=gen.finish, answer=answer,
                 kept=reason is None, reject_reason=reason)


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


def run(cfg: ExpandConfig) -> dict[str, Any]:
    """`dail expand`: decode problems x n mixed rollouts, write filtered traces, return the summary."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from .datasets import resolve_problems
    from .models import load
    from .prompts import render

    problems = resolve_problems(cfg.data)[: cfg.limit]
    missing = [p.id for p in problems if not p.solution]
    if missing:
        raise DataError(cfg.data, None, "solution",
                        f"{len(missing)} problem(s) have no solution (first: {missing[0]!r}); expand needs one each")
    leak = [re.compile(p) for p in cfg.leak_patterns]
    out = Path(cfg.out)
    config_path = out.with_suffix(".config.toml")
    if dist.is_main():
        save_config(cfg, config_path)
    done = dist.done_keys(out)
    sink_path = dist.write_path(out)
    todo = [(p, s) for p in dist.shard(problems) for s in range(cfg.n) if (p.id, s) not in done]

    sampling = cfg.sampling
    new = {"traces": 0, "tokens": 0, "privileged": 0, "seconds": 0.0}
    if todo:
        model, tokenizer = load(cfg.model, dtype=cfg.dtype, device=dist.device_for(cfg.device))
        prompts = {p.id: (render(tokenizer, "learner", p, cfg.prompts), render(tokenizer, "privileged", p, cfg.prompts))
                   for p, _ in todo}
        engine = Engine(model, eos_token_ids=default_eos_ids(model, tokenizer.eos_token_id))
        columns = [TextColumn("expand"), BarColumn(), MofNCompleteColumn(), TextColumn("accept {task.fields[accept]}"),
                   TimeElapsedColumn(), TimeRemainingColumn()]
        start = time.perf_counter()
        mine = len(dist.shard(problems)) * cfg.n  # the bar counts this rank's shard (shown on rank 0 only)
        with JsonlAppender(sink_path) as sink, \
                Progress(*columns, console=Console(stderr=True), disable=not dist.is_main()) as bar:
            task = bar.add_task("expand", total=mine, completed=mine - len(todo), accept="-")
            for i in range(0, len(todo), cfg.batch_size):
                chunk = todo[i: i + cfg.batch_size]
                ready: dict[int, Trace] = {}
                written = 0
                for gen in rollout(engine, [prompts[p.id] for p, _ in chunk],
                                   [row_key(cfg.seed, p.id, s) for p, s in chunk],
                                   max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                                   top_p=sampling.top_p, top_k=sampling.top_k, tau=cfg.tau):
                    problem, sample = chunk[gen.index]
                    ready[gen.index] = make_trace(gen, problem, sample, cfg.seed, tokenizer, leak)
                    while written in ready:  # canonical order: a trace waits for those before it
                        sink.write(ready.pop(written))
                        written += 1
                    new["traces"] += 1
                    new["tokens"] += len(gen.token_ids)
                    new["privileged"] += sum(gen.source)
                    rate = 1 - new["privileged"] / new["tokens"]
                    bar.update(task, advance=1, accept=f"{rate:.1%}")
        new["seconds"] = time.perf_counter() - start
    elif sink_path != out:
        sink_path.touch()  # every rank leaves its part, so a merge can tell a lost part from an idle rank

    dist.barrier()
    if sink_path != out:  # always so under a launcher; alone, only when parts of an earlier launch are about
        if dist.is_main():
            dist.merge_parts(out, [(p.id, s) for p in problems for s in range(cfg.n)], world=dist.world_size())
        dist.barrier()
    ranks = dist.gather(new)
    new = {k: sum(r[k] for r in ranks) for k in ("traces", "tokens", "privileged")} | \
        {"seconds": max(r["seconds"] for r in ranks)}
    summary = summarise(out)
    summary.update({
        "new_traces": new["traces"],
        "new_tokens": new["tokens"],
        "acceptance_rate": 1 - new["privileged"] / new["tokens"] if new["tokens"] else None,
        "seconds": round(new["seconds"], 3),
        "tokens_per_s": new["tokens"] / new["seconds"] if new["seconds"] else None,
        "out": str(out),
        "config": str(config_path),
    })
    if dist.is_main():
        _print_summary(summary)
        with JsonlAppender(out.parent / "log.jsonl") as log:
            log.write({"stage": "expand", "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **summary})
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"expand -> {summary['out']}", show_header=False)
    rows = [("traces", summary["traces"]), ("kept", summary["kept"])]
    rows += [(f"rejected: {reason}", count) for reason, count in summary["rejected"].items()]
    rows += [("mean tokens", f"{summary['mean_tokens']:.1f}"),
             ("privileged share", f"{summary['privileged_share']:.1%}"),
             ("new traces (this run)", summary["new_traces"])]
    if summary["new_tokens"]:
        rows += [("acceptance (this run)", f"{summary['acceptance_rate']:.1%}"),
                 ("tokens/s (this run)", f"{summary['tokens_per_s']:.1f}")]
    for name, value in rows:
        table.add_row(name, str(value))
    Console().print(table)
