"""Tests for dail.report: finding evaluations, tables, plots, the link to the trace viewer (synthetic inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dail import report
from dail.data import DataError, Trace, write_jsonl
from dail.rundir import split_name

from conftest import parse_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
def metrics(p1: float, slope: float, tokens: float, ks=(1, 2, 4, 8, 16), budgets=(64, 128, 256, 512), **extra) -> dict:
    """A plausible metrics.json: pass@k rising with log k, pass@k rising with the budget."""
    pk = {str(k): min(1.0, p1 + slope * i) for i, k in enumerate(ks)}
    scale = {str(b): min(1.0, b / (1.5 * tokens)) for b in budgets}
    pk_b = {b: {k: v * f for k, v in pk.items()} for b, f in scale.items()}
    return {"pass_at_k": pk, "accuracy": p1, "mean_tokens": tokens, "mean_tokens_correct": tokens * 0.8,
            "n_problems": 50, "n_samples": 50 * ks[-1], "budgets": list(budgets),
            "accuracy_at_budget": {b: t["1"] for b, t in pk_b.items()}, "pass_at_k_budget": pk_b,
            "config": {"data": "arith-test", "n": ks[-1]}, **extra}


def put(path: Path, obj: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.json").write_text(json.dumps(obj))
    return path


@pytest.fixture
def runs(tmp_path) -> Path:
    """Two run layouts and a loose eval directory."""
    r1 = tmp_path / "runs" / "exp1"
    put(r1 / "eval" / "base" / "arith-test", metrics(0.20, 0.08, 300))
    put(r1 / "eval" / "dail" / "arith-test", metrics(0.28, 0.10, 180))
    put(r1 / "eval" / "base" / "gpqa", metrics(0.25, 0.05, 500, ks=(1, 2, 4)))
    put(r1 / "eval" / "dail" / "gpqa", metrics(0.27, 0.06, 420, ks=(1, 2, 4)))
    (r1 / "metrics.json").write_text(json.dumps({"methods": {}, "seconds": 1}))  # the pipeline's own summary
    put(tmp_path / "runs" / "exp2" / "eval" / "arith-test", metrics(0.22, 0.09, 260))
    put(tmp_path / "loose", metrics(0.1, 0.02, 700, label="sft-expert <b>"))
    return tmp_path


def test_find_evals_reads_both_run_layouts_and_labels(runs) -> None:
    entries = report.find_evals([runs / "runs" / "exp1", runs / "runs" / "exp2", runs / "loose"])
    got = [(e.method, e.split) for e in entries]
    assert got == [("base", "arith-test"), ("base", "gpqa"), ("dail", "arith-test"), ("dail", "gpqa"),
                   ("exp2", "arith-test"), ("sft-expert <b>", "arith-test")]
    # An eval directory given directly is placed by its path; the same one twice counts once.
    again = report.find_evals([runs / "runs" / "exp1" / "eval" / "dail" / "gpqa", runs / "runs" / "exp2" / "eval" / "arith-test",
                               runs / "runs" / "exp2" / "eval" / "arith-test" / "metrics.json"])
    assert [(e.method, e.split) for e in again] == [("dail", "gpqa"), ("exp2", "arith-test")]


def test_clashing_method_names_get_the_run_name(tmp_path) -> None:
    for run in ("a", "b"):
        put(tmp_path / run / "eval" / "base" / "test", metrics(0.2, 0.1, 100))
    entries = report.find_evals([tmp_path / "a", tmp_path / "b"])
    assert [e.method for e in entries] == ["a/base", "b/base"]


def test_bad_inputs_are_data_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="no such file"):
        report.find_evals([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither an eval directory"):
        report.find_evals([tmp_path / "empty"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{nope")
    with pytest.raises(DataError, match="invalid JSON"):
        report.find_evals([tmp_path / "broken"])


def test_report_writes_tables_and_plots(runs) -> None:
    out = runs / "report"
    result = report.run([str(runs / "runs" / "exp1"), str(runs / "runs" / "exp2"), str(runs / "loose")], str(out))
    assert result["traces_html"] is None
    for name in ("pass_at_k.png", "token_budget.png"):
        data = (out / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    md = (out / "report.md").read_text()
    assert "## arith-test" in md and "## gpqa" in md
    for method in ("base", "dail", "exp2", "sft-expert &lt;b&gt;"):  # inline HTML in a name is escaped
        assert f"| {method} |" in md
    arith = md.split("## arith-test")[1].split("## gpqa")[0]
    assert "| dail | **28.0** | **38.0** |" in arith  # best pass@1, pass@2 in bold, percentages
    assert "| pass@1 | pass@2 | pass@4 | pass@8 | pass@16 | accuracy | mean tokens |" in arith
    gpqa = md.split("## gpqa")[1].split("## Sources")[0]
    assert "pass@16" not in gpqa and "| base | 25.0 | 30.0 | 35.0 |" in gpqa
    page = parse_html(out / "report.html")
    text = "".join(page.text)
    assert "sft-expert <b>" in text and page.tags.count("img") == 2 and page.tags.count("table") == 4


def test_budget_table_shows_pass_at_1_and_the_largest_k(tmp_path) -> None:
    """The budget table reads pass_at_k_budget: pass@1 and the largest k known at every budget."""
    m = metrics(0.2, 0.1, 100, ks=(1, 2, 4), budgets=(64, 256))  # 256 >= 1.5 * 100: the full pass@k
    m["pass_at_k_budget"]["256"].pop("4")  # pass@4 not known at 256: pass@2 is the largest common k
    put(tmp_path / "ev" / "eval" / "dail" / "test", m)
    put(tmp_path / "ev" / "eval" / "base" / "test", metrics(0.1, 0.0, 100, ks=(1,), budgets=(64,)))
    report.run([str(tmp_path / "ev")], str(tmp_path / "out"))
    md = (tmp_path / "out" / "report.md").read_text()
    f = 64 / 150
    assert f"| dail · pass@1 | {100 * 0.2 * f:.1f} | 20.0 |" in md
    assert f"| dail · pass@2 | {100 * 0.3 * f:.1f} | 30.0 |" in md and "dail · pass@4" not in md
    assert f"| base · pass@1 | {100 * 0.1 * f:.1f} | – |" in md and "base · pass@2" not in md
    assert "as if sampled with at most B tokens" in md
    parse_html(tmp_path / "out" / "report.html")
    assert (tmp_path / "out" / "plots" / "token_budget.png").read_bytes().startswith(PNG_MAGIC)


def test_run_dir_that_is_also_the_output(runs) -> None:
    # The pipeline writes the report into the run directory itself, beside its own metrics.json.
    run = runs / "runs" / "exp1"
    report.run([str(run)], str(run))
    report.run([str(run)], str(run))  # again, now that report.* and plots/ are in there too
    assert "| dail |" in (run / "report.md").read_text()


def test_traces_are_linked_from_the_report(tmp_path) -> None:
    """A run that has expanded but not evaluated yet: traces.html alone, linked from report.html."""
    run = tmp_path / "run"
    write_jsonl(run / "traces.jsonl", [Trace(problem_id="p", sample=0, seed=0, text="6 × 7 = <42>", token_ids=[1, 2],
                                             source="LP", logprob_learner=[-0.5, -2.0], logprob_privileged=[-0.2, -0.1],
                                             finish="eos", answer="42")])
    result = report.run([str(run)], str(tmp_path / "out"))
    assert result["entries"] == [] and result["plots"] == []
    assert "6 × 7 = <42>" in "".join(parse_html(Path(result["traces_html"])).text)
    parse_html(tmp_path / "out" / "report.html")
    assert 'href="traces.html"' in (tmp_path / "out" / "report.html").read_text()
    # Traces named explicitly are shown beside the evaluations.
    put(tmp_path / "ev", metrics(0.3, 0.1, 200))
    result = report.run([str(tmp_path / "ev")], str(tmp_path / "out2"), traces=str(run / "traces.jsonl"))
    assert result["traces_html"] and len(result["entries"]) == 1


@pytest.mark.parametrize("data, split", [("arith-test", "arith-test"), ("data/hard.jsonl", "hard"), ("", "eval")])
def test_a_loose_eval_is_named_as_the_pipeline_names_its_directory(tmp_path, data, split) -> None:
    put(tmp_path / "loose", {**metrics(0.3, 0.1, 200), "config": {"data": data}})
    assert [e.split for e in report.find_evals([tmp_path / "loose"])] == [split]
    if data:
        assert split_name(data) == split


def _ordered_run(root: Path) -> Path:
    """A run whose config lists its methods out of alphabetical order; dail and star tie at 0%."""
    run = root / "runs" / "ordered"
    zero = metrics(0.0, 0.0, 200)
    for method, m in [("base", metrics(0.2, 0.05, 300)), ("dail", zero), ("star", zero), ("sft-expert", metrics(0.1, 0.1, 250))]:
        put(run / "eval" / method / "arith-test", m)
    (run / "config.toml").write_text('name = "ordered"\nmethods = ["star", "base", "sft-expert", "dail"]\n')
    return run


def test_methods_follow_the_run_config_order_everywhere(tmp_path) -> None:
    run = _ordered_run(tmp_path)
    want = ["star", "base", "sft-expert", "dail"]
    assert [e.method for e in report.find_evals([run])] == want
    report.run([str(run)], str(run / "report"))
    md = (run / "report" / "report.md").read_text()
    table = md.split("## arith-test")[1].split("pass@k (%) at a token budget")[0]
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "method" not in line] == want
    budget = md.split("pass@k (%) at a token budget")[1].split("## Sources")[0]
    assert [m for m in (line.split("|")[1].strip().split(" · ")[0] for line in budget.splitlines()
                        if line.startswith("| ") and "method" not in line)] == [m for m in want for _ in (0, 1)]
    # Without a config (a loose list of eval dirs), the order is the order found.
    (run / "config.toml").unlink()
    assert [e.method for e in report.find_evals([run])] == sorted(want)


def test_report_paths_are_relative_so_a_moved_run_still_reads(tmp_path) -> None:
    run = _ordered_run(tmp_path)
    report.run([str(run)], str(run / "report"))
    moved = tmp_path / "elsewhere" / "ordered"
    run.rename(moved.parent.mkdir(parents=True) or moved)
    for name in ("report.md", "report.html"):
        text = (moved / "report" / name).read_text()
        assert str(tmp_path) not in text
        assert "../eval/star/arith-test/metrics.json" in text
    page = (moved / "report" / "report.html").read_text()
    assert 'href="../eval/star/arith-test/metrics.json"' in page
    assert (moved / "report" / "../eval/star/arith-test/metrics.json").is_file()


@pytest.mark.parametrize("n", [1, 10, 11, 20])
def test_every_method_gets_its_own_colour_and_the_first_ten_keep_tab10s(n):
    from matplotlib import colormaps

    from dail.report_plots import method_colours

    colours = method_colours([f"m{i}" for i in range(n)])
    assert len(set(colours.values())) == n
    assert [colours[f"m{i}"] for i in range(min(n, 10))] == [colormaps["tab10"](i) for i in range(min(n, 10))]
