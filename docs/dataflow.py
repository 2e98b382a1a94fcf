"""Draw docs/dataflow.png: the stages of DAIL and the files between them.

Run from the repository root: `.venv/bin/python docs/dataflow.py`. Stages are filled boxes, the
files they exchange are white boxes, dashed lines show where the one set of base weights is used.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a file, never a window

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).with_name("dataflow.png")

STAGE = {"facecolor": "#dbe8f6", "edgecolor": "#2f5d8a"}
FILE = {"facecolor": "white", "edgecolor": "#555555"}
MODEL = {"facecolor": "#f6ead7", "edgecolor": "#8a5a1f"}

W, H = 2.3, 1.25  # box size in data units

# name -> (x, y centre, title, detail lines, style)
BOXES = {
    "problems": (1.5, 5.2, "problems", "JSONL or bundled split\nid, problem, solution,\nanswer", FILE),
    "select": (4.5, 5.2, "select (optional)", "keep problems the base\nmodel fails n/n times", STAGE),
    "waypoints": (7.5, 5.2, "waypoints", "problems + waypoints;\nhint: final answer +\nintermediate results", STAGE),
    "expand": (10.5, 5.2, "expand", "engine: learner + privileged\nrows, one forward per step;\nthreshold rule (tau, R)", STAGE),
    "traces": (13.5, 5.2, "traces.jsonl", "tokens, source L/P,\nlog-probs, verdict", FILE),
    "train": (13.5, 1.8, "train", "LoRA, contrastive:\nKL(p_θ‖p_P) − γ KL(p_θ‖p_N);\nreferences: adapter disabled", STAGE),
    "adapter": (10.5, 1.8, "adapter/", "LoRA weights,\nprovenance.json", FILE),
    "eval": (7.5, 1.8, "eval", "n samples, grading,\nforced answers, budgets", STAGE),
    "samples": (4.5, 1.8, "samples.jsonl\nmetrics.json", "pass@k, tokens,\npass@k at budgets", FILE),
    "report": (1.5, 1.8, "report / study", "tables, plots, trace viewer;\nseeds, sweeps, paired CIs", STAGE),
    "model": (7.5, 3.5, "base model: one set of weights, three prompts",
              "learner = base (+ the LoRA adapter once trained);  privileged and negative = base with the "
              "adapter disabled", MODEL),
}

# (from, to, label) along the data path
FLOW = [
    ("problems", "select", ""),
    ("select", "waypoints", ""),
    ("waypoints", "expand", ""),
    ("expand", "traces", ""),
    ("traces", "train", "kept traces"),
    ("train", "adapter", ""),
    ("adapter", "eval", ""),
    ("eval", "samples", ""),
    ("samples", "report", ""),
]
USES_MODEL = ["select", "expand", "train", "eval"]


MODEL_W, MODEL_H = 9.0, 0.9


def _box(ax, name: str) -> None:
    x, y, title, detail, style = BOXES[name]
    w, h = (MODEL_W, MODEL_H) if name == "model" else (W, H)
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                linewidth=1.4, **style))
    if name == "model":
        ax.text(x, y + 0.16, title, ha="center", va="center", fontsize=11, weight="bold")
        ax.text(x, y - 0.18, detail, ha="center", va="center", fontsize=8.8)
        return
    ax.text(x, y + h / 2 - 0.12, title, ha="center", va="top", fontsize=11, weight="bold", linespacing=1.1)
    lines = title.count("\n")
    ax.text(x, y - 0.12 - 0.1 * lines, detail, ha="center", va="center", fontsize=8.3, linespacing=1.2)


def _edge(name: str, towards: str) -> tuple[float, float]:
    """The point on `name`'s border facing `towards`."""
    x, y = BOXES[name][:2]
    tx, ty = BOXES[towards][:2]
    if abs(tx - x) >= abs(ty - y):
        return (x + (W / 2 if tx > x else -W / 2), y)
    return (x, y + (H / 2 if ty > y else -H / 2))


def _dashed(ax, xs: list[float], ys: list[float]) -> None:
    ax.plot(xs, ys, ls="--", lw=1.2, color=MODEL["edgecolor"])


def draw(out: Path = OUT) -> Path:
    """Draw the data-flow picture to `out`."""
    fig = Figure(figsize=(12.5, 5.6), dpi=130, layout="constrained")
    ax = fig.subplots()
    ax.set(xlim=(0, 15), ylim=(0.85, 6.0))
    ax.axis("off")
    for name in BOXES:
        _box(ax, name)
    for a, b, label in FLOW:
        start, end = _edge(a, b), _edge(b, a)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16, linewidth=1.6,
                                     color="#333333", shrinkA=2, shrinkB=2))
        if label:
            mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
            ax.text(mx + 0.12, my, label, fontsize=8.5, ha="left", va="center", style="italic")
    mx, my = BOXES["model"][:2]
    model_top, model_bottom, model_right = my + MODEL_H / 2, my - MODEL_H / 2, mx + MODEL_W / 2
    for name in ("select", "expand"):  # above the model
        x, y = BOXES[name][:2]
        _dashed(ax, [x, x], [y - H / 2, model_top])
    x, y = BOXES["eval"][:2]  # below it
    _dashed(ax, [x, x], [y + H / 2, model_bottom])
    x, y = BOXES["train"][:2]  # below and to the right: up beside the traces arrow, then left
    _dashed(ax, [x - 0.6, x - 0.6, model_right], [y + H / 2, my, my])
    ax.text(0.1, 0.9, "filled: stages    white: files    dashed: the stage runs the base weights", fontsize=8.5,
            color="#444444", va="bottom")
    fig.savefig(out)
    return out


if __name__ == "__main__":
    print(draw())
