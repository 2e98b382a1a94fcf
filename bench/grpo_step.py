"""Time one GRPO step of `dail rl` (rollouts on the engine + the update) against `model.generate` of the
same number of tokens plus one NLL optimizer step on the same rollouts.

    .venv/bin/python bench/grpo_step.py --model testbed --data testbed-easy --problems 4 --group-size 8 \\
        --max-new-tokens 288 --repeats 3

The GRPO step is the stage's own: `problems` problems of `data`, G rollouts each by the engine (the
sampling-stage shape, graded, written to a temp directory), group advantages and one optimizer step of
the clipped surrogate (`dail.rl.update.update`). The baseline draws the same prompts' G samples with
`model.generate` (HF, left-padded, one batch, `max_new_tokens` = the longest rollout of the GRPO step,
so at least as many tokens) and runs `dail.train.train_step` with the `nll` objective on the GRPO
step's rollouts. Steps alternate (grpo, baseline, baseline, grpo, ...) so drifting load slows both
alike; medians are reported. Each GRPO step is a new rollout batch (its own problems and streams).
Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _grpo(ctx, out: Path, step: int):
    """One GRPO step as `dail rl` takes it; (seconds, rollouts, rollout seconds)."""
    from dail.rl.fit import _rollouts
    from dail.rl.update import score, update

    t0 = time.perf_counter()
    rollouts, *_ = _rollouts(ctx, out, step)
    t1 = time.perf_counter()
    batch = score(rollouts, ctx.prompts, scale=True)
    ctx.session.peft_model.train()
    update(ctx.session, batch, step)
    return time.perf_counter() - t0, rollouts, t1 - t0


def _baseline(model, tokenizer, nll_session, prompts: dict, rollouts, group: int, max_new: int):
    """HF generate of the same prompts' G samples, then one NLL step on `rollouts`; (seconds, generated tokens)."""
    import torch

    from dail.roles import Role
    from dail.rows import TrainRow
    from dail.train.step import train_step

    chosen = [prompts[(pid, False)] for pid in dict.fromkeys(r.problem_id for r in rollouts)]
    width = max(len(p) for p in chosen)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in chosen for _ in range(group)])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in chosen for _ in range(group)])[:, None])
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask.long(), do_sample=True, temperature=1.0, top_p=1.0,
                             top_k=0, max_new_tokens=max_new, pad_token_id=pad)
    new = out[:, width:]
    tokens = int((new != pad).sum())
    rows = [TrainRow(f"{r.problem_id}#{r.sample}", {Role.LEARNER: prompts[(r.problem_id, False)]}, r.token_ids)
            for r in rollouts]
    nll_session.peft_model.train()
    train_step(nll_session, 0, rows)
    return time.perf_counter() - t0, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="testbed")
    ap.add_argument("--data", default="testbed-easy")
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=288)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from dail.config import RLConfig, TrainConfig
    from dail.engine import Engine, default_eos_ids
    from dail.rl.fit import Context, _prompts, load_problems
    from dail.train.session import open_session, setup

    tmp = Path(tempfile.mkdtemp())
    cfg = RLConfig(model=args.model, data=args.data, out=str(tmp / "rl"), problems_per_step=args.problems,
                   group_size=args.group_size, sampling={"max_new_tokens": args.max_new_tokens}, device=args.device,
                   lr=1e-3, steps=2 * args.repeats)
    problems = load_problems(cfg.data, cfg.problems_per_step)
    session = open_session(cfg, lambda _: (1, cfg.steps))
    ctx = Context(cfg, session, Engine(session.peft_model, default_eos_ids(session.peft_model,
                                                                           session.tokenizer.eos_token_id)),
                  problems, {}, {})
    ctx.prompts = _prompts(ctx)
    nll = setup(TrainConfig(model=args.model, problems=args.data, out=str(tmp / "nll"), objective="nll",
                            batch_size=args.problems * args.group_size, lr=1e-3, device=args.device, max_steps=10), 1)
    base = nll.peft_model.get_base_model()
    _, last, _ = _grpo(ctx, tmp / "rl", 10_000)  # warm-up: first-call allocations out of the timings
    grpo_s, base_s, roll_s, grpo_tokens, base_tokens = [], [], [], [], []
    for r in range(args.repeats):
        for kind in (("grpo", "base") if r % 2 == 0 else ("base", "grpo")):
            if kind == "grpo":
                seconds, rollouts, rolling = _grpo(ctx, tmp / "rl", r)
                grpo_s.append(seconds)
                roll_s.append(rolling)
                grpo_tokens.append(sum(len(x.token_ids) for x in rollouts))
                last = rollouts
            else:
                max_new = max(len(x.token_ids) for x in last)
                seconds, tokens = _baseline(base, session.tokenizer, nll, ctx.prompts, last, args.group_size, max_new)
                base_s.append(seconds)
                base_tokens.append(tokens)
    result = {"model": args.model, "data": args.data, "problems": args.problems, "group_size": args.group_size,
              "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(), "repeats": args.repeats,
              "grpo_step_s": round(statistics.median(grpo_s), 3), "grpo_rollout_s": round(statistics.median(roll_s), 3),
              "grpo_tokens": statistics.median(grpo_tokens),
              "generate_plus_nll_s": round(statistics.median(base_s), 3), "generate_tokens": statistics.median(base_tokens),
              "ratio": round(statistics.median(grpo_s) / statistics.median(base_s), 3)}
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
