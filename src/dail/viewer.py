"""The trace viewer: expansion traces (`traces*.jsonl`) as one self-contained HTML page.

Every token is a span coloured by its source -- learner (L) or privileged (P) -- or, in the second
mode, by how much the two students disagree on it: `lp_P - lp_L`, the privileged student's
log-prob of the token minus the learner's. Both log-probs are in every trace row, so the page
needs no model, only (optionally) the tokenizer that splits the text exactly into tokens; without
one the text is shared out over the tokens by position. Hovering a token shows its id and
log-probs. Each run directory's traces are found by `find_traces`, the tokenizer named by the
config saved beside them.

This module reads traces and writes HTML; it runs no model and computes no loss.
"""

from __future__ import annotations

import html
import logging
import math
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import Trace, atomic_write_text, read_traces
from .rundir import RunDir, config_path

__all__ = ["TraceSource", "find_traces", "traces_html", "write_traces"]

log = logging.getLogger(__name__)

SOURCE_COLOURS = {"L": "#dbeafe", "P": "#fdba74"}  # learner: pale blue; privileged: orange
SOURCE_NAMES = {"L": "learner", "P": "privileged"}


@dataclass
class TraceSource:
    """A traces.jsonl to show, and the model whose tokenizer splits its tokens (when known)."""

    name: str
    traces: Path
    model: str | None = None


def find_traces(inputs: Iterable[str | Path], traces: str | Path | None = None) -> list[TraceSource]:
    """The traces files to show: `traces` if given, else each run directory's traces*.jsonl."""
    if traces is not None:
        return [_trace_source(Path(traces).parent, Path(traces))]
    # traces.jsonl first, then the baselines' traces-psd.jsonl, traces-star.jsonl when the run has them
    return [_trace_source(Path(p), t) for p in inputs for t in RunDir(Path(p)).traces_files()]


def _trace_source(run: Path, traces: Path) -> TraceSource:
    # expand saves its config beside its output (traces.config.toml); a run has config.toml.
    tree = _toml(config_path(traces)) or _toml(RunDir(run).config)
    model = tree.get("model")
    return TraceSource(f"{run.resolve().name}/{traces.name}", traces, model if isinstance(model, str) else None)


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


# --------------------------------------------------------------------------- token text and colour


def _approx_pieces(text: str, n_tokens: int) -> list[str]:
    """Without a tokenizer: share the text out over the tokens by position (an approximation)."""
    if n_tokens == 0:
        return []
    cuts = [round(i * len(text) / n_tokens) for i in range(n_tokens + 1)]
    return [text[cuts[i]:cuts[i + 1]] for i in range(n_tokens)]


def _text_pieces(t: Trace, tokenizer) -> list[str]:
    """Per-token text: exact with a tokenizer, else shared out by position."""
    if tokenizer is not None:
        from .grading import token_pieces  # math-verify comes with it: imported only when used

        return token_pieces(tokenizer, t.token_ids)
    # Without token boundaries a run of same-source tokens still reads right in bulk.
    return _approx_pieces(t.text, len(t.token_ids))


def _deltas(t: Trace) -> list[float]:
    """lp_P - lp_L per token: > 0 where the privileged student finds the token likelier."""
    return [p - q for p, q in zip(t.logprob_privileged, t.logprob_learner)]


def _delta_colour(d: float, scale: float) -> str:
    if not math.isfinite(d):
        return "transparent"
    a = min(1.0, abs(d) / scale) * 0.85
    rgb = "22,163,74" if d >= 0 else "220,38,38"  # green: the privileged student's token; red: the learner's
    return f"rgba({rgb},{a:.2f})"


def _delta_scale(traces: Iterable[Trace]) -> float:
    """The 95th percentile of |lp_P - lp_L|, so that a few extreme tokens do not wash out the rest."""
    values = sorted(abs(d) for t in traces for d in _deltas(t) if math.isfinite(d))
    return max(0.5, values[int(0.95 * (len(values) - 1))]) if values else 1.0


# --------------------------------------------------------------------------- the page

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
#by-delta:checked ~ header label[for=by-delta]{background:#1f2937;color:#fff}
details{border:1px solid #e5e7eb;border-radius:6px;margin:.6rem 0;background:#fff}
summary{cursor:pointer;padding:.35rem .6rem;background:#f9fafb;border-radius:6px}
.v{font-weight:700;padding:0 .4rem;border-radius:3px;margin-right:.4rem}
.v.kept{background:#d1fae5;color:#065f46}.v.rejected{background:#fee2e2;color:#991b1b}
pre.text{white-space:pre-wrap;word-wrap:break-word;font:13px/1.6 ui-monospace,SFMono-Regular,Menlo,monospace;
 margin:0;padding:.6rem}
.t{border-radius:2px}.t.L{background:#dbeafe}.t.P{background:#fdba74}
#by-delta:checked ~ main .t{background:var(--d,transparent)}
#by-delta:checked ~ main .t.P{box-shadow:inset 0 -2px #ea580c}
"""


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else 0.0


def _trace_block(t: Trace, pieces: list[str], scale: float, open_: bool) -> str:
    e = html.escape
    n = len(t.token_ids)
    acc = t.source.count("L") / n if n else 0.0
    deltas = _deltas(t)
    verdict = ("<span class=\"v kept\">kept</span>" if t.kept
               else f"<span class=\"v rejected\">rejected: {e(t.reject_reason or 'unknown')}</span>")
    bits = [f"<b>{e(t.problem_id)}</b> · sample {t.sample}", f"{n} tokens", f"acceptance {100 * acc:.1f}%",
            f"finish {e(t.finish)}", f"answer {e(t.answer) if t.answer is not None else '–'}",
            f"mean lp_P − lp_L {_mean(deltas):+.2f}"]
    spans = []
    for i, piece in enumerate(pieces):
        if not piece:
            continue  # part of a character that a later token completes
        src = t.source[i]
        title = (f"#{i} id {t.token_ids[i]} · {SOURCE_NAMES[src]} · lp_L {t.logprob_learner[i]:.2f}"
                 f" · lp_P {t.logprob_privileged[i]:.2f} · lp_P−lp_L {deltas[i]:+.2f}")
        style = f" style=\"--d:{_delta_colour(deltas[i], scale)}\""
        spans.append(f"<span class=\"t {src}\" title=\"{e(title)}\"{style}>{e(piece)}</span>")
    return (f"<details{' open' if open_ else ''}><summary>{verdict}{' · '.join(bits)}</summary>"
            f"<pre class=\"text\">{''.join(spans)}</pre></details>")


def _summary(traces: Sequence[Trace], shown: int, exact: bool) -> str:
    n_tok = sum(len(t.token_ids) for t in traces)
    n_l = sum(t.source.count("L") for t in traces)
    kept = sum(t.kept for t in traces)
    reasons = Counter(t.reject_reason or "unknown" for t in traces if not t.kept)
    parts = [f"{len(traces)} traces: {kept} kept, {len(traces) - kept} rejected"
             + (" (" + ", ".join(f"{r}: {c}" for r, c in reasons.most_common()) + ")" if reasons else ""),
             f"acceptance (learner tokens) {100 * n_l / max(1, n_tok):.1f}% of {n_tok} tokens",
             f"mean {n_tok / max(1, len(traces)):.0f} tokens per trace",
             f"mean lp_P − lp_L {_mean([d for t in traces for d in _deltas(t)]):+.2f} per token",
             "token text: " + ("decoded per token by the tokenizer" if exact
                               else "approximate (no tokenizer: text shared out over the token count)")]
    if len(traces) > shown:
        parts.append(f"showing the first {shown}")
    return " · ".join(parts)


def traces_html(sections: Sequence[tuple[str, Path, Sequence[Trace], Any]], max_traces: int = 100) -> str:
    """The trace viewer page: per section (name, path, traces, tokenizer or None)."""
    e = html.escape
    scale = _delta_scale(t for _, _, traces, _ in sections for t in traces[:max_traces])
    body = []
    for name, path, traces, tokenizer in sections:
        shown = traces[:max_traces]
        body.append(f"<h2>{e(name)}</h2><p class=\"meta\"><code>{e(str(path))}</code></p>"
                    f"<p class=\"meta\">{e(_summary(traces, len(shown), tokenizer is not None))}</p>")
        for i, t in enumerate(shown):
            body.append(_trace_block(t, _text_pieces(t, tokenizer), scale, open_=i < 10))
    legend = ("<p class=\"legend\">"
              f"<span class=\"sw\" style=\"background:{SOURCE_COLOURS['L']}\">learner</span>"
              f"<span class=\"sw\" style=\"background:{SOURCE_COLOURS['P']}\">privileged</span>"
              f" lp_P − lp_L: −{scale:.1f} <span class=\"grad\"></span> +{scale:.1f} "
              "(where the two students disagree: green, the privileged student finds the token likelier than "
              "the learner does; red, the learner finds it likelier; in this mode privileged tokens are underlined)"
              " · hover a token for its id and log-probs</p>")
    modes = ("<p class=\"modes\">colour by: <label for=\"by-source\">source</label>"
             "<label for=\"by-delta\">lp_P − lp_L</label></p>")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>dail traces</title>"
            f"<style>{_TRACE_CSS}</style></head><body>"
            "<input class=\"mode\" type=\"radio\" name=\"mode\" id=\"by-source\" checked>"
            "<input class=\"mode\" type=\"radio\" name=\"mode\" id=\"by-delta\">"
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


def write_traces(sources: Sequence[TraceSource], path: str | Path, tokenizer: Any = None,
                 max_traces: int = 100) -> Path:
    """Write the viewer of `sources` to `path`; `tokenizer` (object or model name) overrides each run's model."""
    sections = [(src.name, src.traces, read_traces(src.traces, kept_only=False), _load_tokenizer(tokenizer, src.model))
                for src in sources]
    atomic_write_text(path, traces_html(sections, max_traces))
    return Path(path)
