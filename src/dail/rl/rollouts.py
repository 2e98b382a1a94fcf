"""A rollout batch: which problems a step draws, their G rollouts each on the engine, graded into rewards.

A step's rollouts are a sampling stage like expansion and evaluation (`dail.stage.run_sampled`):
keys (problem, g) in canonical order, sharded over the ranks, appended to `rollouts/step-N.jsonl`
as they finish, resumable. The model is the policy the run is training, already loaded (the stage's
`load` hands it over), so nothing reloads between steps. Rollout g of problem p at step N draws the
stream `row_key(seed, p, g, "rl-N")`: a step's rollouts depend on the policy's weights and on nothing
else -- not on the batch they were decoded in, not on whether the run was killed and resumed (to the
last bit where the kernels are batch-invariant, as on CPU; in bf16 on a GPU a logit may differ in its
last bits with the batch's make-up, see `dail.engine`, and so may a sampled token where two are that close).

NuRL's re-roll (`hinted`): a group whose G rollouts all failed is rolled again with its problem's
hint in the prompt, into `step-N.hinted.jsonl`, from the stream `row_key(seed, p, g, "rl-N-hint")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import distributed as dist
from ..data import Problem, Rollout, read_jsonl
from ..grading import grade, problem_kind, token_pieces
from ..rows import step_rows

__all__ = ["step_problems", "roll_out", "merge_hinted", "compute_from_files", "ROLLOUT_KEYS"]

# RLConfig keys that change a rollout: a resumed run must share them with the one that began the files.
ROLLOUT_KEYS = ("model", "adapter", "data", "data_digest", "seed", "sampling", "prompts", "group_size",
                "problems_per_step", "hints", "dtype")


def step_problems(problems: list[Problem], per_step: int, seed: int, step: int) -> list[Problem]:
    """The problems of rollout batch `step`: a seeded shuffle of the problem list per epoch, cut in batches."""
    per_epoch = max(1, len(problems) // per_step)  # a short last batch would give a step fewer groups: dropped
    return [problems[i] for i in step_rows(len(problems), per_step, seed, step, per_epoch)]


def roll_out(ctx: Any, step: int, problems: list[Problem], prompts: dict[str, list[int]], out: Path, *,
             hinted: bool = False, first: int = 0, progress: dist.Progress | None = None) -> list[Rollout]:
    """Rollouts `first`..G-1 of each problem at `step` (sampled, or read back when an earlier run wrote them), in order.

    `ctx` is the run's `dail.rl.fit.Context` (config, policy, tokenizer, engine); `prompts` maps each
    problem id to its prompt ids (with the hint for a `hinted` re-roll).
    """
    from ..rundir import config_path, provenance_path
    from ..stage import Sampled, run_sampled

    cfg = ctx.cfg
    by_id = {p.id: p for p in problems}
    wanted = [(p.id, g) for p in problems for g in range(first, cfg.group_size)]
    run_sampled(Sampled(
        cfg=cfg, out=out, config=config_path(out.parent), provenance=provenance_path(out.parent),
        row_keys=ROLLOUT_KEYS, fresh_hint="start over with --fresh", wanted=wanted, what="rollouts",
        load=lambda: (ctx.policy, ctx.tokenizer),
        prompts=lambda tokenizer, pending: {pid: prompts[pid] for pid in pending},
        new_tokens=lambda tokenizer: cfg.sampling.max_new_tokens,
        sample=lambda sink, loaded: _sample(ctx, step, by_id, sink, loaded.prompts, hinted)), progress)
    rows = {(r.problem_id, r.sample): r for r in read_jsonl(out, Rollout)}
    return [rows[k] for k in wanted if k in rows]  # a problem too long for the context has no rows


def _sample(ctx: Any, step: int, by_id: dict[str, Problem], sink: dist.ShardedJsonl, prompts: dict[str, list[int]],
            hinted: bool) -> None:
    """Decode this rank's share of the step's rollouts in batches, grade each, hand the rows to the sink."""
    from ..sampling import Sampler, row_key

    cfg = ctx.cfg
    salt = f"rl-{step}-hint" if hinted else f"rl-{step}"
    choose = Sampler(cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.top_k)
    ctx.policy.eval()  # no dropout while sampling: the rollouts are the policy's own
    for start in range(0, len(sink.todo), cfg.decode_batch):
        chunk = sink.todo[start:start + cfg.decode_batch]
        keys = [row_key(cfg.seed, pid, g, salt) for pid, g in chunk]
        for gen in ctx.engine.generate([[prompts[pid]] for pid, _ in chunk], keys, choose,
                                       max_new_tokens=cfg.sampling.max_new_tokens):
            pid, g = chunk[gen.index]
            p = by_id[pid]
            answer, correct = grade("".join(token_pieces(ctx.tokenizer, gen.token_ids)), p.answer, problem_kind(p))
            sink.put(start + gen.index, Rollout(
                problem_id=pid, sample=g, step=step, hinted=hinted, token_ids=gen.token_ids,
                logprobs=gen.logprobs[0], finish=gen.finish, answer=answer, reward=1.0 if correct else 0.0))


def merge_hinted(rollouts: list[Rollout], hinted: list[Rollout]) -> list[Rollout]:
    """A step's rollouts with each hinted re-roll in place of the plain rollout of its (problem, g)."""
    by_key = {(r.problem_id, r.sample): r for r in hinted}
    return [by_key.get((r.problem_id, r.sample), r) for r in rollouts]


def compute_from_files(out: Path, upto: int | None = None) -> dict[str, int]:
    """The tokens an RL stage's rollout batches sampled and trained on, read back from its files in `out`.

    The record a compute table can trust whatever wrote the log: `sampled` counts every rollout file
    (NuRL's replaced plain rollouts too); `trained` the rollouts of groups whose rewards differ (every
    rollout when the KL term is on), once per update. `upto`: only the batches before it.
    """
    from ..config import RLConfig, load_config
    from ..rundir import AdapterDir

    cfg = load_config(RLConfig, AdapterDir(out).config)
    sampled = trained = 0
    for plain in sorted(AdapterDir(out).rollouts.glob("step-??????.jsonl")):
        if upto is not None and int(plain.stem.removeprefix("step-")) >= upto:
            continue
        hinted_path = plain.with_suffix(".hinted.jsonl")
        hinted = list(read_jsonl(hinted_path, Rollout)) if hinted_path.exists() else []
        rollouts = list(read_jsonl(plain, Rollout))
        sampled += sum(len(r.token_ids) for r in rollouts + hinted)
        groups: dict[str, list[Rollout]] = {}
        for r in merge_hinted(rollouts, hinted):
            groups.setdefault(r.problem_id, []).append(r)
        live = [g for g in groups.values() if cfg.kl_coef > 0 or len({r.reward for r in g}) > 1]
        trained += cfg.updates_per_batch * sum(len(r.token_ids) for g in live for r in g)
    return {"sampled": sampled, "trained": trained}
