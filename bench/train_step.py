"""Time one optimizer step of `contrastive` against `nll` on the same batch, and their peak memory.

    .venv/bin/python bench/train_step.py --model smollm2-135m --batch-size 4 --trace-len 128 --device cpu --steps 5

The batch: the first `--batch-size` problems of the bundled `arith-train` split, their three roles'
prompts rendered as training renders them, and a random trace of `--trace-len` tokens each (ending in
EOS). The same rows go through `dail.train.train_step` -- the trainer's own step (LoRA adapter, AdamW,
clipping, schedule), without the logging diagnostics -- for each objective. `contrastive` adds two
no-grad forwards (privileged and negative prompts, adapter disabled) and two reference `[N, V]`
logit tensors to the `nll` step; the goal is a time ratio <= 2.0.

Timing: both objectives share one model in one process and their steps are interleaved (nll,
contrastive, contrastive, nll, ...), so a machine whose load drifts (a shared CPU) slows both alike;
medians are reported, and the median of the per-pair ratios. The two reference forwards are also timed
alone. Memory: each objective runs two steps in its own child process, so that the peak is its own --
on CPU the growth of `ru_maxrss` from just before the first step (tracemalloc does not see torch's
allocator), on CUDA `torch.cuda.max_memory_allocated` above what was held before the first step.
Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _rows(cfg, tokenizer, batch_size: int, trace_len: int, seed: int):
    import torch

    from dail.datasets import resolve_problems
    from dail.prompts import render
    from dail.rows import TrainRow
    from dail.waypoints import waypoints_for

    g = torch.Generator().manual_seed(seed)
    rows = []
    for p in resolve_problems("arith-train")[:batch_size]:
        prompts = {r: render(tokenizer, r, p, cfg.prompts, waypoints=waypoints_for(p) if r == "negative" else None)
                   for r in ("learner", "privileged", "negative")}
        trace = torch.randint(0, len(tokenizer), (trace_len - 1,), generator=g).tolist() + [tokenizer.eos_token_id]
        rows.append(TrainRow(p.id, prompts, trace))
    return rows


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()  # sync point: the timer must see the GPU's work


def _session(args: argparse.Namespace, objective: str):
    from dail.config import TrainConfig
    from dail.train import setup

    out = os.path.join(tempfile.gettempdir(), "dail-bench-train-step")  # never written: setup() writes nothing
    cfg = TrainConfig(model=args.model, problems="arith-train", objective=objective, out=out,
                      device=args.device, dtype=args.dtype, batch_size=args.batch_size, grad_accum=args.grad_accum,
                      gradient_checkpointing=args.gradient_checkpointing, lr=1e-5, max_steps=10_000,
                      warmup_ratio=0.0, schedule="constant", lora={"r": args.lora_r})
    session = setup(cfg, n_rows=args.batch_size)  # writes nothing: the out dir stays empty
    return session, _rows(cfg, session.tokenizer, args.batch_size, args.trace_len, seed=0)


def peak_memory(args: argparse.Namespace, objective: str) -> dict:
    """Peak memory of the first optimizer steps of one objective (run in a fresh process)."""
    import torch

    from dail.train import train_step

    session, rows = _session(args, objective)
    # Weights load memory-mapped: page them all in first, or the baseline misses them.
    with torch.no_grad():
        sum(float(p.float().sum()) for p in session.peft_model.parameters())
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for step in range(2):  # the second step also holds AdamW's state
        train_step(session, step, rows)
    _sync(args.device)
    if cuda:
        peak_mib = (torch.cuda.max_memory_allocated() - held) / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    return {"objective": objective, "peak_mib": round(peak_mib, 1)}


def timings(args: argparse.Namespace) -> dict:
    """Seconds per optimizer step of nll and contrastive, interleaved on one model in this process.

    Interleaving (nll, contrastive, contrastive, nll, ...) exposes both objectives to the same load,
    which on a shared machine drifts by more than the difference being measured.
    """
    import dataclasses

    import torch

    from dail.rows import REFERENCE_ROLES, collate
    from dail.train import train_step

    nll_session, rows = _session(args, "nll")
    contrastive_cfg = nll_session.cfg.model_copy(update={"objective": "contrastive"})
    contrastive_session = dataclasses.replace(nll_session, cfg=contrastive_cfg)  # the same model and optimizer
    sessions = {"nll": nll_session, "contrastive": contrastive_session}
    times: dict[str, list[float]] = {"nll": [], "contrastive": [], "references": []}
    step = 0
    for i in range(args.warmup + args.steps):
        order = ("nll", "contrastive") if i % 2 == 0 else ("contrastive", "nll")
        for name in order:
            t = time.perf_counter()
            train_step(sessions[name], step, rows)
            _sync(args.device)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t)
            step += 1
        t = time.perf_counter()  # the two reference forwards alone
        with torch.no_grad(), nll_session.peft_model.disable_adapter(), nll_session.accelerator.autocast():
            for role in REFERENCE_ROLES:
                nll_session.lm(*collate(rows, role, nll_session.pad_id, nll_session.accelerator.device))
        _sync(args.device)
        if i >= args.warmup:
            times["references"].append(time.perf_counter() - t)
    ratios = [c / n for c, n in zip(times["contrastive"], times["nll"])]
    return {
        "times": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "ratio_median_of_pairs": statistics.median(ratios),
        "trace_tokens": sum(len(r.target) for r in rows),
        "prompt_tokens": {role: round(statistics.mean(len(r.prompts[role]) for r in rows), 1)
                          for role in ("learner", "privileged", "negative")},
        "device": str(nll_session.accelerator.device), "dtype": str(next(nll_session.peft_model.parameters()).dtype),
        "mixed_precision": nll_session.accelerator.mixed_precision,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--trace-len", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--steps", type=int, default=5, help="Timed optimizer steps per objective (median reported).")
    ap.add_argument("--warmup", type=int, default=1, help="Untimed steps of each objective first.")
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads; 0 keeps torch's default. 1 is steadier on a shared machine.")
    ap.add_argument("--memory-of", help=argparse.SUPPRESS)  # child mode: one objective's peak memory, JSON on stdout
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    if args.memory_of:
        print(json.dumps(peak_memory(args, args.memory_of)))
        return
    memory = {}
    for objective in ("nll", "contrastive"):  # each in a fresh process: peak memory never goes down
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--memory-of", objective],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{objective} failed:\n{proc.stderr[-4000:]}")
        memory[objective] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"]
    r = timings(args)
    med = r["median_s"]
    print(f"rows {args.batch_size} x trace {args.trace_len} tokens ({r['trace_tokens']} trace tokens), mean prompt "
          f"tokens {r['prompt_tokens']}, {r['device']} {r['dtype']} mixed_precision={r['mixed_precision']}")
    print(f"         nll: {med['nll']:.3f} s/step  {r['times']['nll']}  peak +{memory['nll']:.0f} MiB")
    print(f" contrastive: {med['contrastive']:.3f} s/step  {r['times']['contrastive']}  "
          f"peak +{memory['contrastive']:.0f} MiB")
    print(f"  references: {med['references']:.3f} s (the two no-grad forwards alone)  {r['times']['references']}")
    print(f"time ratio contrastive / nll: {med['contrastive'] / med['nll']:.2f} (medians), "
          f"{r['ratio_median_of_pairs']:.2f} (median of interleaved pairs); goal <= 2.0")
    print(f"memory ratio contrastive / nll: {memory['contrastive'] / max(memory['nll'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
