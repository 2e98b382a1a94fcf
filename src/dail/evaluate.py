"""`dail eval`: sample n completions per problem, grade them, and measure pass@k and token efficiency.

Per problem the learner prompt (`dail.prompts`, multiple-choice problems with lettered options) is
sampled `n` times by the engine (plain sampling with the eval transform, presence penalty included;
sample s of problem p draws from the stream `row_key(seed, p, s, "eval")`, so a sample does not
depend on the batch it was decoded in; a stage that samples through `run` passes its own salt).
Each completion is decoded token by token, so that the character where its answer ends maps to the
token that completes it (`answer_token`).

Forced answers (`force_answer`, on by default, as in the method authors' evaluation): a completion
without an answer gets ONE continuation of at most `force_answer_tokens` tokens, from the learner
prompt + its tokens (a final EOS dropped) + `answer_cue`, sampled with the same transform from the
stream `row_key(seed, p, s, "eval-force")`. Its answer is the one `cue + continuation` holds, ending
inside the continuation. The row keeps the completion and the continuation (`forced_text`) apart;
the cue itself is a setting, not stored.

Token budgets: the verdict at budget B is the verdict a run with `max_new_tokens = B` would give.
Randomness is counter-based, so that run samples exactly the first B tokens of this one: a sample
that ended within B tokens is judged as it is; one that ran past B is cut after B tokens and graded
on that prefix, with a forced continuation from the prefix when it holds no answer. One sampling
pass and short continuations thus give every budget; the verdicts of the cut samples go into the
row (`budgets`), so metrics need samples.jsonl alone. A budget >= max_new_tokens cuts nothing.

Outputs in `cfg.out` (an `EvalDir`):

* `samples.jsonl` -- one `dail.data.Sample` per (problem, sample), appended and fsynced once a
  batch (its forced answers included) is graded, in problem-file order, then sample index. Rows are
  therefore always a prefix of one canonical order: a killed run reruns from where it stopped and
  ends with the same file an uninterrupted run writes.
* `metrics.json` -- written atomically at the end, computed from samples.jsonl alone.
* `config.toml` -- the resolved config. A rerun into the same directory must agree with it on
  everything that changes a sample (`SAMPLE_KEYS`).

The sharded, resumable, ordered writing is `dail.distributed.ShardedJsonl`'s: under `accelerate
launch` each rank samples its shard of the problems into its own part file and rank 0 merges them
into the samples.jsonl a single process writes; every rank then computes the metrics from the
merged file, and rank 0 alone writes metrics.json and the config. `run` returns the metrics; the
CLI draws them (`dail.ui`).

Problems without an answer cannot be graded and are skipped (and counted). So are problems whose
learner prompt plus `max_new_tokens` (plus the cue and `force_answer_tokens` when forcing) exceeds
the model's context (`dail.models.context_length`): dropped from the problem list before sampling,
never decoded, counted as `n_too_long` and named in `too_long_ids`. They are checked whenever samples
are left to draw (the model loads first), so a rerun that finds only such problems loads the model. This module does not
compare methods (`dail.report` does).
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import distributed as dist
from .config import EvalConfig
from .data import DataError, Problem, Sample, atomic_write_text, read_jsonl, truncate_torn_tail
from .grading import extract_answer_span, is_correct, pieces_and_prefixes, problem_kind, token_pieces
from .metrics import answer_token_index, budget_counts, pass_at_k_table
from .roles import Role
from .rundir import EvalDir

__all__ = ["SAMPLE_KEYS", "EVAL_STAGE", "default_budgets", "resolved_budgets", "grade_sample", "grade_text",
           "grade_forced", "compute_metrics", "versions", "run"]

# Keys of EvalConfig that change what a sample (or its verdict at a budget) is; a resumed run must
# not mix two settings of them.
SAMPLE_KEYS = ("model", "adapter", "data", "data_digest", "seed", "role", "sampling", "presence_penalty", "prompts", "budgets",
               "force_answer", "answer_cue", "force_answer_tokens", "dtype")
FRESH = "rerun with --fresh to delete its samples, metrics and config first, or use another --out directory"

EVAL_STAGE = "eval"  # row_key salt of the samples; their forced answers use "<stage>-force"


def default_budgets(max_new_tokens: int) -> list[int]:
    """Powers of two from 16 below `max_new_tokens`, then `max_new_tokens` itself."""
    budgets = [2**i for i in range(4, max_new_tokens.bit_length()) if 2**i < max_new_tokens]
    return budgets + [max_new_tokens]


def resolved_budgets(cfg: EvalConfig) -> list[int]:
    """The config's budgets, sorted and unique; the default powers of two when it names none."""
    return sorted(set(cfg.budgets)) or default_budgets(cfg.sampling.max_new_tokens)


def grade_text(text: str, reference: str, kind: str) -> tuple[str | None, bool]:
    """(answer, correct) of a text."""
    answer, _ = extract_answer_span(text)
    return answer, answer is not None and is_correct(answer, reference, kind)


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


def grade_forced(cue: str, continuation: str, reference: str, kind: str) -> tuple[str | None, bool]:
    """(answer, correct) of a forced continuation: the answer of `cue + continuation`, if it ends in the continuation.

    A cue that opens a box is closed by the continuation; a box or phrase of the cue alone is no answer.
    """
    answer, end = extract_answer_span(cue + continuation)
    if answer is None or end <= len(cue):
        return None, False
    return answer, is_correct(answer, reference, kind)


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
        "forced_rate": sum(s.forced for s in flat) / len(flat),
        "mean_forced_tokens": sum(s.forced_tokens for s in flat) / len(flat),
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
        kind = problem_kind(p)
        try:
            ok = is_correct(p.answer, p.answer, kind)
        except ValueError as e:
            raise DataError(cfg.data, None, "answer", f"problem {p.id!r}: {e}") from None
        if not ok:
            raise DataError(cfg.data, None, "answer",
                            f"problem {p.id!r}: answer {p.answer!r} does not grade as {kind}")
    if cfg.role == Role.PRIVILEGED:
        missing = next((p for p in verifiable if not p.solution), None)
        if missing is not None:
            raise DataError(cfg.data, None, "solution", f"problem {missing.id!r} has no solution: role privileged "
                                                        "shows it in the prompt")
    return verifiable, len(problems) - len(verifiable)


@dataclass
class _Pending:
    """A graded completion of one (problem, sample) whose row waits for its forced answers."""

    row: dict[str, Any]  # Sample fields
    budgets: dict[int, dict[str, Any]] = field(default_factory=dict)  # B -> Sample.AtBudget fields


def _sample_all(cfg: EvalConfig, problems: list[Problem], sink: dist.ShardedJsonl, stage: str, model, tokenizer,
                prompts: dict[str, list[int]]) -> None:
    """Sample and grade every (problem, sample) of `sink.todo`, handing each row to the sink."""
    from .engine import Engine, default_eos_ids
    from .sampling import Sampler

    by_id = {p.id: p for p in problems}
    todo = [(by_id[pid], i) for pid, i in sink.todo]
    mine = {p.id: p for p, _ in todo}  # each problem once, however many samples
    batch = _Batch(
        cfg=cfg, stage=stage, engine=Engine(model, default_eos_ids(model, tokenizer.eos_token_id)),
        choose=Sampler(cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.top_k,
                       presence_penalty=cfg.presence_penalty),
        tokenizer=tokenizer, prompts=prompts, cue_ids=tokenizer(cfg.answer_cue, add_special_tokens=False)["input_ids"],
        budgets=resolved_budgets(cfg), kinds={pid: problem_kind(p) for pid, p in mine.items()})
    for start in range(0, len(todo), cfg.batch_size):
        chunk = todo[start : start + cfg.batch_size]
        pending, forcing = batch.complete(chunk)
        batch.force(chunk, pending, forcing)
        # The rows, in todo order (see module docstring).
        for j, item in enumerate(pending):
            verdicts = {str(b): Sample.AtBudget(**v) for b, v in item.budgets.items()}
            sink.put(start + j, Sample(**item.row, budgets=verdicts))


# A completion or budget prefix that holds no answer, to continue: (chunk index, budget or None, context).
_Forcing = tuple[int, int | None, list[int]]


@dataclass
class _Batch:
    """What sampling and grading a batch of (problem, sample) pairs needs, fixed for the whole run."""

    cfg: EvalConfig
    stage: str  # row_key salt
    engine: Any
    choose: Any  # the sampler of completions and forced answers alike
    tokenizer: Any
    prompts: dict[str, list[int]]
    cue_ids: list[int]
    budgets: list[int]
    kinds: dict[str, str]  # problem id -> answer kind

    def complete(self, chunk: list[tuple[Problem, int]]) -> tuple[list[_Pending], list[_Forcing]]:
        """The chunk's completions, graded in full and at every budget that cuts them, and what to force."""
        from .sampling import row_key

        keys = [row_key(self.cfg.seed, p.id, i, self.stage) for p, i in chunk]
        pending: list[_Pending] = [None] * len(chunk)  # type: ignore[list-item]
        forcing: list[_Forcing] = []
        for gen in self.engine.generate([[self.prompts[p.id]] for p, _ in chunk], keys, self.choose,
                                        max_new_tokens=self.cfg.sampling.max_new_tokens):
            p, i = chunk[gen.index]
            pending[gen.index] = self._grade(gen, p, i, forcing)
        return pending, forcing

    def _grade(self, gen, p: Problem, i: int, forcing: list[_Forcing]) -> _Pending:
        """One completion graded in full and at each budget it runs past; those without an answer join `forcing`."""
        ids, kind, prompt = gen.token_ids, self.kinds[p.id], self.prompts[p.id]
        cuts = [b for b in self.budgets if b < len(ids)]
        pieces, prefixes = pieces_and_prefixes(self.tokenizer, ids, cuts)
        text, answer, correct, answer_token = grade_sample(pieces, p.answer, kind)
        item = _Pending(dict(
            problem_id=p.id, sample=i, seed=self.cfg.seed, text=text, n_tokens=len(ids), finish=gen.finish,
            answer=answer, correct=correct, answer_token=answer_token))
        body = ids[:-1] if gen.finish == "eos" else ids  # the context continues the text, not the EOS
        if answer is None and self.cfg.force_answer:
            forcing.append((gen.index, None, prompt + body + self.cue_ids))
        for b in cuts:
            cut_answer, cut_correct = grade_text(prefixes[b], p.answer, kind)
            item.budgets[b] = dict(answer=cut_answer, correct=cut_correct)
            if cut_answer is None and self.cfg.force_answer:
                forcing.append((gen.index, b, prompt + ids[:b] + self.cue_ids))
        return item

    def force(self, chunk: list[tuple[Problem, int]], pending: list[_Pending], forcing: list[_Forcing]) -> None:
        """One forced continuation per completion or prefix without an answer, batched; its verdict into `pending`."""
        from .sampling import row_key

        cfg = self.cfg
        for lo in range(0, len(forcing), cfg.batch_size):
            part = forcing[lo : lo + cfg.batch_size]
            force_keys = [row_key(cfg.seed, chunk[j][0].id, chunk[j][1], f"{self.stage}-force") for j, _, _ in part]
            for gen in self.engine.generate([[context] for _, _, context in part], force_keys, self.choose,
                                            max_new_tokens=cfg.force_answer_tokens):
                j, b, _ = part[gen.index]
                p = chunk[j][0]
                forced_text = "".join(token_pieces(self.tokenizer, gen.token_ids))
                answer, correct = grade_forced(cfg.answer_cue, forced_text, p.answer, self.kinds[p.id])
                if b is None:
                    pending[j].row.update(answer=answer, correct=correct, forced=True, forced_text=forced_text,
                                          forced_tokens=len(gen.token_ids))
                else:
                    pending[j].budgets[b] = dict(answer=answer, correct=correct, forced=True)


def run(cfg: EvalConfig, stage: str = EVAL_STAGE, progress: dist.Progress | None = None, *,
        fresh: bool = False) -> dict[str, Any]:
    """Sample, grade and score `cfg.data`; write samples.jsonl, metrics.json and the config beside them.

    `fresh` deletes what an earlier run wrote to `cfg.out` first; without it a rerun resumes, and
    refuses (ConfigError) when those samples were made with other `SAMPLE_KEYS` settings, or (ProvenanceError)
    by another model or with no record of which made them.

    `stage` salts the random streams (`dail.sampling.row_key`): another stage sampling through this one
    (`dail.pipeline.select`) draws its own samples, not the ones evaluation draws.
    """
    from .models import load
    from .prompts import render
    from .rundir import data_digest, provenance_path
    from .stage import Sampled, check_inputs, run_sampled

    check_inputs(cfg, "dir")
    out = EvalDir(Path(cfg.out))
    problems, skipped = _problems(cfg)  # before anything is written: a bad input leaves no directory behind
    cfg = cfg.model_copy(update={"data_digest": data_digest(cfg.data)})  # saved with the config, checked on resume
    out.root.mkdir(parents=True, exist_ok=True)
    by_id = {p.id: p for p in problems}
    sampled = run_sampled(Sampled(
        cfg=cfg, out=out.samples, config=out.config, provenance=provenance_path(out.root), row_keys=SAMPLE_KEYS,
        fresh_hint=FRESH, wanted=[(p.id, i) for p in problems for i in range(cfg.n)], what="samples",
        load=lambda: load(cfg.model, adapter=cfg.adapter, dtype=cfg.dtype, device=dist.device_for(cfg.device)),
        prompts=lambda tokenizer, pending: {pid: render(tokenizer, cfg.role, by_id[pid], cfg.prompts)
                                            for pid in pending},
        new_tokens=lambda tokenizer: cfg.sampling.max_new_tokens + _forced_tokens(cfg, tokenizer),
        sample=lambda sink, loaded: _sample_all(cfg, problems, sink, stage, loaded.model, loaded.tokenizer,
                                                loaded.prompts),
        removes=(out.metrics,), shown=out.root, check=lambda too_long: _not_all_too_long(cfg, problems, too_long)),
        progress, fresh=fresh)
    too_long = sampled.too_long
    problems = [p for p in problems if p.id not in set(too_long)]
    rows = _written_rows(out.samples, sampled.wanted)
    metrics = compute_metrics(rows, [p.id for p in problems], cfg.n, cfg.k, resolved_budgets(cfg))
    metrics = {"model": cfg.model, "adapter": cfg.adapter, "data": cfg.data,
               "n_skipped_unverifiable": skipped, "n_too_long": len(too_long), "too_long_ids": too_long, **metrics,
               "config": cfg.model_dump(mode="json"), "versions": versions()}
    if dist.is_main():
        atomic_write_text(out.metrics, _json(metrics))
    return metrics


def _forced_tokens(cfg: EvalConfig, tokenizer) -> int:
    """The tokens a forced answer may add after max_new_tokens."""
    cue = len(tokenizer(cfg.answer_cue, add_special_tokens=False)["input_ids"])
    return cue + cfg.force_answer_tokens if cfg.force_answer else 0


def _not_all_too_long(cfg: EvalConfig, problems: list[Problem], too_long: list[str]) -> None:
    """Refuse a run none of whose problems fits the context: it would have nothing to score."""
    # Too-long problems are never sampled: out of the problem list, so every problem left has n.
    if len(too_long) == len(problems):
        raise DataError(cfg.data, None, "problem", f"all {len(too_long)} problems are too long for the model's "
                                                   "context with max_new_tokens (and a forced answer)")


def _written_rows(samples_path: Path, wanted: list[tuple[str, int]]) -> list[Sample]:
    """The first row of each wanted (problem, sample) in the samples file, whichever run wrote it."""
    # Metrics come from the file alone, so a resumed run counts what earlier runs wrote.
    keys = set(wanted)
    rows: dict[tuple[str, int], Sample] = {}
    if dist.is_main():
        truncate_torn_tail(samples_path)  # with nothing left to do no appender opened the file to cut it
    dist.barrier()
    for row in read_jsonl(samples_path, Sample):
        if (row.problem_id, row.sample) in keys:
            rows.setdefault((row.problem_id, row.sample), row)
    return list(rows.values())


def _json(obj: Any) -> str:
    # JSON has no NaN; a non-finite metric is a bug and should fail here, not in a reader.
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
