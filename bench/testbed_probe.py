"""Does a test-bed model carry the premise? Teacher-forced accuracy per token kind, then the premise check.

    python bench/testbed_probe.py --build DIR [--problems 12] [--samples 32]

1. Teacher-forced greedy accuracy of each kind of completion token (label, register, source,
   the changed register's new value, the unchanged one) for learner documents of 3, 6 and 12 steps
   and privileged documents of 12: which skill a build has not learned yet.
2. Teacher-forced accuracy of the value an F step writes, on validation problems (whose F the
   model was never shown), for the learner and the privileged prompt: a guess (about 0.1) without
   the reference, a copy with it.
3. The premise through the stages themselves (`dail eval`, `dail expand` with tau = 1): the base
   model's pass@1 and pass@k on the first validation problems, and the share of them a
   privileged-only rollout solves. The test-bed is meant for low pass@1, pass@k above 0 and a
   privileged student that solves most.

Prints one JSON object; measures only, asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dail import evaluate, expand
from dail.config import EvalConfig, ExpandConfig, PromptConfig
from dail.data import read_problems, read_traces
from dail.sampling import Role
from dail.testbed.build import document_text
from dail.testbed.task import draw_chain, full_solution, problem_row

# Token kinds of one solution line, `a: x=y so x=5 y=5\n`, in order.
LINE = ["label", ":", "register", "=", "source", "so", "x", "=", "x value", "y", "=", "y value", "newline"]
SHOWN = ("label", "register", "source", "changed value", "unchanged value")


def token_accuracy(model, tok, role: Role, steps: int, docs: int = 40, seed: int = 1) -> dict[str, float]:
    """Greedy next-token accuracy per token kind, with the true solution as the prefix."""
    rng, hits = random.Random(seed), collections.defaultdict(list)
    for _ in range(docs):
        chain = draw_chain(rng, steps)
        prompt, completion = document_text(role, problem_row(chain, 3, "probe", "probe"), full_solution(chain),
                                            PromptConfig())
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(completion, add_special_tokens=False)["input_ids"]
        if len(tok(full_solution(chain).split("\n")[0] + "\n", add_special_tokens=False)["input_ids"]) != len(LINE):
            raise SystemExit("this build's tokenizer splits a step line differently; update LINE")
        with torch.no_grad():
            pred = model(torch.tensor([p + c])).logits[0, len(p) - 1: -1].argmax(-1).tolist()
        for i, (register, _) in enumerate(chain.steps):
            for j, kind in enumerate(LINE):
                if kind.endswith("value"):
                    kind = "changed value" if kind[0] == register else "unchanged value"
                hits[kind].append(pred[i * len(LINE) + j] == c[i * len(LINE) + j])
    return {k: round(sum(hits[k]) / len(hits[k]), 3) for k in SHOWN}


def f_value_accuracy(model, tok, role: Role, problems) -> float:
    """Greedy accuracy of the digit each F step writes, with the true solution as the prefix."""
    hits = []
    for problem in problems:
        prompt, completion = document_text(role, problem, problem.meta["full_solution"], PromptConfig())
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            pred = model(torch.tensor([p + tok(completion, add_special_tokens=False)["input_ids"]])).logits[0]
        for line in problem.meta["full_solution"].splitlines():
            if "=F(" in line:  # `c: y=F(x) so x=1 y=7`: the changed register's value ends its clause
                register = line[3]
                head = completion[: completion.index(line) + line.index(f" {register}=", line.index(" so ")) + 3]
                n = len(p) + len(tok(head, add_special_tokens=False)["input_ids"])
                hits.append(tok.decode([pred[n - 1].argmax().item()]) == line[len(head) - completion.index(line)])
    return round(sum(hits) / len(hits), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="A directory written by `dail testbed build`.")
    ap.add_argument("--problems", type=int, default=12)
    ap.add_argument("--samples", type=int, default=32)
    args = ap.parse_args()
    build = Path(args.build)
    tok = AutoTokenizer.from_pretrained(build / "model")
    model = AutoModelForCausalLM.from_pretrained(build / "model").eval()
    out: dict = {"token_accuracy": {f"{role.value} {n}": token_accuracy(model, tok, role, n)
                                    for role, n in [(Role.LEARNER, 3), (Role.LEARNER, 6), (Role.LEARNER, 12),
                                                    (Role.PRIVILEGED, 12)]}}
    val = read_problems(build / "data" / "val.jsonl")
    out["f_value_accuracy"] = {role.value: f_value_accuracy(model, tok, role, val) for role in (Role.LEARNER, Role.PRIVILEGED)}
    common = dict(model=str(build / "model"), data=str(build / "data" / "val.jsonl"), limit=args.problems,
                  device="cpu", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        m = evaluate.run(EvalConfig(**common, out=f"{tmp}/base", n=args.samples, k=[1, args.samples],
                                    batch_size=128, force_answer=False, sampling={"max_new_tokens": 240}))
        expand.run(ExpandConfig(**common, out=f"{tmp}/priv.jsonl", n=2, tau=1.0, keep="all-correct",
                                batch_size=24, sampling={"max_new_tokens": 240}))
        traces = read_traces(f"{tmp}/priv.jsonl", kept_only=False)
    out["base_pass_at_k"] = {str(k): v for k, v in m["pass_at_k"].items()}
    out["privileged_solved"] = sum(t.kept for t in traces) / len(traces)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
