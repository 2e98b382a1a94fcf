"""The report's figures: pass@k against k and pass@k against the token budget, one panel per split
and one line per method; the RL methods' training curves (matplotlib without pyplot, imported only
when a figure is drawn)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report_inputs import EvalEntry, budget_curve, budget_top_k, int_keyed, num, ordered

__all__ = ["method_colours", "plot_pass_at_k", "plot_rl", "plot_token_budget"]


def method_colours(methods: Sequence[str]) -> dict[str, Any]:
    """A distinct colour per method: tab20's ten dark hues (tab10's), then its ten light ones (a run with the
    RL methods has eleven)."""
    from matplotlib import colormaps

    return {m: colormaps["tab20"]((2 * i + i // 10) % 20) for i, m in enumerate(methods)}


def _colours(entries: Sequence[EvalEntry]) -> dict[str, Any]:
    return method_colours(ordered(e.method for e in entries))


def _figure(n_panels: int, title: str):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    width = 0.5 + 4.3 * n_panels
    fig = Figure(figsize=(width, 4.0 + 0.2 * (n_panels == 1)), layout="constrained", dpi=110)
    # ~0.09 in per character at 11 pt: wrap rather than let a one-panel figure clip the title.
    fig.suptitle(textwrap.fill(title, width=int(width / 0.09)), fontsize=11)
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _log2_axis(ax, ticks: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ticks), [str(t) for t in ticks])
    ax.minorticks_off()
    ax.grid(alpha=0.3)


def _pass_curve(m: dict[str, Any]) -> dict[int, float]:
    pk = {k: num(v) for k, v in int_keyed(m.get("pass_at_k")).items()}
    return {k: v for k, v in pk.items() if v is not None}


def _plot(entries: Sequence[EvalEntry], path: str | Path, title: str, curve, xlabel: str, ylabel: str,
          mark_mean: bool = False, dashed=None) -> None:
    """One panel per split, one line per method, log2 x axis ticked at the measured points.

    `dashed(metrics) -> (label, points) | None` adds a second, dashed line per method.
    """
    splits = ordered(e.split for e in entries) or ["(none)"]
    colours = _colours(entries)
    fig, axes = _figure(len(splits), title)
    methods = list(colours)
    for ax, split in zip(axes, splits):
        xs: set[int] = set()
        ys: list[float] = []
        for e in (e for e in entries if e.split == split):
            points = curve(e.metrics)
            if not points:
                continue
            xs |= set(points)
            ys += points.values()
            # Methods that tie draw on top of each other: each later one thinner, with a smaller hollow marker
            # of its own shape, so the ones beneath still show.
            i = methods.index(e.method)
            size = max(3.0, 9.0 - 1.5 * i)
            style = {"marker": _MARKERS[i % len(_MARKERS)], "ms": size, "mfc": "none", "mew": 1.3,
                     "color": colours[e.method], "lw": max(1.0, 3.0 - 0.5 * i)}
            ax.plot(list(points), [100 * v for v in points.values()], label=e.method, **style)
            second = dashed(e.metrics) if dashed else None
            if second and second[1]:
                label, more = second
                xs |= set(more)
                ys += more.values()
                ax.plot(list(more), [100 * v for v in more.values()], ls="--",
                        label=f"{e.method} {label}", **{**style, "ms": size * 0.8, "lw": style["lw"] * 0.7})
            if mark_mean and num(e.metrics.get("mean_tokens")):
                ax.axvline(e.metrics["mean_tokens"], color=colours[e.method], ls=":", lw=1, alpha=0.7)
        _log2_axis(ax, sorted(xs))
        if ys and not any(ys):
            ax.text(0.5, 0.55, "every value is 0%: the curves lie on the x axis", transform=ax.transAxes,
                    ha="center", fontsize=8, color="#6b7280")
        ax.set(title=split, xlabel=xlabel, ylabel=ylabel)
        ax.set_ylim(bottom=-2, top=min(102, max(ax.get_ylim()[1], 5)))  # below 0: a curve at 0% stays off the frame
        if ax.lines:
            extra = {"title": "dotted: mean tokens", "title_fontsize": 7} if mark_mean else {}
            ax.legend(fontsize=8, loc="upper left", **extra)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def plot_pass_at_k(entries: Sequence[EvalEntry], path: str | Path) -> None:
    """pass@k against k (log2 axis), one line per method, one panel per split."""
    _plot(entries, path, "pass@k: a problem counts if any of k samples is right", _pass_curve,
          "k (samples)", "pass@k (%)")


def plot_token_budget(entries: Sequence[EvalEntry], path: str | Path) -> None:
    """pass@1 (solid) and the largest pass@k (dashed) against the token budget B (log2 axis), from
    `pass_at_k_budget`; dotted lines mark each method's mean tokens."""

    def top_k(m: dict[str, Any]) -> tuple[str, dict[int, float]] | None:
        k = budget_top_k(m)
        return None if k is None else (f"pass@{k}", budget_curve(m, k))

    _plot(entries, path, "pass@k at a token budget B: each sample as if sampled with at most B tokens",
          budget_curve, "token budget B", "pass@1 (solid), pass@k (dashed), %", mark_mean=True, dashed=top_k)


# The RL curves: (log key, panel title, as a percentage)
_RL_PANELS = (("reward", "mean reward", True), ("all_fail", "groups where every rollout fails", True),
              ("mean_length", "mean rollout length (tokens)", False))


def plot_rl(logs: dict[str, list[dict[str, Any]]], path: str | Path) -> None:
    """The RL methods' training: mean reward, share of all-fail groups and rollout length per rollout batch."""
    from matplotlib import colormaps

    fig, axes = _figure(len(_RL_PANELS), "RL training, per rollout batch (nurl starts where it leaves grpo's run)")
    cmap = colormaps["tab10"]
    for i, (method, lines) in enumerate(logs.items()):
        xs = [r.get("batch", r["step"]) for r in lines]
        for ax, (key, title, percent) in zip(axes, _RL_PANELS):
            ax.plot(xs, [(100 if percent else 1) * r[key] for r in lines], label=method, color=cmap(i % 10), lw=1.5)
            ax.set_title(title + (" (%)" if percent else ""), fontsize=10)
            ax.set_xlabel("rollout batch")
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.savefig(path)
