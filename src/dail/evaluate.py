"""`dail eval`: sample n completions per problem, grade them, and measure pass@k and token efficiency.

Per problem the learner prompt (`dail.prompts`, multiple-choice problems with lettered options) is
sampled `n` times by the engine (plain sampling; sample s of problem p draws from the stream
`row_key(seed, p, s)`, so a sample does not depend on the batch it was decoded in). Each completion
is decoded token by token, so that the character where its answer ends maps to the token that
completes it (`answer_token`); a sample then counts at token budget B iff it is correct and
`answer_token < B` (DESIGN.md, "Evaluation").

Outputs in `cfg.out`:

* `samples.jsonl` -- one `dail.data.Sample` per (problem, sample), appended and fsynced as soon as
  every sample before it (in problem-file order, then sample index) is done. Rows are therefore
  always a prefix of one canonical order: a killed run reruns from where it stopped and ends with
  the same file an uninterrupted run writes.
* `metrics.json` -- written atomically at the end, computed from samples.jsonl alone.
* `eval_config.toml` -- the resolved config. A rerun into the same directory must agree with it on
  everything that changes a sample (model, adapter, data, seed, sampling, prompts).

Under `accelerate launch` each rank samples its shard of the problems into its own part file and
rank 0 merges them into the samples.jsonl a single process writes (`dail.distributed`); every rank
then computes the metrics from the merged file, and rank 0 alone writes metrics.json, the config
and the console summary.

Problems without an answer cannot be graded and are skipped (and counted). This module does not
compare methods (`dail.report` does).
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import distributed as dist
from .config import ConfigError, EvalConfig, load_config, save_config
from .data import DataError, JsonlAppender, Problem, Sample, atomic_write_text, read_jsonl
from .grading import answer_kind, extract_answer_span, is_correct
from .metrics import answer_token_index, budget_counts, pass_at_k_table

__all__ = ["default_budgets", "token_pieces", "grade_sample", "compute_metrics", "versions", "run"]

console = Console(stderr=True)

# Keys of EvalConfig that change what a sample is; a resumed run must not mix two settings of them.
SAMPLE_KEYS = ("model", "adapter", "data", "seed", "sampling", "prompts")


def default_budgets(max_new_tokens: int) -> list[int]:
    """Powers of two from 16 below `max_new_tokens`, then `max_new_tokens` itself."""
    budgets = [2**i for i in range(4, max_new_tokens.bit_length()) if 2**i < max_new_tokens]
    return budgets + [max_new_tokens]


def token_pieces(tokenizer, token_ids: Sequence[int]) -> list[str]:
    """The text each token adds; they join to the decoded completion (special tokens dropped).

    Decoding ids one at a time breaks characters that span several byte-level tokens, so each
    piece is the growth of the decoded text over a short window. A token that ends inside a
    character adds "" and the token that completes the character carries it.
    """
    ids = list(token_ids)

    def decode(a: int, b: int) -> str:
        return tokenizer.decode(ids[a:b], skip_special_tokens=True)

    pieces: list[str] = []
    start = read = 0  # window [start, read) has been emitted; start lags one emission for context
    for i in range(len(ids)):
        before, after = decode(start, read), decode(start, i + 1)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            pieces.append(after[len(before):])
            start, read = read, i + 1
        else:
            pieces.append("")
    if read < len(ids):  # a torn character at the very end: the last token shows what there is
        pieces[-1] += decode(start, len(ids))[len(decode(start, read)):]
    return pieces


def grade_sample(pieces: Sequence[str], reference: str, kind: str) -> tuple[str, str | None, bool, int | None]:
    """(text, answer, correct, answer_token) of a completion given as per-token pieces."""
    text = "".join(pieces)
    answer, end = extract_answer_span(text)
    correct = answer is not None and is_correct(answer, reference, kind)
    ends, total = [], 0
    for piece in pieces:
        total += len(piece)
        ends.append(total)
    return text, answer, correct, answer_token_index(ends, end)


def compute_metrics(samples: Sequence[Sample], problem_ids: Sequence[str], n: int, ks: Sequence[int],
                    budgets: Sequence[int]) -> dict[str, Any]:
    """pass@k, token counts and pass@k at token budgets of n samples for each problem."""
    by_problem: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_problem[s.problem_id].append(s)
    missing = [p for p in problem_ids if len(by_problem[p]) != n]
    if missing:
        raise ValueError(f"{len(missing)} problem(s) lack {n} samples, e.g. {missing[0]!r}")
    groups = [by_problem[p] for p in problem_ids]
    counts = [(n, sum(s.correct for s in g)) for g in groups]
    ks_1 = sorted({1, *ks})
    at_budget = {b: pass_at_k_table([(n, budget_counts(g, b)) for g in groups], ks_1) for b in budgets}
    flat = [s for g in groups for s in g]
    correct_tokens = [s.n_tokens for s in flat if s.correct]
    return {
        "n_problems": len(groups),
        "n_samples": len(flat),
        "n_per_problem": n,
        "k": list(ks),
        "pass_at_k": {str(k): v for k, v in pass_at_k_table(counts, ks).items()},
        "accuracy": sum(c for _, c in counts) / len(flat),
        "mean_tokens": sum(s.n_tokens for s in flat) / len(flat),
        "mean_tokens_correct": sum(correct_tokens) / len(correct_tokens) if correct_tokens else None,
        "answer_rate": sum(s.answer is not None for s in flat) / len(flat),
        "truncated_rate": sum(s.finish == "length" for s in flat) / len(flat),
        "budgets": list(budgets),
        "accuracy_at_budget": {str(b): t[1] for b, t in at_budget.items()},
        "pass_at_k_budget": {str(b): {str(k): t[k] for k in ks} for b, t in at_budget.items()},
        "correct_per_problem": {p: c for p, (_, c) in zip(problem_ids, counts)},
    }


def versions() -> dict[str, str]:
    """Versions of dail, torch, transformers and Python, for the record."""
    import torch
    import transformers

    try:
        dail_version = importlib.metadata.version("dail")
    except importlib.metadata.PackageNotFoundError:
        dail_version = "unknown"
    return {"dail": dail_version, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def _problems(cfg: EvalConfig) -> tuple[list[Problem], int]:
    """The verifiable problems of the config's data (after `limit`) and how many were skipped."""
    from .datasets import resolve_problems

    try:
        problems = resolve_problems(cfg.data)
    except DataError:
        raise
    except ValueError as e:  # an unknown split name or a missing file
        raise DataError(cfg.data, None, None, str(e)) from None
    problems = problems[: cfg.limit]
    verifiable = [p for p in problems if p.verifiable]
    if not verifiable:
        raise DataError(cfg.data, None, "answer", f"none of {len(problems)} problems has an answer to grade against")
    for p in verifiable:
        # A reference that does not grade as correct against itself is a data bug (e.g. a choice
        # answer that is not a letter); better to stop here than to report pass@k = 0.
        kind = answer_kind(p.answer, p.choices)
        try:
            ok = is_correct(p.answer, p.answer, kind)
        except ValueError as e:
            raise DataError(cfg.data, None, "answer", f"problem {p.id!r}: {e}") from None
        if not ok:
            raise DataError(cfg.data, None, "answer",
                            f"problem {p.id!r}: answer {p.answer!r} does not grade as {kind}")
    return verifiable, len(problems) - len(verifiable)


def _check_resume(cfg: EvalConfig, path: Path) -> None:
    """Refuse to add samples to a directory sampled under a different setting."""
    if not path.exists() or not (path.parent / "samples.jsonl").exists():
        return
    old = load_config(EvalConfig, path).model_dump(mode="json")
    new = cfg.model_dump(mode="json")
    changed = [k for k in SAMPLE_KEYS if old.get(k) != new.get(k)]
    if changed:
        raise ConfigError(f"{path}: {path.parent} holds samples made with different {', '.join(changed)}; "
                          "use a fresh --out directory (or delete samples.jsonl)")


def _sample_all(cfg: EvalConfig, todo: list[tuple[Problem, int]], path: Path) -> None:
    """Sample and grade every (problem, sample) of `todo`, appending rows in todo order."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from .engine import Engine, default_eos_ids, row_key, sampler
    from .models import load
    from .prompts import render

    model, tokenizer = load(cfg.model, adapter=cfg.adapter, dtype=cfg.dtype, device=dist.device_for(cfg.device))
    engine = Engine(model, default_eos_ids(model, tokenizer.eos_token_id))
    s = cfg.sampling
    choose = sampler(s.temperature, s.top_p, s.top_k)
    problems = {p.id: p for p, _ in todo}
    prompts = {pid: render(tokenizer, "learner", p, cfg.prompts) for pid, p in problems.items()}
    kinds = {pid: answer_kind(p.answer, p.choices) for pid, p in problems.items()}
    columns = (TextColumn("[bold]sampling"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    t0, tokens = time.perf_counter(), 0
    with JsonlAppender(path) as out, Progress(*columns, console=console, disable=not dist.is_main()) as progress:
        task = progress.add_task("sampling", total=len(todo), rate="")
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start : start + cfg.batch_size]
            keys = [row_key(cfg.seed, p.id, i) for p, i in chunk]
            ready: dict[int, Sample] = {}
            written = 0
            groups = [[prompts[p.id]] for p, _ in chunk]
            for gen in engine.generate(groups, keys, choose, max_new_tokens=s.max_new_tokens):
                p, i = chunk[gen.index]
                pieces = token_pieces(tokenizer, gen.token_ids)
                text, answer, correct, answer_token = grade_sample(pieces, p.answer, kinds[p.id])
                ready[gen.index] = Sample(problem_id=p.id, sample=i, seed=cfg.seed, text=text,
                                          n_tokens=len(gen.token_ids), finish=gen.finish, answer=answer,
                                          correct=correct, answer_token=answer_token)
                # Rows go out in todo order (see module docstring): a row waits for those before it.
                while written in ready:
                    out.write(ready.pop(written))
                    written += 1
                tokens += len(gen.token_ids)
                rate = tokens / max(time.perf_counter() - t0, 1e-9)
                progress.update(task, advance=1, rate=f"{rate:,.0f} tok/s")


def _summary(metrics: dict[str, Any], cfg: EvalConfig) -> Table:
    what = cfg.model + (f" + {cfg.adapter}" if cfg.adapter else "")
    table = Table(title=f"eval: {what} on {cfg.data}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("problems × samples", f"{metrics['n_problems']} × {metrics['n_per_problem']}")
    if metrics["n_skipped_unverifiable"]:
        table.add_row("skipped (no answer)", str(metrics["n_skipped_unverifiable"]))
    for k, v in metrics["pass_at_k"].items():
        table.add_row(f"pass@{k}", f"{100 * v:.1f}%")
    table.add_row("accuracy", f"{100 * metrics['accuracy']:.1f}%")
    table.add_row("mean tokens", f"{metrics['mean_tokens']:.1f}")
    mtc = metrics["mean_tokens_correct"]
    table.add_row("mean tokens (correct)", "–" if mtc is None else f"{mtc:.1f}")
    table.add_row("with an answer / truncated",
                  f"{100 * metrics['answer_rate']:.1f}% / {100 * metrics['truncated_rate']:.1f}%")
    acc_b = metrics["accuracy_at_budget"]
    table.add_row("pass@1 at budget", "  ".join(f"{b}: {100 * v:.1f}%" for b, v in acc_b.items()))
    return table


def run(cfg: EvalConfig) -> dict[str, Any]:
    """Sample, grade and score `cfg.data`; write samples.jsonl, metrics.json, eval_config.toml."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    problems, skipped = _problems(cfg)
    main = dist.is_main()
    if skipped and main:
        console.print(f"[yellow]warning:[/] {skipped} problem(s) without an answer skipped (not verifiable)")
    _check_resume(cfg, out / "eval_config.toml")
    dist.barrier()  # every rank has checked the old config before rank 0 replaces it
    if main:
        save_config(cfg, out / "eval_config.toml")
    samples_path = out / "samples.jsonl"
    done = dist.done_keys(samples_path)
    write_path = dist.write_path(samples_path)
    wanted = [(p, i) for p in problems for i in range(cfg.n)]
    todo = [(p, i) for p in dist.shard(problems) for i in range(cfg.n) if (p.id, i) not in done]
    if todo:
        n_done = sum((p.id, i) in done for p, i in wanted)
        if n_done and main:
            console.print(f"resuming: {n_done} sample(s) done, {len(wanted) - n_done} to go")
        _sample_all(cfg, todo, write_path)
    elif write_path != samples_path:
        write_path.touch()  # every rank leaves its part, so a merge can tell a lost part from an idle rank
    dist.barrier()
    if write_path != samples_path:  # always so under a launcher; alone, only when parts of an earlier launch are about
        if main:
            dist.merge_parts(samples_path, [(p.id, i) for p, i in wanted], world=dist.world_size())
        dist.barrier()
    # Metrics come from the file alone, so a resumed run counts what earlier runs wrote.
    keys = {(p.id, i) for p, i in wanted}
    rows: dict[tuple[str, int], Sample] = {}
    for row in read_jsonl(samples_path, Sample):
        if (row.problem_id, row.sample) in keys:
            rows.setdefault((row.problem_id, row.sample), row)
    budgets = sorted(set(cfg.budgets)) or default_budgets(cfg.sampling.max_new_tokens)
    metrics = compute_metrics(list(rows.values()), [p.id for p in problems], cfg.n, cfg.k, budgets)
    metrics = {"model": cfg.model, "adapter": cfg.adapter, "data": cfg.data,
               "n_skipped_unverifiable": skipped, **metrics,
               "config": cfg.model_dump(mode="json"), "versions": versions()}
    if main:
        atomic_write_text(out / "metrics.json", _json(metrics))
        console.print(_summary(metrics, cfg))
    return metrics


def _json(obj: Any) -> str:
    # JSON has no NaN; a non-finite metric is a bug and should fail here, not in a reader.
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
