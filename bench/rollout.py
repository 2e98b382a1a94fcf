"""Throughput of the mixed rollout (threshold and nucleus rules) vs plain sampling on the same engine vs `model.generate`.

    python bench/rollout.py --model smollm2-135m --batch-sizes 1,16 --new-tokens 64 --device cpu
    python bench/rollout.py --shape qwen2.5-7b --device cuda --batch-sizes 1,16,64,256

`--shape NAME` builds a random-weight model of that architecture directly on the device (bf16 on
GPU; throughput does not depend on the weights' values) and random-token prompts of
`--prompt-len` (learner) and `--privileged-len` tokens, and adds the weights-read floor: parameter
bytes / measured device copy bandwidth, the time one decode step needs just to read the weights.

For each batch size B, B traces -- the first B / n problems of `--data`, n samples each (`--n`,
default 1: B distinct problems) -- give B learner prompts and B privileged prompts, rendered as
`dail expand` renders them. With n > 1 the engine prefills each distinct prompt once, as in
`dail expand`; `generate` cannot. Three ways decode exactly `--new-tokens` tokens
per sequence (EOS ignored everywhere, so the work is equal):

* plain     -- `Engine.sample` of the B learner prompts (B rows per forward);
* threshold -- `dail.expand.rollout`, the authors' rule (`--tau`, `--retries` proposals per token), of the
               B (learner, privileged) pairs (2B rows per forward);
* nucleus   -- the same pairs under the ablation rule (one proposal, `--nucleus-tau`): the retries
               of `threshold` should cost draws, not forwards, so the two should time alike;
* generate  -- `model.generate(do_sample=True, min_new_tokens=max_new_tokens)` of the learner prompts;
* forward   -- the bound for any sampler of this model: bare batched forward passes, the prompts
               prefilled at once, then one `model(...)` per step over a KV cache with the argmax
               fed back -- no sampling, no bookkeeping; the engine's plain sampling should reach at
               least half of its tokens/s.

tokens/s counts trace tokens (B x new tokens), so the mixed rollout gets no credit for its second
row. Each method runs `--repeats` times, interleaved with the others so that load from other
processes hits all three alike; the best run is reported (the median too). "prefill" is the time
to the first sampled token; "decode tok/s" leaves it out. `--profile` adds a torch.profiler table of
one mixed run at the largest batch size. "ms/step" is decode time per step (prefill left out).
This is a harness, not a test: it asserts nothing.
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


# Architectures of real models (their config.json), for random-weight models of the same shape.
SHAPES = {
    "qwen2.5-7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, rope_theta=1e6, tie_word_embeddings=False),
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, rope_theta=1e6, tie_word_embeddings=True),
    "tiny": dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,  # CPU smoke run
                 num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6, tie_word_embeddings=True),
}


def shaped_model(name: str, device: str, dtype: str):
    """A random-weight Qwen2 model of a named shape, initialised on the device itself (fast)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch_dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                   "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    config = Qwen2Config(**SHAPES[name], max_position_embeddings=32768, bos_token_id=None, eos_token_id=None,
                         pad_token_id=0)
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.eval()


def weights_floor_ms(model, device: str) -> tuple[float, float]:
    """(ms to read every parameter once at the measured copy bandwidth, that bandwidth in GB/s)."""
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if not device.startswith("cuda"):
        return float("nan"), float("nan")
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)  # 1 GiB
    dst = torch.empty_like(src)
    dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        dst.copy_(src)
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / 10
    bandwidth = 2 * src.numel() / seconds  # a copy reads and writes every byte
    return nbytes / bandwidth * 1e3, bandwidth / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _FirstCall:
    """A logits processor that notes when generate samples its first token (the end of prefill)."""

    def __init__(self):
        self.at = None

    def __call__(self, input_ids, scores):
        if self.at is None:
            self.at = time.perf_counter()
        return scores


def _left_pad(prompts: list[list[int]], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask of left-padded prompts, as `generate` wants them."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random-weight model of this shape instead")
    parser.add_argument("--prompt-len", type=int, default=256, help="--shape: learner prompt tokens")
    parser.add_argument("--privileged-len", type=int, default=768, help="--shape: privileged prompt tokens")
    parser.add_argument("--data", default="arith-train", help="problems (split name or JSONL) giving the prompts")
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=20, help="the authors' proposal: top 20 at temperature 1")
    parser.add_argument("--tau", type=float, default=0.8, help="threshold rule's tau")
    parser.add_argument("--retries", type=int, default=5, help="threshold rule's proposals per token")
    parser.add_argument("--nucleus-tau", type=float, default=0.0, help="nucleus rule's tau")
    parser.add_argument("--n", type=int, default=1, help="samples per problem within a batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="profile one mixed run at the largest batch")
    args = parser.parse_args()

    from transformers import LogitsProcessorList

    from dail.config import PromptConfig
    from dail.datasets import resolve_problems
    from dail.engine import Engine, default_eos_ids
    from dail.expand import rollout
    from dail.models import load
    from dail.prompts import render
    from dail.sampling import Role, row_key

    sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.shape:
        model, tokenizer = shaped_model(args.shape, args.device, args.dtype), None
        gen = torch.Generator().manual_seed(args.seed)
        vocab = model.config.vocab_size
        problems = -(-max(sizes) // args.n)
        base = [torch.randint(1, vocab, (args.privileged_len,), generator=gen).tolist() for _ in range(problems)]
        # the privileged prompt extends the learner's, as the solution extends the problem
        learner = [base[i // args.n][: args.prompt_len] for i in range(max(sizes))]
        privileged = [base[i // args.n] for i in range(max(sizes))]
        keys = [row_key(args.seed, f"shape-{i // args.n}", i % args.n) for i in range(max(sizes))]
        engine = Engine(model, eos_token_ids=())
        pad_id = 0
    else:
        model, tokenizer = load(args.model, dtype=args.dtype, device=args.device)
        traces = [(p, s) for p in resolve_problems(args.data)[: -(-max(sizes) // args.n)] for s in range(args.n)]
        if len(traces) < max(sizes):
            raise SystemExit(f"{args.data} has too few problems for batch size {max(sizes)}")
        templates = PromptConfig()
        learner = [render(tokenizer, Role.LEARNER, p, templates) for p, _ in traces]
        privileged = [render(tokenizer, Role.PRIVILEGED, p, templates) for p, _ in traces]
        keys = [row_key(args.seed, p.id, s) for p, s in traces]
        engine = Engine(model, eos_token_ids=default_eos_ids(model, tokenizer.eos_token_id))
        pad_id = tokenizer.pad_token_id
    floor_ms, bandwidth = weights_floor_ms(model, args.device)
    prefills: list[float] = []
    _timed_prefill(engine, prefills)
    n = args.new_tokens
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k}
    print(f"device {args.device}, model {args.shape or args.model} ({model.num_parameters() / 1e9:.2f} B params, "
          f"{model.dtype}), threads {torch.get_num_threads()}, new tokens {n}, samples per problem {args.n}, "
          f"{sampling}, threshold tau {args.tau} x {args.retries} proposals, nucleus tau {args.nucleus_tau}, prompts {len(learner[0])}/{len(privileged[0])} tokens")
    if args.device.startswith("cuda"):
        print(f"{torch.cuda.get_device_name()}: copy bandwidth {bandwidth:.0f} GB/s, "
              f"weights-read floor {floor_ms:.2f} ms/step")

    def plain(b: int, tokens: int) -> float | None:
        engine.sample(learner[:b], keys[:b], max_new_tokens=tokens, stop_on_eos=False, **sampling)
        return prefills[-1]  # the engine's last host read has waited for the device

    def threshold(b: int, tokens: int) -> float | None:
        for _ in rollout(engine, list(zip(learner[:b], privileged[:b])), keys[:b], max_new_tokens=tokens,
                         rule="threshold", tau=args.tau, retries=args.retries, stop_on_eos=False, **sampling):
            pass
        return prefills[-1]

    def nucleus(b: int, tokens: int) -> float | None:
        for _ in rollout(engine, list(zip(learner[:b], privileged[:b])), keys[:b], max_new_tokens=tokens,
                         rule="nucleus", tau=args.nucleus_tau, stop_on_eos=False, **sampling):
            pass
        return prefills[-1]

    mixed = threshold

    def generate(b: int, tokens: int) -> float | None:
        batch = _left_pad(learner[:b], pad_id, args.device)
        first = _FirstCall()
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(**batch, do_sample=True, max_new_tokens=tokens, min_new_tokens=tokens,
                           pad_token_id=pad_id, logits_processor=LogitsProcessorList([first]),
                           **sampling)
        return first.at - start

    def forward(b: int, tokens: int) -> float | None:
        from transformers import DynamicCache

        batch = _left_pad(learner[:b], pad_id, args.device)
        mask = batch["attention_mask"]
        start = time.perf_counter()
        with torch.inference_mode():
            cache = DynamicCache()
            out = model(**batch, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            first = time.perf_counter() - start
            for _ in range(tokens - 1):
                mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
                out = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
                token = out.logits[:, -1].argmax(-1, keepdim=True)
        return first

    methods = {"plain": plain, "threshold": threshold, "nucleus": nucleus, "generate": generate, "forward": forward}
    rows = []
    for b in sizes:
        for fn in methods.values():  # warm-up: lazy imports, allocator, thread pool; on GPU the graphs too
            fn(b, n if args.device.startswith("cuda") else 2)
            _sync(args.device)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, fn in methods.items():
                _sync(args.device)
                start = time.perf_counter()
                first = fn(b, n)
                _sync(args.device)
                runs[name].append((time.perf_counter() - start, first))
        for name, times in runs.items():
            total, first = min(times)
            median = statistics.median(t for t, _ in times)
            rows.append({"method": name, "batch": b, "seconds": total, "prefill": first,
                         "tok_s": b * n / total, "tok_s_median": b * n / median,
                         "decode_tok_s": b * (n - 1) / (total - first),
                         "ms_step": (total - first) / (n - 1) * 1e3})

    print()
    header = (f"{'method':<9} {'batch':>5} {'seconds':>8} {'prefill s':>9} {'tok/s':>8} {'tok/s med':>9} "
              f"{'decode tok/s':>12} {'ms/step':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['method']:<9} {r['batch']:>5} {r['seconds']:>8.2f} {r['prefill']:>9.2f} {r['tok_s']:>8.1f} "
              f"{r['tok_s_median']:>9.1f} {r['decode_tok_s']:>12.1f} {r['ms_step']:>8.2f}")
    print()
    by = {(r["method"], r["batch"]): r for r in rows}
    for b in sizes:
        m, nu, p, g, f = by["threshold", b], by["nucleus", b], by["plain", b], by["generate", b], by["forward", b]
        decode = m["decode_tok_s"] / p["decode_tok_s"]
        floor = f", plain step / floor {p['ms_step'] / floor_ms:.1f}" if floor_ms == floor_ms else ""
        print(f"batch {b:>3}: threshold/nucleus {m['tok_s'] / nu['tok_s']:.3f} (decode only "
              f"{m['decode_tok_s'] / nu['decode_tok_s']:.3f}), threshold/plain {m['tok_s'] / p['tok_s']:.2f} "
              f"(decode only {decode:.2f}), "
              f"plain/generate {p['tok_s'] / g['tok_s']:.2f} (decode only "
              f"{p['decode_tok_s'] / g['decode_tok_s']:.2f}), mixed/generate {m['tok_s'] / g['tok_s']:.2f}, "
              f"plain/forward {p['tok_s'] / f['tok_s']:.2f} (decode only {p['decode_tok_s'] / f['decode_tok_s']:.2f})"
              f"{floor}")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        b = max(sizes)
        cuda = args.device.startswith("cuda")
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            mixed(b, n)
            _sync(args.device)
        print(f"\nprofile: one mixed run, batch {b}, {n} new tokens")
        sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=20))


if __name__ == "__main__":
    main()
