"""`dail report`: compare evaluations (tables, pass@k and token-budget plots) and view traces.

Inputs are eval directories (holding `metrics.json`, as `dail eval` writes it) or run directories
(`runs/NAME/`), read as follows:

* `RUN/eval/<method>/<split>/metrics.json` -- one method per directory (base, sft-expert, dail...);
* `RUN/eval/<split>/metrics.json` -- the run itself is the method (named after `RUN`);
* an eval directory passed directly is placed by the same rule from its path, and is otherwise
  the method, its split being the data set named in its config.

A `label` in metrics.json always names the method. Outputs, under `out`: `report.md` and a
self-contained `report.html` (one comparison table per split, plots inlined), `plots/pass_at_k.png`,
`plots/token_budget.png`, and `traces.html` when expansion traces exist: every token coloured by
its source (learner or privileged) and, when per-token margins `l_P - l_N` are known (a
diagnostics JSONL, or computed from a model given explicitly), by that margin.

This module does not sample, grade or recompute pass@k: the numbers are the ones in metrics.json.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import DataError, Problem, Trace, atomic_write_text, iter_jsonl, read_problems, read_traces

__all__ = ["EvalEntry", "TraceSource", "find_evals", "find_traces", "markdown_report", "html_report",
           "plot_pass_at_k", "plot_token_budget", "traces_html", "read_margins", "compute_margins", "run"]

log = logging.getLogger(__name__)

SOURCE_COLOURS = {"L": "#dbeafe", "P": "#fdba74"}  # learner: pale blue; privileged: orange
SOURCE_NAMES = {"L": "learner", "P": "privileged"}


@dataclass
class EvalEntry:
    """One evaluation: a method on a split, with its metrics.json."""

    method: str
    split: str
    path: Path
    metrics: dict[str, Any]
    run: str | None = None


@dataclass
class TraceSource:
    """A traces.jsonl to show, with what helps show it (all optional)."""

    name: str
    traces: Path
    diagnostics: Path | None = None
    model: str | None = None  # model name from the run config: its tokenizer splits the tokens
    problems: Path | None = None  # problems with waypoints, for computing margins from a model
    prompts: dict | None = None  # the prompt templates expand used, for the same


# --------------------------------------------------------------------------- finding inputs


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, None, f"invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise DataError(path, None, None, "expected a JSON object")
    return obj


def _data_name(metrics: dict[str, Any]) -> str:
    data = str((metrics.get("config") or {}).get("data") or "")
    if not data:
        return "eval"
    return Path(data).stem if data.endswith((".jsonl", ".json")) else Path(data).name


def _entry(path: Path, method: str, split: str, run: str | None) -> EvalEntry:
    metrics = _read_metrics(path / "metrics.json")
    label = metrics.get("label")
    return EvalEntry(str(label) if label else method, split, path / "metrics.json", metrics, run)


def _from_eval_dir(d: Path) -> EvalEntry:
    d = d.resolve()
    if d.parent.name == "eval":  # RUN/eval/SPLIT
        return _entry(d, d.parent.parent.name, d.name, d.parent.parent.name)
    if d.parent.parent.name == "eval":  # RUN/eval/METHOD/SPLIT
        return _entry(d, d.parent.name, d.name, d.parent.parent.parent.name)
    entry = _entry(d, d.name, "", None)
    entry.split = _data_name(entry.metrics)
    return entry


def _from_run_dir(run: Path) -> list[EvalEntry]:
    entries = []
    for d in sorted(p for p in (run / "eval").iterdir() if p.is_dir()):
        if (d / "metrics.json").is_file():
            entries.append(_entry(d, run.resolve().name, d.name, run.resolve().name))
            continue
        for s in sorted(p for p in d.iterdir() if p.is_dir()):
            if (s / "metrics.json").is_file():
                entries.append(_entry(s, d.name, s.name, run.resolve().name))
    return entries


def find_evals(inputs: Iterable[str | Path]) -> list[EvalEntry]:
    """Every evaluation under the inputs, methods named uniquely (clashes get the run's name)."""
    entries: list[EvalEntry] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_file() and p.name == "metrics.json":
            p = p.parent
        if (p / "eval").is_dir():  # first: a run directory may hold a summary metrics.json too
            entries.extend(_from_run_dir(p))
        elif (p / "metrics.json").is_file():
            entries.append(_from_eval_dir(p))
        elif any(p.glob("traces*.jsonl")):
            continue  # a run that has expanded but not evaluated yet: traces only
        elif not p.exists():
            raise DataError(p, None, None, "no such file or directory")
        else:
            raise DataError(p, None, None, "neither an eval directory (metrics.json) nor a run directory (eval/)")
    unique: dict[Path, EvalEntry] = {}
    for e in entries:
        unique.setdefault(e.path.resolve(), e)
    entries = list(unique.values())
    clashes = Counter((e.method, e.split) for e in entries)
    for e in entries:
        if clashes[(e.method, e.split)] > 1:
            e.method = f"{e.run}/{e.method}" if e.run and e.run != e.method else str(e.path.parent)
    return entries


def find_traces(inputs: Iterable[str | Path], traces: str | Path | None = None,
                diagnostics: str | Path | None = None) -> list[TraceSource]:
    """The traces files to show: `traces` if given, else each run directory's traces.jsonl."""
    if traces is not None:
        found = [_trace_source(Path(traces).parent, Path(traces))]
    else:  # traces.jsonl, and traces-star.jsonl of the STaR baseline when the run has one
        found = [_trace_source(Path(p), t) for p in inputs
                 for t in sorted(Path(p).glob("traces*.jsonl"), key=lambda t: (t.name != "traces.jsonl", t.name))]
    if diagnostics is not None:
        for src in found:
            src.diagnostics = Path(diagnostics)
    return found


def _trace_source(run: Path, traces: Path) -> TraceSource:
    diag = next((p for p in (run / "diagnostics.jsonl", run / "adapter" / "diagnostics.jsonl") if p.is_file()), None)
    problems = run / "waypoints.jsonl"
    # expand saves its config beside its output (traces.config.toml); a run has config.toml.
    tree = _toml(traces.with_name(traces.stem + ".config.toml")) or _toml(run / "config.toml")
    return TraceSource(name=f"{run.resolve().name}/{traces.name}", traces=traces, diagnostics=diag,
                       model=tree.get("model") if isinstance(tree.get("model"), str) else None,
                       problems=problems if problems.is_file() else None, prompts=tree.get("prompts"))


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


# --------------------------------------------------------------------------- tables


def _ordered(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _int_keyed(table: Any) -> dict[int, Any]:
    """A JSON object keyed by integers-as-strings, as a dict keyed by int (bad keys dropped)."""
    if not isinstance(table, dict):
        return {}
    return dict(sorted((int(k), v) for k, v in table.items() if str(k).isdigit()))


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _accuracy(m: dict[str, Any]) -> float | None:
    return _num(m.get("accuracy")) if "accuracy" in m else _num(_int_keyed(m.get("pass_at_k")).get(1))


def _budget_curve(m: dict[str, Any], k: int = 1) -> dict[int, float]:
    """pass@k at each token budget: `pass_at_k_budget[b][k]` (pass@1 also from `accuracy_at_budget`)."""
    curve = {b: _num(_int_keyed(v).get(k)) for b, v in _int_keyed(m.get("pass_at_k_budget")).items()}
    if k == 1 and not any(v is not None for v in curve.values()):
        curve = {b: _num(v) for b, v in _int_keyed(m.get("accuracy_at_budget")).items()}
    return {b: v for b, v in curve.items() if v is not None}


def _budget_top_k(m: dict[str, Any]) -> int | None:
    """The largest k > 1 whose pass@k is known at every token budget (None when there is none)."""
    tables = [_int_keyed(v) for v in _int_keyed(m.get("pass_at_k_budget")).values()]
    common = set.intersection(*(set(t) for t in tables)) if tables else set()
    return max((k for k in common if k > 1), default=None)


# How a budget is applied, for captions: the metric of `dail eval` (DESIGN.md, "Evaluation").
BUDGET_RULE = ("each sample graded as if sampled with at most B tokens: a sample cut at B is graded on its "
               "first B tokens, with a forced answer when they hold none")


def _columns(entries: Sequence[EvalEntry]) -> list[tuple[str, str, Any]]:
    """(header, kind, getter) of the comparison table; kind says what 'best' means."""
    ks = sorted({k for e in entries for k in _int_keyed(e.metrics.get("pass_at_k"))})
    cols: list[tuple[str, str, Any]] = [
        (f"pass@{k}", "max", lambda m, k=k: _num(_int_keyed(m.get("pass_at_k")).get(k))) for k in ks
    ]
    cols += [
        ("accuracy", "max", _accuracy),
        ("mean tokens", "min", lambda m: _num(m.get("mean_tokens"))),
        ("tokens (correct)", "min", lambda m: _num(m.get("mean_tokens_correct"))),
        ("problems", "", lambda m: _num(m.get("n_problems"))),
        ("samples", "", lambda m: _num(m.get("n_samples"))),
    ]
    return cols


def _fmt(header: str, v: float | None) -> str:
    if v is None:
        return "–"
    if header.startswith("pass@") or header == "accuracy":
        return f"{100 * v:.1f}"
    if header in ("problems", "samples"):
        return f"{int(v)}"
    return f"{v:.1f}"


Row = tuple[str, list[tuple[str, bool]]]  # (method, [(cell text, is best)])


def _split_tables(entries: Sequence[EvalEntry]) -> list[tuple[str, list[str], list[Row]]]:
    """Per split: its name, the column headers, and the rows."""
    tables = []
    for split in _ordered(e.split for e in entries):
        group = [e for e in entries if e.split == split]
        cols = _columns(group)
        values = [[get(e.metrics) for _, _, get in cols] for e in group]
        best = []
        for j, (_, kind, _) in enumerate(cols):
            present = [row[j] for row in values if row[j] is not None]
            # No bold where every method ties: it would mark nothing.
            best.append((max if kind == "max" else min)(present) if kind and len(set(present)) > 1 else None)
        rows = [(e.method, [(_fmt(cols[j][0], v), v is not None and v == best[j]) for j, v in enumerate(row)])
                for e, row in zip(group, values)]
        tables.append((split, [c[0] for c in cols], rows))
    return tables


def _budget_table(entries: Sequence[EvalEntry], split: str) -> tuple[list[int], list[tuple[str, list[str]]]]:
    """Budgets and rows of the budget table: per method its pass@1 and its largest pass@k at each budget."""
    group = [e for e in entries if e.split == split]
    budgets = sorted({b for e in group for b in _budget_curve(e.metrics)})
    rows = []
    for e in group:
        curve = _budget_curve(e.metrics)
        rows.append((f"{e.method} · pass@1", [_fmt("accuracy", curve.get(b)) for b in budgets]))
        top = _budget_top_k(e.metrics)
        if top is not None:
            curve = _budget_curve(e.metrics, top)
            rows.append((f"{e.method} · pass@{top}", [_fmt("accuracy", curve.get(b)) for b in budgets]))
    return budgets, rows


def _md_cell(text: str) -> str:
    # Markdown renders inline HTML: a method named "<b>" must show as text.
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def markdown_report(entries: Sequence[EvalEntry]) -> str:
    """The comparison as Markdown: one table per split (percentages; best in bold)."""
    lines = ["# dail report", ""]
    if not entries:
        return "\n".join(lines + ["No evaluations found.", ""])
    lines += ["pass@k and accuracy in %; tokens are generated tokens per sample; best of each column in bold.", ""]
    for split, headers, rows in _split_tables(entries):
        lines += [f"## {_md_cell(split)}", "", "| method | " + " | ".join(headers) + " |",
                  "|---|" + "---:|" * len(headers)]
        for method, cells in rows:
            shown = [f"**{t}**" if best else t for t, best in cells]
            lines.append(f"| {_md_cell(method)} | " + " | ".join(shown) + " |")
        budgets, brows = _budget_table(entries, split)
        if budgets:
            lines += ["", f"pass@k (%) at a token budget B ({BUDGET_RULE}):", "",
                      "| method | " + " | ".join(str(b) for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
            lines += [f"| {_md_cell(m)} | " + " | ".join(cells) + " |" for m, cells in brows]
        lines.append("")
    lines += ["## Sources", ""] + [f"- {_md_cell(e.method)} / {_md_cell(e.split)}: `{e.path}`" for e in entries]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots


def _colours(entries: Sequence[EvalEntry]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(_ordered(e.method for e in entries))}


def _figure(n_panels: int, title: str):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    fig = Figure(figsize=(0.5 + 4.3 * n_panels, 4.0), layout="constrained", dpi=110)
    fig.suptitle(title, fontsize=11)
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def _log2_axis(ax, ticks: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ticks), [str(t) for t in ticks])
    ax.minorticks_off()
    ax.grid(alpha=0.3)


def _pass_curve(m: dict[str, Any]) -> dict[int, float]:
    pk = {k: _num(v) for k, v in _int_keyed(m.get("pass_at_k")).items()}
    return {k: v for k, v in pk.items() if v is not None}


def _plot(entries: Sequence[EvalEntry], path: str | Path, title: str, curve, xlabel: str, ylabel: str,
          mark_mean: bool = False, dashed=None) -> None:
    """One panel per split, one line per method, log2 x axis ticked at the measured points.

    `dashed(metrics) -> (label, points) | None` adds a second, dashed line per method.
    """
    splits = _ordered(e.split for e in entries) or ["(none)"]
    colours = _colours(entries)
    fig, axes = _figure(len(splits), title)
    for ax, split in zip(axes, splits):
        xs: set[int] = set()
        for e in (e for e in entries if e.split == split):
            points = curve(e.metrics)
            if not points:
                continue
            xs |= set(points)
            ax.plot(list(points), [100 * v for v in points.values()], marker="o", ms=4, lw=1.8,
                    color=colours[e.method], label=e.method)
            second = dashed(e.metrics) if dashed else None
            if second and second[1]:
                label, more = second
                xs |= set(more)
                ax.plot(list(more), [100 * v for v in more.values()], marker="s", ms=3, lw=1.4, ls="--",
                        color=colours[e.method], label=f"{e.method} {label}")
            if mark_mean and _num(e.metrics.get("mean_tokens")):
                ax.axvline(e.metrics["mean_tokens"], color=colours[e.method], ls=":", lw=1, alpha=0.7)
        _log2_axis(ax, sorted(xs))
        ax.set(title=split, xlabel=xlabel, ylabel=ylabel)
        ax.set_ylim(bottom=0, top=min(101, max(ax.get_ylim()[1], 5)))
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
        k = _budget_top_k(m)
        return None if k is None else (f"pass@{k}", _budget_curve(m, k))

    _plot(entries, path, "pass@k at a token budget B: each sample as if sampled with at most B tokens",
          _budget_curve, "token budget B", "pass@1 (solid), pass@k (dashed), %", mark_mean=True, dashed=top_k)


# --------------------------------------------------------------------------- report.html

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2937;max-width:1400px;margin:0 auto;
 padding:1.5rem}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #e5e7eb}
.meta{color:#6b7280;font-size:.9rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.6rem 0;font-variant-numeric:tabular-nums;font-size:.92rem}
th,td{padding:.25rem .55rem;border-bottom:1px solid #e5e7eb;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f9fafb;font-weight:600}
td.best{font-weight:700;color:#065f46}
img{max-width:100%;border:1px solid #e5e7eb;border-radius:4px;margin:.5rem 0}
code{background:#f3f4f6;padding:0 .25rem;border-radius:3px}
"""


_BEST = ' class="best"'


def _html_table(headers: Sequence[str], rows: Sequence[tuple[str, Sequence[tuple[str, bool]]]]) -> str:
    e = html.escape
    head = "<tr><th>method</th>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr>"
    body = "".join(
        f"<tr><td>{e(m)}</td>" + "".join(f"<td{_BEST if b else ''}>{e(t)}</td>" for t, b in cells) + "</tr>"
        for m, cells in rows
    )
    return f"<div class=\"scroll\"><table><thead>{head}</thead><tbody>{body}</tbody></table></div>"


def html_report(entries: Sequence[EvalEntry], plots: dict[str, Path], traces_link: str | None = None) -> str:
    """The comparison as one self-contained HTML page (plots inlined as PNG data)."""
    e = html.escape
    parts = ["<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>dail report</title>",
             f"<style>{_CSS}</style></head><body><h1>dail report</h1>"]
    methods, splits = _ordered(x.method for x in entries), _ordered(x.split for x in entries)
    parts.append(f"<p class=\"meta\">{len(methods)} method(s) × {len(splits)} split(s). pass@k and accuracy in %; "
                 "tokens are generated tokens per sample; best of each column in bold.</p>")
    if traces_link:
        parts.append(f"<p><a href=\"{e(traces_link)}\">Expansion traces viewer</a></p>")
    if not entries:
        parts.append("<p>No evaluations found.</p>")
    for split, headers, rows in _split_tables(entries):
        parts += [f"<h2>{e(split)}</h2>", _html_table(headers, rows)]
        budgets, brows = _budget_table(entries, split)
        if budgets:
            parts.append(f"<p class=\"meta\">pass@k (%) at a token budget B ({html.escape(BUDGET_RULE)})</p>")
            unmarked = [(m, [(c, False) for c in cells]) for m, cells in brows]
            parts.append(_html_table([str(b) for b in budgets], unmarked))
    for title, path in plots.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts += [f"<h2>{e(title)}</h2>", f"<img alt=\"{e(title)}\" src=\"data:image/png;base64,{data}\">"]
    parts.append("<h2>Sources</h2><ul>")
    parts += [f"<li>{e(x.method)} / {e(x.split)}: <code>{e(str(x.path))}</code></li>" for x in entries]
    parts.append("</ul></body></html>\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- traces.html


def read_margins(path: str | Path) -> dict[tuple[str, int], list[float]]:
    """Per-token `margin` (l_P - l_N) lists of a diagnostics JSONL, keyed by (problem_id, sample)."""
    margins = {}
    for lineno, obj in iter_jsonl(path):
        m = obj.get("margin")
        if not isinstance(m, list) or "problem_id" not in obj:
            continue  # diagnostics rows of other kinds (per-step losses...) share the file
        if not all(isinstance(x, (int, float)) for x in m):
            raise DataError(path, lineno, "margin", "expected a list of numbers")
        margins[(str(obj["problem_id"]), int(obj.get("sample", 0)))] = [float(x) for x in m]
    return margins


def compute_margins(model, tokenizer, traces: Sequence[Trace], problems: dict[str, Problem],
                    templates=None) -> dict[tuple[str, int], list[float]]:
    """l_P - l_N of each trace token from a model (privileged and negative prompts, no adapter).

    Slow and simple: two forwards per trace, one trace at a time. Traces whose problem lacks a
    solution or waypoints are left out.
    """
    from contextlib import nullcontext

    import torch

    from .config import PromptConfig
    from .prompts import render

    templates = templates or PromptConfig()
    device = next(model.parameters()).device
    out = {}
    for t in traces:
        p = problems.get(t.problem_id)
        if p is None or not p.solution or not p.waypoints or not t.token_ids:
            continue
        lps = []
        for role in ("privileged", "negative"):
            prompt = render(tokenizer, role, p, templates)
            ids = torch.tensor([prompt + t.token_ids], device=device)
            # Both references are the base weights: an adapter, if any, is switched off.
            reference = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
            with torch.no_grad(), reference:
                logits = model(ids).logits[0, len(prompt) - 1 : -1].float()  # [T, V]
            lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, len(prompt):, None])[:, 0]  # [T]
            lps.append(lp)
        out[(t.problem_id, t.sample)] = (lps[0] - lps[1]).tolist()
    return out


def _approx_pieces(text: str, n_tokens: int) -> list[str]:
    """Without a tokenizer: share the text out over the tokens by position (an approximation)."""
    if n_tokens == 0:
        return []
    cuts = [round(i * len(text) / n_tokens) for i in range(n_tokens + 1)]
    return [text[cuts[i]:cuts[i + 1]] for i in range(n_tokens)]


def _margin_colour(m: float, scale: float) -> str:
    a = min(1.0, abs(m) / scale) * 0.85
    rgb = "22,163,74" if m >= 0 else "220,38,38"  # green: the full solution explains it; red: waypoints do
    return f"rgba({rgb},{a:.2f})"


_TRACE_CSS = """
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2937;max-width:1100px;margin:0 auto;
 padding:1.2rem}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.4rem 0 .3rem}
.meta{color:#4b5563;font-size:.9rem;margin:.2rem 0}
.legend span.sw{display:inline-block;padding:0 .45rem;border-radius:3px;margin-right:.6rem;border:1px solid #d1d5db}
.grad{display:inline-block;width:140px;height:.8rem;vertical-align:middle;border:1px solid #d1d5db;
 background:linear-gradient(90deg,rgba(220,38,38,.85),rgba(255,255,255,0),rgba(22,163,74,.85))}
input.mode{display:none}
.modes label{cursor:pointer;padding:.15rem .6rem;border:1px solid #9ca3af;border-radius:4px;margin-right:.4rem}
#by-source:checked ~ header label[for=by-source],
#by-margin:checked ~ header label[for=by-margin]{background:#1f2937;color:#fff}
details{border:1px solid #e5e7eb;border-radius:6px;margin:.6rem 0;background:#fff}
summary{cursor:pointer;padding:.35rem .6rem;background:#f9fafb;border-radius:6px}
.v{font-weight:700;padding:0 .4rem;border-radius:3px;margin-right:.4rem}
.v.kept{background:#d1fae5;color:#065f46}.v.rejected{background:#fee2e2;color:#991b1b}
pre.text{white-space:pre-wrap;word-wrap:break-word;font:13px/1.6 ui-monospace,SFMono-Regular,Menlo,monospace;
 margin:0;padding:.6rem}
.t{border-radius:2px}.t.L{background:#dbeafe}.t.P{background:#fdba74}
#by-margin:checked ~ main .t{background:var(--m,transparent)}
#by-margin:checked ~ main .t.P{box-shadow:inset 0 -2px #ea580c}
"""


def _trace_block(t: Trace, pieces: list[str], margin: list[float] | None, scale: float, open_: bool) -> str:
    e = html.escape
    n = len(t.token_ids)
    acc = t.source.count("L") / n if n else 0.0
    verdict = ("<span class=\"v kept\">kept</span>" if t.kept
               else f"<span class=\"v rejected\">rejected: {e(t.reject_reason or 'unknown')}</span>")
    bits = [f"<b>{e(t.problem_id)}</b> · sample {t.sample}", f"{n} tokens", f"acceptance {100 * acc:.1f}%",
            f"finish {e(t.finish)}", f"answer {e(t.answer) if t.answer is not None else '–'}"]
    if margin is not None:
        bits.append(f"mean l_P − l_N {sum(margin) / max(1, len(margin)):+.2f}")
    spans = []
    for i, piece in enumerate(pieces):
        if not piece:
            continue  # part of a character that a later token completes
        src = t.source[i]
        title = (f"#{i} id {t.token_ids[i]} · {SOURCE_NAMES[src]} · lp_L {t.logprob_learner[i]:.2f}"
                 f" · lp_P {t.logprob_privileged[i]:.2f}")
        style = ""
        if margin is not None:
            title += f" · l_P−l_N {margin[i]:+.2f}"
            style = f" style=\"--m:{_margin_colour(margin[i], scale)}\""
        spans.append(f"<span class=\"t {src}\" title=\"{e(title)}\"{style}>{e(piece)}</span>")
    return (f"<details{' open' if open_ else ''}><summary>{verdict}{' · '.join(bits)}</summary>"
            f"<pre class=\"text\">{''.join(spans)}</pre></details>")


def _text_pieces(t: Trace, tokenizer) -> list[str]:
    """Per-token text: exact with a tokenizer, else shared out by position."""
    if tokenizer is not None:
        from .grading import token_pieces

        return token_pieces(tokenizer, t.token_ids)
    # Without token boundaries a run of same-source tokens still reads right in bulk.
    return _approx_pieces(t.text, len(t.token_ids))


def traces_html(sections: Sequence[tuple[str, Path, Sequence[Trace], dict, Any]], max_traces: int = 100) -> str:
    """The trace viewer page: per section (name, path, traces, margins, tokenizer)."""
    e = html.escape
    all_margins = [abs(x) for _, _, _, m, _ in sections for v in m.values() for x in v]
    # Colour scale: the 95th percentile of |margin|, so a few extreme tokens do not wash out the rest.
    scale = max(0.5, sorted(all_margins)[int(0.95 * (len(all_margins) - 1))]) if all_margins else 1.0
    body = []
    for name, path, traces, margins, tokenizer in sections:
        n_tok = sum(len(t.token_ids) for t in traces)
        n_l = sum(t.source.count("L") for t in traces)
        kept = sum(t.kept for t in traces)
        reasons = Counter(t.reject_reason or "unknown" for t in traces if not t.kept)
        shown = traces[:max_traces]
        exact = tokenizer is not None
        summary = [f"{len(traces)} traces: {kept} kept, {len(traces) - kept} rejected"
                   + (" (" + ", ".join(f"{r}: {c}" for r, c in reasons.most_common()) + ")" if reasons else ""),
                   f"acceptance (learner tokens) {100 * n_l / max(1, n_tok):.1f}% of {n_tok} tokens",
                   f"mean {n_tok / max(1, len(traces)):.0f} tokens per trace",
                   "token text: " + ("decoded per token by the tokenizer" if exact
                                     else "approximate (no tokenizer: text shared out over the token count)")]
        if margins:
            with_margin = sum((t.problem_id, t.sample) in margins for t in shown)
            summary.append(f"l_P − l_N for {with_margin} of {len(shown)} shown")
        if len(traces) > len(shown):
            summary.append(f"showing the first {len(shown)}")
        body.append(f"<h2>{e(name)}</h2><p class=\"meta\"><code>{e(str(path))}</code></p>"
                    f"<p class=\"meta\">{e(' · '.join(summary))}</p>")
        for i, t in enumerate(shown):
            pieces = _text_pieces(t, tokenizer)
            margin = margins.get((t.problem_id, t.sample))
            if margin is not None and len(margin) != len(t.token_ids):
                log.warning("margin of %s/%d has %d values for %d tokens; ignored",
                            t.problem_id, t.sample, len(margin), len(t.token_ids))
                margin = None
            body.append(_trace_block(t, pieces, margin, scale, open_=i < 10))
    has_margins = bool(all_margins)
    legend = ("<p class=\"legend\">"
              f"<span class=\"sw\" style=\"background:{SOURCE_COLOURS['L']}\">learner</span>"
              f"<span class=\"sw\" style=\"background:{SOURCE_COLOURS['P']}\">privileged</span>")
    if has_margins:
        legend += (f" l_P − l_N: −{scale:.1f} <span class=\"grad\"></span> +{scale:.1f} "
                   "(green: only the full solution explains the token; red: the waypoints favour it too; "
                   "in this mode privileged tokens are underlined)")
    legend += " · hover a token for its id and log-probs</p>"
    modes = ("<p class=\"modes\">colour by: <label for=\"by-source\">source</label>"
             "<label for=\"by-margin\">l_P − l_N</label></p>") if has_margins else ""
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>dail traces</title>"
            f"<style>{_TRACE_CSS}</style></head><body>"
            "<input class=\"mode\" type=\"radio\" name=\"mode\" id=\"by-source\" checked>"
            "<input class=\"mode\" type=\"radio\" name=\"mode\" id=\"by-margin\">"
            f"<header><h1>Expansion traces</h1>{legend}{modes}</header>"
            f"<main>{''.join(body)}</main></body></html>\n")


def _load_tokenizer(spec: Any, fallback_name: str | None):
    """A tokenizer object from an object, a model name, or the run's model; None if unavailable."""
    if spec is not None and not isinstance(spec, (str, Path)):
        return spec
    name = str(spec) if spec is not None else fallback_name
    if name is None:
        return None
    try:
        from .models import load_tokenizer

        return load_tokenizer(name)
    except Exception as err:  # a missing tokenizer only makes the viewer approximate
        log.warning("no tokenizer for %s (%s); token text is approximate", name, err)
        return None


def _write_traces(sources: Sequence[TraceSource], path: Path, tokenizer, model, problems, max_traces: int) -> None:
    sections = []
    for src in sources:
        traces = read_traces(src.traces, kept_only=False)
        tok = _load_tokenizer(tokenizer, src.model)
        margins = read_margins(src.diagnostics) if src.diagnostics else {}
        if not margins and model is not None:
            if isinstance(model, (str, Path)):
                from .models import load

                model, loaded = load(str(model))
                tok = tok if tok is not None else loaded
            problems_path = problems or src.problems
            if problems_path is None or tok is None:
                log.warning("margins not computed: they need problems with waypoints and a tokenizer")
            else:
                from .config import PromptConfig

                table = {p.id: p for p in read_problems(problems_path)}
                templates = PromptConfig.model_validate(src.prompts) if src.prompts else None
                margins = compute_margins(model, tok, traces[:max_traces], table, templates)
        sections.append((src.name, src.traces, traces, margins, tok))
    atomic_write_text(path, traces_html(sections, max_traces))


# --------------------------------------------------------------------------- the stage


def run(inputs: list[str], out: str, *, traces: str | None = None, diagnostics: str | None = None,
        tokenizer: Any = None, model: Any = None, problems: str | None = None, max_traces: int = 100) -> dict:
    """Write report.md, report.html, plots/*.png and (when traces exist) traces.html into `out`.

    `traces`/`diagnostics` name files explicitly (else found in run directories); `tokenizer`
    (object or model name) splits trace text into tokens; `model` (object or name) with
    `problems` (JSONL with waypoints) computes margins when no diagnostics file has them.
    """
    out_dir = Path(out)
    entries = find_evals(inputs)
    sources = find_traces(inputs, traces, diagnostics)
    if not entries and not sources:
        raise DataError(", ".join(map(str, inputs)) or "(no inputs)", None, None,
                        "no metrics.json or traces.jsonl found")
    plots: dict[str, Path] = {}
    if entries:
        plots = {"pass@k": out_dir / "plots" / "pass_at_k.png", "token budget": out_dir / "plots" / "token_budget.png"}
        plot_pass_at_k(entries, plots["pass@k"])
        plot_token_budget(entries, plots["token budget"])
    traces_path = None
    if sources:
        traces_path = out_dir / "traces.html"
        _write_traces(sources, traces_path, tokenizer, model, problems, max_traces)
    atomic_write_text(out_dir / "report.md", markdown_report(entries))
    atomic_write_text(out_dir / "report.html", html_report(entries, plots, "traces.html" if traces_path else None))
    return {
        "out": str(out_dir),
        "report_md": str(out_dir / "report.md"),
        "report_html": str(out_dir / "report.html"),
        "plots": [str(p) for p in plots.values()],
        "traces_html": str(traces_path) if traces_path else None,
        "entries": [{"method": e.method, "split": e.split, "metrics": str(e.path)} for e in entries],
    }
