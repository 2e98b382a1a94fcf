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
It owns the tables and the pages; reading the inputs is `dail.report_inputs`, drawing the plots
`dail.report_plots`.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data import DataError, atomic_write_text
from .report_inputs import EvalEntry, budget_curve, budget_top_k, find_evals, find_rl_logs, int_keyed, num, ordered
from .report_plots import plot_pass_at_k, plot_rl, plot_token_budget
from .rundir import ReportDir
from .viewer import find_traces, write_traces

__all__ = ["EvalEntry", "TableRow", "find_evals", "markdown_report", "html_report", "plot_pass_at_k",
           "plot_token_budget", "run"]


# --------------------------------------------------------------------------- tables


def _accuracy(m: dict[str, Any]) -> float | None:
    return num(m.get("accuracy")) if "accuracy" in m else num(int_keyed(m.get("pass_at_k")).get(1))


# How a budget is applied, for captions: the metric of `dail eval` (docs/method.md, "Evaluation").
BUDGET_RULE = ("each sample graded as if sampled with at most B tokens: a sample cut at B is graded on its "
               "first B tokens, with a forced answer when they hold none")


def _columns(entries: Sequence[EvalEntry]) -> list[tuple[str, str, Any]]:
    """(header, kind, getter) of the comparison table; kind says what 'best' means."""
    ks = sorted({k for e in entries for k in int_keyed(e.metrics.get("pass_at_k"))})
    cols: list[tuple[str, str, Any]] = [
        (f"pass@{k}", "max", lambda m, k=k: num(int_keyed(m.get("pass_at_k")).get(k))) for k in ks
    ]
    cols += [
        ("accuracy", "max", _accuracy),
        ("mean tokens", "min", lambda m: num(m.get("mean_tokens"))),
        ("tokens (correct)", "min", lambda m: num(m.get("mean_tokens_correct"))),
        ("problems", "", lambda m: num(m.get("n_problems"))),
        ("samples", "", lambda m: num(m.get("n_samples"))),
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
    for split in ordered(e.split for e in entries):
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
    budgets = sorted({b for e in group for b in budget_curve(e.metrics)})
    rows = []
    for e in group:
        curve = budget_curve(e.metrics)
        rows.append((f"{e.method} · pass@1", [_fmt("accuracy", curve.get(b)) for b in budgets]))
        top = budget_top_k(e.metrics)
        if top is not None:
            curve = budget_curve(e.metrics, top)
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
    methods, splits = ordered(x.method for x in entries), ordered(x.split for x in entries)
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
    if rl_logs := find_rl_logs(inputs):
        plots["RL training"] = files.plot("rl_training")
        plot_rl(rl_logs, plots["RL training"])
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
