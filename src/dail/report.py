"""`dail report`: compare evaluations (tables, pass@k and token-budget plots), link the trace viewer.

Inputs are eval directories (holding `metrics.json`, as `dail eval` writes it) or run directories
(`runs/NAME/`), read as follows:

* `RUN/eval/<method>/<split>/metrics.json` -- one method per directory (base, sft-expert, dail...);
* `RUN/eval/<split>/metrics.json` -- the run itself is the method (named after `RUN`);
* an eval directory passed directly is placed by the same rule from its path, and is otherwise
  the method, its split being the data set named in its config (`dail.rundir.split_name`).

A `label` in metrics.json always names the method. Outputs, under `out`: `report.md` and a
self-contained `report.html` (one comparison table per split, plots inlined), `plots/pass_at_k.png`,
`plots/token_budget.png`, and, when expansion traces exist, `traces.html` (`dail.viewer`).

This module does not sample, grade or recompute pass@k: the numbers are the ones in metrics.json.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import textwrap
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import DataError, atomic_write_text
from .rundir import EvalDir, ReportDir, RunDir, split_name
from .viewer import find_traces, write_traces

__all__ = ["EvalEntry", "TableRow", "find_evals", "markdown_report", "html_report", "plot_pass_at_k",
           "plot_token_budget", "run"]


@dataclass
class EvalEntry:
    """One evaluation: a method on a split, with its metrics.json."""

    method: str
    split: str
    path: Path
    metrics: dict[str, Any]
    run: str | None = None


# --------------------------------------------------------------------------- finding inputs


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, None, f"invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise DataError(path, None, None, "expected a JSON object")
    return obj


def _entry(path: Path, method: str, split: str, run: str | None) -> EvalEntry:
    file = EvalDir(path).metrics
    metrics = _read_metrics(file)
    label = metrics.get("label")
    return EvalEntry(str(label) if label else method, split, file, metrics, run)


def _from_eval_dir(d: Path) -> EvalEntry:
    d = d.resolve()
    if d.parent.name == "eval":  # RUN/eval/SPLIT
        return _entry(d, d.parent.parent.name, d.name, d.parent.parent.name)
    if d.parent.parent.name == "eval":  # RUN/eval/METHOD/SPLIT
        return _entry(d, d.parent.name, d.name, d.parent.parent.parent.name)
    entry = _entry(d, d.name, "", None)
    data = str((entry.metrics.get("config") or {}).get("data") or "")
    entry.split = split_name(data) if data else "eval"
    return entry


def _from_run_dir(run: Path) -> list[EvalEntry]:
    entries = []
    for d in sorted(p for p in RunDir(run).eval_root.iterdir() if p.is_dir()):
        if EvalDir(d).metrics.is_file():
            entries.append(_entry(d, run.resolve().name, d.name, run.resolve().name))
            continue
        for s in sorted(p for p in d.iterdir() if p.is_dir()):
            if EvalDir(s).metrics.is_file():
                entries.append(_entry(s, d.name, s.name, run.resolve().name))
    return entries


def _config_methods(run: Path) -> list[str]:
    """The `methods` of a run's config.toml, in the order the user listed them ([] when absent)."""
    try:
        methods = tomllib.loads(RunDir(run).config.read_text(encoding="utf-8")).get("methods")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    return [str(m) for m in methods] if isinstance(methods, list) else []


def find_evals(inputs: Iterable[str | Path]) -> list[EvalEntry]:
    """Every evaluation under the inputs, methods named uniquely (clashes get the run's name).

    Methods of a run directory come in its config's `methods` order (base, sft-expert, dail, ...),
    not alphabetically; others follow in the order found.
    """
    entries: list[EvalEntry] = []
    order: list[str] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_file() and p.name == EvalDir.METRICS:
            p = p.parent
        if RunDir(p).eval_root.is_dir():  # first: a run directory may hold a summary metrics.json too
            entries.extend(_from_run_dir(p))
            order += [m for m in _config_methods(p) if m not in order]
        elif EvalDir(p).metrics.is_file():
            entries.append(_from_eval_dir(p))
        elif RunDir(p).traces_files():
            continue  # a run that has expanded but not evaluated yet: traces only
        elif not p.exists():
            raise DataError(p, None, None, "no such file or directory")
        else:
            raise DataError(p, None, None, "neither an eval directory (metrics.json) nor a run directory (eval/)")
    unique: dict[Path, EvalEntry] = {}
    for e in entries:
        unique.setdefault(e.path.resolve(), e)
    entries = list(unique.values())
    rank = {m: i for i, m in enumerate(order)}
    entries.sort(key=lambda e: rank.get(e.method, len(rank)))  # stable: unlisted methods keep their places
    clashes = Counter((e.method, e.split) for e in entries)
    for e in entries:
        if clashes[(e.method, e.split)] > 1:
            e.method = f"{e.run}/{e.method}" if e.run and e.run != e.method else str(e.path.parent)
    return entries


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


# How a budget is applied, for captions: the metric of `dail eval` (docs/method.md, "Evaluation").
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


TableRow = tuple[str, list[tuple[str, bool]]]  # (method, [(cell text, is best)])


def _split_tables(entries: Sequence[EvalEntry]) -> list[tuple[str, list[str], list[TableRow]]]:
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


def _relative(path: Path, base: Path | None) -> str:
    """`path` as seen from the report's directory, so a run moved (or copied) as a whole still reads right."""
    if base is None:
        return str(path)
    return os.path.relpath(Path(path).resolve(), Path(base).resolve())


def markdown_report(entries: Sequence[EvalEntry], base: Path | None = None) -> str:
    """The comparison as Markdown: one table per split (percentages; best in bold); paths relative to `base`."""
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
    lines += ["## Sources", ""] + [f"- {_md_cell(e.method)} / {_md_cell(e.split)}: `{_relative(e.path, base)}`" for e in entries]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots


def _colours(entries: Sequence[EvalEntry]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(_ordered(e.method for e in entries))}


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
            if mark_mean and _num(e.metrics.get("mean_tokens")):
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


def _html_table(headers: Sequence[str], rows: Sequence[TableRow]) -> str:
    e = html.escape
    head = "<tr><th>method</th>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr>"
    body = "".join(
        f"<tr><td>{e(m)}</td>" + "".join(f"<td{_BEST if b else ''}>{e(t)}</td>" for t, b in cells) + "</tr>"
        for m, cells in rows
    )
    return f"<div class=\"scroll\"><table><thead>{head}</thead><tbody>{body}</tbody></table></div>"


def html_report(entries: Sequence[EvalEntry], plots: dict[str, Path], traces_link: str | None = None,
                base: Path | None = None) -> str:
    """The comparison as one self-contained HTML page (plots inlined as PNG data); paths relative to `base`."""
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
    parts += [f"<li>{e(x.method)} / {e(x.split)}: <a href=\"{e(_relative(x.path, base))}\"><code>"
              f"{e(_relative(x.path, base))}</code></a></li>" for x in entries]
    parts.append("</ul></body></html>\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- the stage


def run(inputs: list[str], out: str, *, traces: str | None = None, tokenizer: Any = None,
        max_traces: int = 100) -> dict:
    """Write report.md, report.html, plots/*.png and (when traces exist) traces.html into `out`.

    `traces` names a traces file explicitly (else each run directory's traces*.jsonl are shown);
    `tokenizer` (object or model name) splits trace text into tokens, else each run's model does.
    """
    out_dir = Path(out)
    files = ReportDir(out_dir)
    entries = find_evals(inputs)
    sources = find_traces(inputs, traces)
    if not entries and not sources:
        raise DataError(", ".join(map(str, inputs)) or "(no inputs)", None, None,
                        "no metrics.json or traces.jsonl found")
    plots: dict[str, Path] = {}
    if entries:
        plots = {"pass@k": files.plot("pass_at_k"), "token budget": files.plot("token_budget")}
        plot_pass_at_k(entries, plots["pass@k"])
        plot_token_budget(entries, plots["token budget"])
    traces_path = None
    if sources:
        traces_path = files.traces_html
        write_traces(sources, traces_path, tokenizer, max_traces)
    atomic_write_text(files.markdown, markdown_report(entries, out_dir))
    atomic_write_text(files.html, html_report(entries, plots, traces_path.name if traces_path else None, out_dir))
    return {
        "out": str(out_dir),
        "report_md": str(files.markdown),
        "report_html": str(files.html),
        "plots": [str(p) for p in plots.values()],
        "traces_html": str(traces_path) if traces_path else None,
        "entries": [{"method": e.method, "split": e.split, "metrics": str(e.path)} for e in entries],
    }
