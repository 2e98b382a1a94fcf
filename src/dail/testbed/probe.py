"""`dail testbed probe`: does a test-bed build give each part of DAIL something to do?

Measures, on the first problems of a hard split (nothing here decides which method wins):

* teacher-forced, on the step-by-step solution under each role's prompt: greedy accuracy of the
  routine tokens (everything a step line holds but its first token, its connective and a value a
  function wrote), accuracy of the function values (a guess without the reference, a copy with it),
  and the *shortcut rate*: the mean probability, at each line start after the first, of opening a
  jump (`After`) or an early answer (`Answer`);
* through the stages, at the expansion settings given (by default the demo's): mixed rollouts and
  privileged-only rollouts of the same problems and samples -- the share of pairs that are
  token-identical, the share of mixed-trace tokens the learner wrote, and the base learner's mean
  NLL per token of each (learner prompt);
* the base model's pass@1 and pass@k on the same problems.
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dail.config import EvalConfig, ExpandConfig, PromptConfig
from dail.data import Problem, Trace, read_problems, read_traces
from dail.roles import Role
from dail.testbed.corpus import document_text
from dail.testbed.task import CONNECTIVES, FUNCTIONS

__all__ = ["ProbeSizes", "probe", "token_kinds", "teacher_forced", "trace_stats", "four_traces_figure"]

SHORTCUTS = ("After", "Answer")  # the first token of a jump line and of an answer line
REFERENCE_ROLES = (Role.PRIVILEGED, Role.NEGATIVE, Role.RATIONALIZE)


@dataclass(frozen=True)
class ProbeSizes:
    """How much the probe samples: problems of the split, base samples per problem, and the top k."""

    problems: int = 24
    samples: int = 16
    split: str = "val"


def token_kinds(solution: str, problem: Problem) -> list[tuple[int, int, str]]:
    """Character spans of a step-by-step solution with their kind: line-start, connective, fact, routine.

    A line `g: x=F(x) so x=3 y=6` is: `g` (line-start), ` so` (connective), the `3` of `x=3` (fact:
    the value a function wrote), the rest routine. The answer line is left out.
    """
    spans, offset = [], 0
    for line in solution.split("\n"):
        if line.startswith("Answer"):
            break
        label, rest = line.split(": ", 1)
        step, connective, values = rest.split(" ", 2)
        assert connective in CONNECTIVES, line
        c0 = offset + len(label) + 2 + len(step)  # where " so" starts
        register, source = step.split("=", 1) if "=" in step else ("", "")
        if source[:1] in FUNCTIONS:
            m = re.search(rf"{register}=(\d)", values)
            v = c0 + 1 + len(connective) + 1 + m.start(1)
            spans.append((v, v + 1, "fact"))  # before the routine span that holds it: the first match wins
        spans += [(offset, offset + len(label), "line-start"), (offset + len(label), c0, "routine"),
                  (c0, c0 + 1 + len(connective), "connective"), (c0 + 1 + len(connective), offset + len(line) + 1, "routine")]
        offset += len(line) + 1
    return spans


def _kind_of_tokens(tokenizer, completion: str, spans) -> list[str | None]:
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    kinds = []
    for start, end in enc["offset_mapping"]:
        kind = next((k for s, e, k in spans if s <= start < e), None)
        kinds.append(kind)
    return kinds


def teacher_forced(model, tokenizer, problems: list[Problem], role: Role, prompts: PromptConfig) -> dict[str, float]:
    """Greedy accuracy of routine and fact tokens, and the shortcut rate at line starts, under `role`'s prompt."""
    import torch

    shortcut_ids = [tokenizer.convert_tokens_to_ids(t) for t in SHORTCUTS]
    hits: dict[str, list[bool]] = {"routine": [], "fact": [], "line-start": []}
    shortcut: list[float] = []
    for problem in problems:
        solution = problem.full_solution
        prompt, completion = document_text(role, problem, solution, prompts)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"]
        kinds = _kind_of_tokens(tokenizer, completion, token_kinds(solution, problem))
        with torch.no_grad():
            logits = model(torch.tensor([p + c])).logits[0, len(p) - 1: -1].float()
        probs = logits.softmax(-1)
        pred = logits.argmax(-1).tolist()
        first_line = True
        for i, kind in enumerate(kinds):
            if kind in hits:
                hits[kind].append(pred[i] == c[i])
            if kind == "line-start":
                if not first_line:
                    shortcut.append(float(probs[i, shortcut_ids].sum()))
                first_line = False
    out = {f"{k}_accuracy": round(sum(v) / len(v), 4) for k, v in hits.items() if v}
    out["shortcut_rate"] = round(sum(shortcut) / len(shortcut), 4)
    return out


def trace_stats(model, tokenizer, problems: dict[str, Problem], mixed: list[Trace], privileged: list[Trace],
                prompts: PromptConfig) -> dict[str, float]:
    """Mixed vs privileged-only traces of the same (problem, sample): identical share, learner share, base NLL."""
    import torch

    from dail.prompts import render

    def nll(traces: list[Trace]) -> float:
        total, count = 0.0, 0
        for t in traces:
            p = render(tokenizer, Role.LEARNER, problems[t.problem_id], prompts)
            with torch.no_grad():
                logits = model(torch.tensor([p + t.token_ids])).logits[0, len(p) - 1: -1].float()
            total -= logits.log_softmax(-1).gather(-1, torch.tensor(t.token_ids)[:, None]).sum().item()
            count += len(t.token_ids)
        return total / count

    by_key = {(t.problem_id, t.sample): t for t in privileged}
    pairs = [(m, by_key[(m.problem_id, m.sample)]) for m in mixed if (m.problem_id, m.sample) in by_key]
    tokens = sum(len(m.source) for m in mixed)
    return {
        "pairs": len(pairs),
        "identical_share": round(sum(m.token_ids == p.token_ids for m, p in pairs) / len(pairs), 4),
        "learner_token_share": round(sum(m.source.count("L") for m in mixed) / tokens, 4),
        "base_nll_mixed": round(nll(mixed), 4),
        "base_nll_privileged_only": round(nll(privileged), 4),
        "mixed_correct": round(sum(m.reject_reason is None for m in mixed) / len(mixed), 4),
        "privileged_only_correct": round(sum(p.reject_reason is None for p in privileged) / len(privileged), 4),
        "privileged_only_with_jump": round(sum("After " in p.text for p in privileged) / len(privileged), 4),
        "mixed_with_jump": round(sum("After " in m.text for m in mixed) / len(mixed), 4),
    }


def four_traces_figure(problem: Problem, privileged: Trace, mixed: Trace, negative: Trace, tokenizer,
                       path: str | Path) -> None:
    """One problem's expert solution and three rollouts as a PNG; the privileged student's tokens of the mixed one marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dail.grading import token_pieces

    columns = [("expert solution (didactic)", [(problem.solution, "L")]),
               ("privileged only (psd)", [(privileged.text, "L")]),
               ("mixed (dail): privileged tokens marked", list(zip(token_pieces(tokenizer, mixed.token_ids), mixed.source))),
               ("negative reference (hint)", [(negative.text, "L")])]
    verdicts = ["", privileged.reject_reason or "correct", mixed.reject_reason or "correct",
                negative.reject_reason or "correct"]
    lines = max("".join(piece for piece, _ in pieces).count("\n") + 1 for _, pieces in columns)
    height = 1.0 + 0.22 * lines  # inches; a line is `step` of the figure's height
    step = 0.22 / height
    fig = Figure(figsize=(17, height), dpi=100)
    renderer = FigureCanvasAgg(fig).get_renderer()  # to measure each piece, so the next one starts after it
    fig.text(0.01, 1 - 0.15 / height, problem.problem.replace("\n", "  "), fontsize=7.5, family="monospace", va="top", wrap=True)
    for c, ((title, pieces), verdict) in enumerate(zip(columns, verdicts)):
        x0, y = 0.01 + c * 0.25, 1 - 0.75 / height
        fig.text(x0, y + 0.3 / height, f"{title}  [{verdict}]" if verdict else title, fontsize=9, weight="bold")
        x = x0
        for piece, source in pieces:
            for k, part in enumerate(piece.split("\n")):
                if k:
                    x, y = x0, y - step
                if not part:
                    continue
                t = fig.text(x, y, part, fontsize=8, family="monospace", va="top",
                             bbox=dict(facecolor="#ffd54f", edgecolor="none", pad=0.5) if source == "P" else None)
                x += t.get_window_extent(renderer).width / fig.bbox.width
    fig.savefig(path)


def probe(build: str | Path, expand: ExpandConfig | None = None, sizes: ProbeSizes = ProbeSizes(),
          device: str = "cpu", figure: str | Path | None = None) -> dict[str, Any]:
    """Every measure of the module docstring for the build at `build` (a directory with model/ and data/).

    With `figure`, also draws the first problem's four traces (expert, privileged-only, mixed, negative
    reference; sample 0) to that PNG.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dail import evaluate
    from dail.expand import run as run_expand

    build = Path(build)
    data = build / "data" / f"{sizes.split}.jsonl"
    problems = read_problems(data)[: sizes.problems]
    tokenizer = AutoTokenizer.from_pretrained(build / "model")
    model = AutoModelForCausalLM.from_pretrained(build / "model").eval()
    prompts = (expand.prompts if expand else PromptConfig())
    out: dict[str, Any] = {"split": sizes.split, "problems": len(problems)}
    out["teacher_forced"] = {role.value: teacher_forced(model, tokenizer, problems, role, prompts)
                             for role in (Role.LEARNER, *REFERENCE_ROLES)}
    base = dict(model=str(build / "model"), data=str(data), limit=sizes.problems, device=device)
    settings = (expand or ExpandConfig(data="-", out="-")).model_dump(exclude={"data", "out", "limit", "model", "device",
                                                                               "data_digest"})
    with tempfile.TemporaryDirectory() as tmp:
        run_expand(ExpandConfig(**{**settings, **base, "keep": "all-correct"}, out=f"{tmp}/mixed.jsonl"))
        run_expand(ExpandConfig(**{**settings, **base, "keep": "all-correct", "rule": "threshold", "tau": 1.0},
                                out=f"{tmp}/psd.jsonl"))
        mixed = read_traces(f"{tmp}/mixed.jsonl", kept_only=False)
        privileged = read_traces(f"{tmp}/psd.jsonl", kept_only=False)
        if figure is not None:
            run_expand(ExpandConfig(**{**settings, **base, "keep": "all-correct", "rule": "threshold", "tau": 1.0,
                                       "privileged_view": "waypoints", "limit": 1, "n": 1}, out=f"{tmp}/neg.jsonl"))
            negative = read_traces(f"{tmp}/neg.jsonl", kept_only=False)[0]
            first = [t for t in (privileged[0], mixed[0]) if t.problem_id == negative.problem_id and t.sample == 0]
            four_traces_figure(problems[0], *first, negative, tokenizer, figure)
        k = sorted({1, sizes.samples})
        metrics = evaluate.run(EvalConfig(**base, seed=settings["seed"], out=f"{tmp}/base", n=sizes.samples, k=k,
                                          batch_size=128, force_answer=False,
                                          sampling={"max_new_tokens": settings["sampling"]["max_new_tokens"]}))
    out["expansion"] = {"tau": settings["tau"], "rule": settings["rule"], "n": settings["n"],
                        **trace_stats(model, tokenizer, {p.id: p for p in problems}, mixed, privileged, prompts)}
    out["base_pass_at_k"] = {str(key): round(v, 4) for key, v in metrics["pass_at_k"].items()}
    out["summary"] = _summary(out["teacher_forced"], out["expansion"])
    return out


def _summary(tf: dict[str, dict[str, float]], expansion: dict[str, float]) -> dict[str, float | None]:
    """The three headline gaps: routine accuracy (learner vs references), shortcut ratio, base NLL."""
    learner = tf[Role.LEARNER.value]
    summary: dict[str, float | None] = {
        "routine_gap": round(max(abs(learner["routine_accuracy"] - tf[r.value]["routine_accuracy"])
                                 for r in REFERENCE_ROLES), 4),
        "shortcut_ratio": round(tf[Role.NEGATIVE.value]["shortcut_rate"] / max(tf[Role.PRIVILEGED.value]["shortcut_rate"],
                                                                               1e-9), 2),
        "nll_gap": round(expansion["base_nll_privileged_only"] - expansion["base_nll_mixed"], 4),
    }
    if not math.isfinite(summary["shortcut_ratio"]):
        summary["shortcut_ratio"] = None
    return summary
