"""The controls beside the methods (oracle-sft, rft, oracle-prompt), eval splits with settings of their own,
and the study's tables written into a README."""

from __future__ import annotations

import pytest

from dail.config import EvalSplit, RunConfig, to_toml
from dail.data import DataError, Problem, Sample, write_jsonl


def _run_config(tmp_path, **kw) -> RunConfig:
    return RunConfig(**{"name": "r", "out_dir": str(tmp_path), "model": "m", "train_data": "t.jsonl",
                        "eval_data": ["e.jsonl"], **kw})


def _sample(pid: str, i: int, correct: bool, text: str, forced: bool = False) -> Sample:
    return Sample(problem_id=pid, sample=i, seed=0, text=text, n_tokens=3, finish="eos", answer="1",
                  correct=correct, forced=forced)


def test_rft_trains_on_distinct_correct_unforced_samples_up_to_its_cap(tmp_path):
    from dail.pipeline import _control_rows, run_dir

    problems = [Problem(id="p", problem="P?", solution="expert p", answer="1"),
                Problem(id="q", problem="Q?", solution="expert q", answer="1")]
    write_jsonl(tmp_path / "t.jsonl", problems)
    cfg = _run_config(tmp_path, train_data=str(tmp_path / "t.jsonl"), select=True, methods=["base", "rft"],
                      rft_per_problem=2)
    root = run_dir(cfg)
    samples = [_sample("p", 0, True, "a"), _sample("p", 1, True, "a"), _sample("p", 2, False, "b"),
               _sample("p", 3, True, "c"), _sample("p", 4, True, "d"), _sample("q", 0, True, "e", forced=True),
               _sample("q", 1, False, "f")]
    write_jsonl(root.selection_rows, samples)
    rows = _control_rows("rft", problems, root, cfg)
    # p: "a" once (a repeat adds nothing), then "c"; the cap stops "d"; q's only correct answer was forced
    assert [(r.id, r.solution, r.problem) for r in rows] == [("p#0", "a", "P?"), ("p#3", "c", "P?")]
    write_jsonl(root.selection_rows, [_sample("q", 1, False, "f")])
    with pytest.raises(DataError, match="solved no training problem"):
        _control_rows("rft", problems, root, cfg)


def test_oracle_sft_needs_a_full_solution_and_rft_needs_select(tmp_path):
    from dail.pipeline import _control_rows, run_dir

    cfg = _run_config(tmp_path, methods=["base", "oracle-sft"])
    full = Problem(id="p", problem="P?", solution="short", full_solution="every step", answer="1")
    assert [r.solution for r in _control_rows("oracle-sft", [full], run_dir(cfg), cfg)] == ["every step"]
    with pytest.raises(DataError, match="'q' has no full_solution"):
        _control_rows("oracle-sft", [full, Problem(id="q", problem="Q?", answer="1")], run_dir(cfg), cfg)
    with pytest.raises(ValueError, match="rft trains on the samples of `select`"):
        _run_config(tmp_path, methods=["base", "rft"])


def test_eval_splits_carry_their_own_settings_through_toml(tmp_path):
    import tomllib

    cfg = _run_config(tmp_path, eval_data=["a/test.jsonl", {"data": "a/test.jsonl", "name": "test-100", "limit": 100,
                                                             "n": 128}])
    assert [(s.label, s.overrides()) for s in cfg.eval_splits()] == [("test", {}),
                                                                      ("test-100", {"limit": 100, "n": 128})]
    again = RunConfig(**tomllib.loads(to_toml(cfg)))  # the run directory's config.toml reads back the same
    assert again.eval_splits() == cfg.eval_splits()
    with pytest.raises(ValueError, match="share the name 'test'"):
        _run_config(tmp_path, eval_data=["a/test.jsonl", {"data": "b/test.jsonl"}])
    with pytest.raises(ValueError):
        EvalSplit(data="x", n=0)


def test_an_eval_under_the_privileged_prompt_needs_solutions(tmp_path):
    from dail import evaluate
    from dail.config import EvalConfig

    write_jsonl(tmp_path / "e.jsonl", [Problem(id="p", problem="P?", answer="1")])
    with pytest.raises(DataError, match="role privileged shows it"):
        evaluate.run(EvalConfig(model="m", data=str(tmp_path / "e.jsonl"), out=str(tmp_path / "o"), role="privileged"))


SUMMARY = {
    "name": "s", "seeds": [0, 1],
    "mean": {"base": {"test": {"pass_at_k": {"1": {"mean": 0.1, "std": 0.01}}, "mean_tokens": {"mean": 100.0, "std": 0.0}}},
             "dail": {"test": {"pass_at_k": {"1": {"mean": 0.25, "std": 0.05}}, "mean_tokens": {"mean": 90.0, "std": 2.0}}}},
    "comparisons": [{"a": "dail", "b": "base", "metric": "pass@1", "split": "test", "mean": 0.15, "lo": 0.1, "hi": 0.2,
                     "n": 500},
                    {"a": "dail", "b": "base", "metric": "tokens", "split": "test", "mean": -10.0, "lo": -12.5,
                     "hi": -7.25, "n": 40}],
}


def test_the_readme_tables_are_filled_from_the_study_and_nothing_else_moves():
    from dail.study import fill_readme

    text = ("intro\n<!-- study:comparisons -->\nold\n<!-- /study:comparisons -->\nmiddle\n"
            "<!-- study:test -->\n<!-- /study:test -->\nend\n")
    out = fill_readme(text, SUMMARY)
    assert out.startswith("intro\n<!-- study:comparisons -->\n| comparison") and "old" not in out
    assert "| dail − base | pass@1 | test | +15.0 pts | [+10.0, +20.0] | 500 |" in out
    assert "| dail − base | tokens | test | -10.0 | [-12.5, -7.2] | 40 |" in out
    assert "| dail | 25.0 ± 5.0 | 90 ± 2 |" in out and "| base | 10.0 ± 1.0 | 100 ± 0 |" in out
    assert out.endswith("<!-- /study:test -->\nend\n") and "\nmiddle\n" in out
    assert fill_readme(out, SUMMARY) == out  # filling twice changes nothing
    used = {"dail": {"selection": 1000.0, "sampled": 5120.5, "trained": 20000.0}}
    filled = fill_readme("<!-- study:compute -->\n<!-- /study:compute -->", {**SUMMARY, "compute": used})
    assert "| dail | 5,120 | 20,000 | 1,000 |" in filled
    with pytest.raises(ValueError, match="no split 'val'"):
        fill_readme("<!-- study:val -->\n<!-- /study:val -->", SUMMARY)
    with pytest.raises(ValueError, match="no comparisons"):
        fill_readme(text, {**SUMMARY, "comparisons": []})

