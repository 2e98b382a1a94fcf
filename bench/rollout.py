"""Throughput of the mixed rollout vs plain sampling on the same engine vs `model.generate`.

    python bench/rollout.py --model smollm2-135m --batch-sizes 1,16 --new-tokens 64 --device cpu

For each batch size B, B traces -- the first B / n problems of `--data`, n samples each (`--n`,
default 1: B distinct problems) -- give B learner prompts and B privileged prompts, rendered as
`dail expand` renders them. With n > 1 the engine prefills each distinct prompt once, as in
`dail expand`; `generate` cannot. Three ways decode exactly `--new-tokens` tokens
per sequence (EOS ignored everywhere, so the work is equal):

* plain     -- `Engine.sample` of the B learner prompts (B rows per forward);
* mixed     -- `dail.expand.rollout` of the B (learner, privileged) pairs (2B rows per forward);
* generate  -- `model.generate(do_sample=True, min_new_tokens=max_new_tokens)` of the learner prompts.

tokens/s counts trace tokens (B x new tokens), so the mixed rollout gets no credit for its second
row. Each method runs `--repeats` times, interleaved with the others so that load from other
processes hits all three alike; the best run is reported (the median too). "prefill" is the time
to the first sampled token; "decode tok/s" leaves it out. `--profile` adds a torch.profiler table of
one mixed run at the largest batch size. This is a harness, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _timed_prefill(engine, record: list[float]):
    """Wrap engine.prefill so each call's seconds are appended to `record`."""
    inner = engine.prefill

    def prefill(*args, **kwargs):
        start = time.perf_counter()
        batch = inner(*args, **kwargs)
        record.append(time.perf_counter() - start)
        return batch

    engine.prefill = prefill


class _FirstCall:
    """A logits processor that notes when generate samples its first token (the end of prefill)."""

    def __init__(self):
        self.at = None

    def __call__(self, input_ids, scores):
        if self.at is None:
            self.at = time.perf_counter()
        return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default="arith-train", help="problems (split name or JSONL) giving the prompts")
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--tau", type=float, default=0.0)
    parser.add_argument("--n", type=int, default=1, help="samples per problem within a batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="profile one mixed run at the largest batch")
    args = parser.parse_args()

    from transformers import LogitsProcessorList

    from dail.config import PromptConfig
    from dail.datasets import resolve_problems
    from dail.engine import Engine, default_eos_ids, row_key
    from dail.expand import rollout
    from dail.models import load
    from dail.prompts import render

    sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load(args.model, dtype=args.dtype, device=args.device)
    traces = [(p, s) for p in resolve_problems(args.data)[: -(-max(sizes) // args.n)] for s in range(args.n)]
    if len(traces) < max(sizes):
        raise SystemExit(f"{args.data} has too few problems for batch size {max(sizes)}")
    templates = PromptConfig()
    learner = [render(tokenizer, "learner", p, templates) for p, _ in traces]
    privileged = [render(tokenizer, "privileged", p, templates) for p, _ in traces]
    keys = [row_key(args.seed, p.id, s) for p, s in traces]
    engine = Engine(model, eos_token_ids=default_eos_ids(model, tokenizer.eos_token_id))
    prefills: list[float] = []
    _timed_prefill(engine, prefills)
    n = args.new_tokens
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k}
    print(f"device {args.device}, model dtype {model.dtype}, threads {torch.get_num_threads()}, "
          f"new tokens {n}, samples per problem {args.n}, {sampling}, tau {args.tau}")

    def plain(b: int, tokens: int) -> float | None:
        engine.sample(learner[:b], keys[:b], max_new_tokens=tokens, stop_on_eos=False, **sampling)
        return prefills[-1]

    def mixed(b: int, tokens: int) -> float | None:
        for _ in rollout(engine, list(zip(learner[:b], privileged[:b])), keys[:b], max_new_tokens=tokens,
                         tau=args.tau, stop_on_eos=False, **sampling):
            pass
        return prefills[-1]

    def generate(b: int, tokens: int) -> float | None:
        tokenizer.padding_side = "left"
        batch = tokenizer.pad({"input_ids": learner[:b]}, return_tensors="pt").to(args.device)
        first = _FirstCall()
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(**batch, do_sample=True, max_new_tokens=tokens, min_new_tokens=tokens,
                           pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList([first]),
                           **sampling)
        return first.at - start

    methods = {"plain": plain, "mixed": mixed, "generate": generate}
    rows = []
    for b in sizes:
        for fn in methods.values():  # warm-up: lazy imports, allocator, thread pool
            fn(b, 2)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, fn in methods.items():
                start = time.perf_counter()
                first = fn(b, n)
                runs[name].append((time.perf_counter() - start, first))
        for name, times in runs.items():
            total, first = min(times)
            median = statistics.median(t for t, _ in times)
            rows.append({"method": name, "batch": b, "seconds": total, "prefill": first,
                         "tok_s": b * n / total, "tok_s_median": b * n / median,
                         "decode_tok_s": b * (n - 1) / (total - first)})

    print()
    header = (f"{'method':<9} {'batch':>5} {'seconds':>8} {'prefill s':>9} {'tok/s':>8} {'tok/s med':>9} "
              f"{'decode tok/s':>12}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['method']:<9} {r['batch']:>5} {r['seconds']:>8.2f} {r['prefill']:>9.2f} {r['tok_s']:>8.1f} "
              f"{r['tok_s_median']:>9.1f} {r['decode_tok_s']:>12.1f}")
    print()
    by = {(r["method"], r["batch"]): r for r in rows}
    for b in sizes:
        m, p, g = by["mixed", b], by["plain", b], by["generate", b]
        decode = m["decode_tok_s"] / p["decode_tok_s"]
        print(f"batch {b:>3}: mixed/plain {m['tok_s'] / p['tok_s']:.2f} (decode only {decode:.2f}), "
              f"plain/generate {p['tok_s'] / g['tok_s']:.2f}, mixed/generate {m['tok_s'] / g['tok_s']:.2f}")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        b = max(sizes)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            mixed(b, n)
        print(f"\nprofile: one mixed run, batch {b}, {n} new tokens")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
