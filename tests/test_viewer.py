"""Tests for dail.viewer: finding traces, token text, colours by source and by lp_P - lp_L."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from dail import viewer
from dail.data import Trace, write_jsonl
from dail.grading import token_pieces

from conftest import parse_html

SPAN = re.compile(r'<span class="t ([LP])" title="([^"]*)" style="--d:([^"]*)">([^<]*)</span>')


def page_text(path: Path) -> str:
    """The page's text, after checking that it is well nested and runs no script."""
    return "".join(parse_html(path).text)


def make_traces(tokenizer) -> list[Trace]:
    """Traces with known sources, one with text that would break unescaped HTML."""
    texts = ["First <script>alert('x')</script> & \"quoted\" — 数学 ok.\nSo \\boxed{42}",
             "Second trace: 6 × 7 = 42.\n\nThe answer is \\boxed{42}."]
    traces = []
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        source = "".join("P" if j % 5 == 3 else "L" for j in range(len(ids)))
        traces.append(Trace(problem_id=f"p<{i}>", sample=0, seed=0, text=text, token_ids=ids, source=source,
                            logprob_learner=[-0.5] * len(ids), logprob_privileged=[-0.2] * len(ids), finish="eos",
                            answer="42", kept=i == 1, reject_reason=None if i == 1 else "leak"))
    return traces


def trace(text: str, source: str, lp_learner: list[float], lp_privileged: list[float], sample: int = 0) -> Trace:
    return Trace(problem_id="p", sample=sample, seed=0, text=text, token_ids=list(range(10, 10 + len(source))),
                 source=source, logprob_learner=lp_learner, logprob_privileged=lp_privileged, finish="eos")


def test_exact_tokens_with_a_tokenizer(tmp_path, tokenizer) -> None:
    traces = make_traces(tokenizer)
    write_jsonl(tmp_path / "run" / "traces.jsonl", traces)
    out = viewer.write_traces(viewer.find_traces([tmp_path / "run"]), tmp_path / "traces.html", tokenizer)
    raw, text = out.read_text(), page_text(out)
    assert "<script>alert('x')</script>" in text  # shown as text, escaped in the markup
    assert "2 traces: 1 kept, 1 rejected (leak: 1)" in text and "rejected: leak" in text
    assert "decoded per token by the tokenizer" in text
    t0 = traces[0]
    assert f"acceptance {100 * t0.source.count('L') / len(t0.token_ids):.1f}%" in text
    # One span per token that adds text, with its source; the spans' text is the trace text.
    spans = SPAN.findall(raw)
    expected = [(s, p) for t in traces for s, p in zip(t.source, token_pieces(tokenizer, t.token_ids)) if p]
    assert [(s, html.unescape(p)) for s, _, _, p in spans] == expected
    assert "lp_L -0.50 · lp_P -0.20 · lp_P−lp_L +0.30" in spans[0][1]
    assert "mean lp_P − lp_L +0.30 per token" in text


def test_without_a_tokenizer_the_text_is_shared_out(tmp_path, tokenizer) -> None:
    traces = make_traces(tokenizer)
    write_jsonl(tmp_path / "t.jsonl", traces)
    out = viewer.write_traces(viewer.find_traces([], tmp_path / "t.jsonl"), tmp_path / "traces.html")
    text = page_text(out)
    assert "approximate" in text
    for t in traces:
        assert t.text in text
    pieces = viewer._approx_pieces("abcdef", 4)
    assert len(pieces) == 4 and "".join(pieces) == "abcdef" and all(pieces)
    assert viewer._approx_pieces("abc", 0) == []


def test_tokens_coloured_by_lp_privileged_minus_lp_learner(tmp_path) -> None:
    """deltas lp_P - lp_L = [0.9, -0.9, 0, 3]; the scale is the 95th percentile of |delta|:
    sorted [0, 0.9, 0.9, 3], index int(0.95 * 3) = 2 -> 0.9. Alpha = min(1, |d| / 0.9) * 0.85."""
    t = trace("abcd", "LPLP", [-1.0, -0.1, -2.0, -3.5], [-0.1, -1.0, -2.0, -0.5])
    page = viewer.traces_html([("run/traces.jsonl", tmp_path / "traces.jsonl", [t], None)])
    assert [(src, colour, piece) for src, _, colour, piece in SPAN.findall(page)] == [
        ("L", "rgba(22,163,74,0.85)", "a"),  # the privileged student finds it likelier: green
        ("P", "rgba(220,38,38,0.85)", "b"),  # the learner does: red
        ("L", "rgba(22,163,74,0.00)", "c"),  # they agree: no colour
        ("P", "rgba(22,163,74,0.85)", "d"),  # beyond the scale: capped
    ]
    assert "lp_P − lp_L: −0.9" in page and "+0.9 (where the two students disagree" in page
    assert "mean lp_P − lp_L +0.75" in page
    assert 'id="by-delta"' in page and 'label for="by-delta"' in page


@pytest.mark.parametrize("d, scale, colour", [
    (0.25, 0.5, "rgba(22,163,74,0.42)"),
    (-1.0, 2.0, "rgba(220,38,38,0.42)"),
    (-5.0, 0.5, "rgba(220,38,38,0.85)"),
    (float("-inf"), 1.0, "transparent"),
    (float("nan"), 1.0, "transparent"),
])
def test_delta_colour(d, scale, colour) -> None:
    assert viewer._delta_colour(d, scale) == colour


def test_delta_scale_has_a_floor_and_ignores_non_finite() -> None:
    small = trace("ab", "LL", [-0.1, -0.1], [-0.2, float("-inf")])
    assert viewer._delta_scale([small]) == 0.5  # |delta| 0.1 is below the floor; -inf is left out
    assert viewer._delta_scale([]) == 1.0


def test_find_traces_order_and_each_runs_model(tmp_path, embedded_path) -> None:
    run = tmp_path / "run"
    t = trace("ab", "LP", [-1.0, -1.0], [-1.0, -1.0])
    for name in ("traces-star.jsonl", "traces-psd.jsonl", "traces.jsonl"):
        write_jsonl(run / name, [t])
    (run / "config.toml").write_text(f'model = "{embedded_path}"\n')
    (run / "traces-psd.config.toml").write_text('model = "some/other-model"\n')
    found = viewer.find_traces([run])
    assert [s.name for s in found] == ["run/traces.jsonl", "run/traces-psd.jsonl", "run/traces-star.jsonl"]
    assert [s.model for s in found] == [embedded_path, "some/other-model", embedded_path]
    # The run's model names the tokenizer; one that cannot be loaded only makes the text approximate.
    text = page_text(viewer.write_traces(found, tmp_path / "traces.html"))
    assert text.count("decoded per token by the tokenizer") == 2 and text.count("approximate") == 1


def test_only_the_first_traces_are_shown(tmp_path) -> None:
    traces = [trace("ab", "LP", [-1.0, -1.0], [-0.5, -0.5], sample=i) for i in range(5)]
    page = viewer.traces_html([("x", tmp_path / "t.jsonl", traces, None)], max_traces=2)
    assert page.count("<details") == 2 and "showing the first 2" in page and "5 traces: 5 kept" in page
