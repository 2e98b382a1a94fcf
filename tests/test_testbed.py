"""The test-bed: task semantics against a slow restatement, splits, the build's determinism and resume."""

from __future__ import annotations

import json
import random
from pathlib import Path
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dail.grading import extract_answer
from dail.testbed.task import LABELS, Chain, draw_chain, draw_table, expert_solution, full_solution, hint, problem_row


def _replay(text: str, table) -> tuple[int, int]:
    """The final (x, y) by reading the problem statement as a person would (knowing F): parse, then apply."""
    x, y = map(int, re.search(r"x=(\d) and y=(\d)", text).groups())
    regs = {"x": x, "y": y}
    for reg, source in re.findall(r"^[a-z]: ([xy])=([xy\d]|F\([xy]\))$", text, flags=re.M):
        regs[reg] = int(source) if source.isdigit() else table[regs[source[2]]] if source[0] == "F" else regs[source]
    return regs["x"], regs["y"]


SOURCES = [*"0123456789xy", "F(x)", "F(y)"]
chains = st.builds(
    Chain, st.integers(0, 9), st.integers(0, 9),
    st.lists(st.tuples(st.sampled_from("xy"), st.sampled_from(SOURCES)), min_size=1, max_size=16).map(tuple),
    st.permutations(range(10)).map(tuple))


@given(chains, st.integers(2, 5))
@settings(max_examples=200, deadline=None)
def test_answer_text_and_solutions_agree_with_a_replay_of_the_statement(chain, every):
    x, y = _replay(chain.text, chain.table)
    assert chain.answer == 10 * x + y
    full = full_solution(chain)
    assert extract_answer(full) == str(chain.answer)
    assert extract_answer(expert_solution(chain, every)) == str(chain.answer)
    # every step is written out, in order, and each line's state follows from the one before
    lines = full.splitlines()[:-1]
    assert [line[0] for line in lines] == list(LABELS[: len(chain.steps)])
    state = (chain.x, chain.y)
    for line, (reg, source) in zip(lines, chain.steps):
        new = dict(zip("xy", state))
        new[reg] = new[source] if source in "xy" else chain.table[new[source[2]]] if source[0] == "F" else int(source)
        state = (new["x"], new["y"])
        assert line == f"{line[0]}: {reg}={source} so x={state[0]} y={state[1]}"


@given(chains, st.integers(2, 5))
@settings(max_examples=200, deadline=None)
def test_the_expert_skips_steps_and_the_hint_holds_no_line_of_the_solution(chain, every):
    expert = expert_solution(chain, every)
    named = re.findall(r"^After ([a-z]):", expert, flags=re.M)
    n = len(chain.steps)
    # every `every`-th state and the state after each F step: the key facts, never the last step
    f_steps = [i for i, (_, source) in enumerate(chain.steps) if source[0] == "F" and i < n - 1]
    assert named == [LABELS[i] for i in sorted(set(range(every - 1, n - 1, every)) | set(f_steps))]
    assert "so x=" not in expert  # no step is shown being worked
    h = hint(chain, every)
    assert h.startswith(f"The answer is {chain.answer}.")
    assert not any(line in h for line in expert.splitlines())


def test_a_hand_worked_chain():
    chain = Chain(8, 9, (("y", "1"), ("x", "y"), ("y", "7")))
    assert full_solution(chain) == ("a: y=1 so x=8 y=1\nb: x=y so x=1 y=1\nc: y=7 so x=1 y=7\n"
                                    "Answer: \\boxed{17}")
    assert expert_solution(chain, 2) == "After b: x=1 y=1.\nAnswer: \\boxed{17}"
    assert hint(chain, 2) == "The answer is 17. States along the way include: x=1 y=1."
    row = problem_row(chain, 2, "p", "train")
    assert row.answer == "17" and row.waypoints == hint(chain, 2) and row.solution == expert_solution(chain, 2)


def test_an_f_step_applies_the_unstated_table():
    table = (3, 1, 4, 0, 5, 9, 2, 6, 8, 7)
    chain = Chain(2, 5, (("x", "F(y)"), ("y", "x"), ("y", "F(y)")), table)
    assert full_solution(chain) == ("a: x=F(y) so x=9 y=5\nb: y=x so x=9 y=9\nc: y=F(y) so x=9 y=7\n"
                                    "Answer: \\boxed{97}")
    assert "F" in chain.text and "3, 1, 4" not in chain.text  # the problem never states F
    assert expert_solution(chain, 3) == "After a: x=9 y=5.\nAnswer: \\boxed{97}"  # the F step is named


@given(chains, st.data())
@settings(max_examples=200, deadline=None)
def test_a_step_matters_exactly_when_some_other_value_there_changes_the_answer(chain, data):
    i = data.draw(st.integers(0, len(chain.steps) - 1))

    def answer_with(value):  # slow restatement: replay, forcing step i to write `value`
        regs = {"x": chain.x, "y": chain.y}
        for j, (reg, source) in enumerate(chain.steps):
            regs[reg] = value if j == i else (regs[source] if source in regs else
                                              chain.table[regs[source[2]]] if source[0] == "F" else int(source))
        return 10 * regs["x"] + regs["y"]

    assert chain.matters(i) == any(answer_with(v) != chain.answer for v in range(10))


def test_draw_chain_is_a_function_of_the_generator_and_refuses_impossible_lengths():
    assert draw_chain(random.Random(3), 7) == draw_chain(random.Random(3), 7)
    with pytest.raises(ValueError, match="n_steps"):
        draw_chain(random.Random(0), 27)
    table = draw_table(random.Random(0))
    assert sorted(table) == list(range(10))
    for seed in range(50):
        chain = draw_chain(random.Random(seed), 9, table, 3)
        assert len(chain.f_steps()) == 3 and max(chain.f_steps()) < 8 and chain.table == table
        # the other steps are those of the same draw without F steps
        plain = draw_chain(random.Random(seed), 9)
        assert [s for i, s in enumerate(chain.steps) if i not in chain.f_steps()] == \
               [s for i, s in enumerate(plain.steps) if i not in chain.f_steps()]
    with pytest.raises(ValueError, match="f_steps"):
        draw_chain(random.Random(0), 4, None, 1)
    with pytest.raises(ValueError, match="f_steps"):
        draw_chain(random.Random(0), 4, table, 4)


# --------------------------------------------------------------------------- the build

MINI = dict(steps=4, phase2_steps=2, phase3_steps=2, batch_size=2, hidden_size=16, intermediate_size=32, layers=1, heads=2, tokenizer_docs=60,
            vocab_size=300, warmup=2, split_sizes={"train": 4, "val": 2, "test": 3, "easy": 2})


def _files(root):
    # The log holds wall times; everything else must be identical.
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "pretrain_log.jsonl"}


def test_a_miniature_build_is_deterministic_and_records_every_file(tmp_path):
    from dail.testbed.build import BuildConfig, build, file_hashes

    cfg = BuildConfig(**MINI)
    a, b = build(cfg, tmp_path / "a"), build(cfg, tmp_path / "b")
    assert _files(a) == _files(b)
    info = json.loads((a / "build.json").read_text())
    assert info["files"] == file_hashes(a) and set(info["files"]) >= {
        "model/model.safetensors", "model/tokenizer.json", "data/train.jsonl", "data/test.jsonl"}
    assert info["config"]["seed"] == 0 and len(info["loss_curve"]) == 8
    assert not (tmp_path / ".a.partial").exists()
    log = [json.loads(line) for line in (a / "pretrain_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["phase"]) for r in log] == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2), (7, 3), (8, 3)]
    assert all(r["loss"] > 0 for r in log)
    other = build(BuildConfig(**{**MINI, "seed": 1}), tmp_path / "c")
    assert _files(other)["model/model.safetensors"] != _files(a)["model/model.safetensors"]


@pytest.mark.parametrize("kill_at, resumed_from", [(3, 3), (8, 8), (12, 12)])  # in phase 1, 2, 3
def test_a_killed_build_resumes_to_the_same_files(tmp_path, monkeypatch, kill_at, resumed_from):
    from dail.testbed import build as build_module
    from dail.testbed.build import BuildConfig, build

    monkeypatch.setattr(build_module, "CHECKPOINT_EVERY", 2)
    cfg = BuildConfig(**{**MINI, "steps": 5, "phase2_steps": 4, "phase3_steps": 3})
    whole = build(cfg, tmp_path / "whole")

    def kill(record):
        if record["step"] == kill_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(cfg, tmp_path / "resumed", on_step=kill)
    assert (tmp_path / ".resumed.partial").exists() and not (tmp_path / "resumed").exists()
    steps = []
    resumed = build(cfg, tmp_path / "resumed", on_step=lambda r: steps.append(r["step"]))
    # from the last checkpoint (each phase's step 2, after the earlier phases' saved weights)
    assert steps == list(range(resumed_from, 13))
    log = [json.loads(line)["step"] for line in (resumed / "pretrain_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 13))  # the killed run's steps past its checkpoint were dropped
    assert _files(resumed) == _files(whole)


def test_the_splits_are_disjoint_of_the_stated_difficulty_and_verifiable(tmp_path):
    from dail.testbed.build import BuildConfig, make_splits, split_table

    cfg = BuildConfig(split_sizes={"train": 50, "val": 20, "test": 20, "easy": 30})
    splits = make_splits(cfg)
    texts = [p.problem for rows in splits.values() for p in rows]
    assert len(texts) == len(set(texts)) == 120
    table = split_table(cfg)
    for name, rows in splits.items():
        lo, hi = cfg.easy_steps if name == "easy" else cfg.hard_steps
        f_lo, f_hi = (0, 0) if name == "easy" else cfg.f_steps
        assert all(lo <= p.meta["n_steps"] <= hi and f_lo <= p.meta["f_steps"] <= f_hi for p in rows)
        assert all(extract_answer(p.solution) == p.answer and p.waypoints for p in rows)
        # one F for every problem of the splits: a replay of the statement with it gives the answer
        assert all(10 * _replay(p.problem, table)[0] + _replay(p.problem, table)[1] == int(p.answer) for p in rows)
        assert [p.id for p in rows] == [f"testbed-{name}-{i:04d}" for i in range(len(rows))]
    assert make_splits(cfg) == splits


def test_the_tokenizer_round_trips_documents_and_shares_label_tokens(tmp_path):
    from dail.config import PromptConfig
    from dail.testbed.build import BuildConfig, document_text, build_tokenizer, draw_document

    cfg = BuildConfig(tokenizer_docs=200)
    tok = build_tokenizer(cfg, PromptConfig())
    rng = random.Random(7)
    for _ in range(30):
        text = "".join(document_text(*draw_document(rng, cfg), PromptConfig()))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    pieces = tok.convert_ids_to_tokens(tok("x=37 y=5\nc: y=6\n\\boxed{42}", add_special_tokens=False)["input_ids"])
    assert "3" in pieces and "7" in pieces and "37" not in pieces  # digit by digit
    problem = tok(Chain(1, 2, (("x", "3"),) * 3).text, add_special_tokens=False)["input_ids"]
    solution = tok(full_solution(Chain(1, 2, (("x", "3"),) * 3)), add_special_tokens=False)["input_ids"]
    label = tok.convert_tokens_to_ids("c")
    assert label in problem and label in solution  # the same token in the prompt and the trace
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True) == "<|user|>\nhi<|end|>\n<|assistant|>\n"


# --------------------------------------------------------------------------- the pipeline and the study on it

@pytest.fixture(scope="module")
def mini_testbed(tmp_path_factory):
    from dail.testbed.build import BuildConfig, build

    return build(BuildConfig(**MINI), tmp_path_factory.mktemp("testbed") / "tb")


RUN = """
model = "{tb}/model"
train_data = "{tb}/data/train.jsonl"
eval_data = ["{tb}/data/val.jsonl", "{tb}/data/test.jsonl"]
methods = ["base", "sft-expert", "star", "psd-nll", "dail-nll", "dail"]
select = true
select_n = 2
device = "cpu"
[expand]
n = 1
[expand.sampling]
max_new_tokens = 8
[train]
max_steps = 1
batch_size = 2
kept_only = false
[train.lora]
r = 2
alpha = 4
[eval]
n = 2
k = [1, 2]
budgets = [4, 8]
force_answer_tokens = 2
[eval.sampling]
max_new_tokens = 8
"""


@pytest.mark.slow
def test_the_pipeline_runs_end_to_end_on_a_built_test_bed(mini_testbed, tmp_path, one_thread):
    import tomllib

    from dail import pipeline
    from dail.config import RunConfig

    cfg = RunConfig(name="tb", out_dir=str(tmp_path), **tomllib.loads(RUN.format(tb=mini_testbed)))
    result = pipeline.run(cfg)
    assert set(result["table"]) == set(cfg.methods)
    for method, splits in result["table"].items():
        assert set(splits) == {"val", "test"} and set(splits["test"]["pass_at_k"]) == {"1", "2"}
    assert (Path(result["run_dir"]) / "report.html").exists()


@pytest.mark.slow
def test_a_study_gives_every_seed_the_sweeps_and_their_mean(mini_testbed, tmp_path, one_thread):
    import statistics
    import tomllib

    from dail import pipeline
    from dail.study import StudyConfig, run

    base = tomllib.loads(RUN.format(tb=mini_testbed))
    base["methods"] = ["base", "dail"]
    cfg = StudyConfig(name="s", out_dir=str(tmp_path), seeds=[0, 1], sweep_data=f"{mini_testbed}/data/val.jsonl",
                      tau=[0.8, 1.0], gamma=[0.0], run=base)
    calls = []

    def run_one(label, run_cfg):
        calls.append((label, run_cfg.name, run_cfg.methods, run_cfg.eval_data, run_cfg.expand.tau, run_cfg.train.gamma))
        return pipeline.run(run_cfg)

    summary = run(cfg, run_one)
    names = [c[1] for c in calls]
    assert names == ["seed-0", "seed-0-tau-1", "seed-0-gamma-0", "seed-1", "seed-1-tau-1", "seed-1-gamma-0"]
    sweep = [c for c in calls if "-" in c[1][5:]]
    assert all(c[2] == ["dail"] and c[3] == [cfg.sweep_data] for c in sweep)
    assert [(c[4], c[5]) for c in sweep[:2]] == [(1.0, 0.1), (0.8, 0.0)]
    for method in ("base", "dail", "dail tau=1", "dail gamma=0"):
        split = "test" if method == "base" else "val"
        values = [summary["per_seed"][s][method][split]["pass_at_k"]["1"] for s in ("0", "1")]
        stats = summary["mean"][method][split]["pass_at_k"]["1"]
        assert stats["mean"] == pytest.approx(statistics.fmean(values))
        assert stats["std"] == pytest.approx(statistics.stdev(values))
    root = tmp_path / "s"
    assert (root / "study.md").read_text().count("±") > 4
    assert {p.name for p in (root / "plots").iterdir()} == {"pass_at_k.png", "token_budget.png", "sweeps.png"}
    calls.clear()
    run(cfg, run_one)  # a finished study reruns nothing but reading back
    assert len(calls) == 6


def test_a_study_config_refuses_keys_it_sets_and_a_sweep_split_it_does_not_evaluate():
    from dail.study import StudyConfig

    run = {"train_data": "testbed-train", "eval_data": ["testbed-test"], "model": "testbed"}
    with pytest.raises(ValueError, match="run.seed is set by the study"):
        StudyConfig(name="s", seeds=[0], run={**run, "seed": 3})
    with pytest.raises(ValueError, match="sweep_data 'testbed-val' must be one of"):
        StudyConfig(name="s", seeds=[0], tau=[0.5], sweep_data="testbed-val", run=run)
    with pytest.raises(ValueError, match="unknown key|Extra inputs|extra"):
        StudyConfig(name="s", seeds=[0], run={**run, "expand": {"tua": 1}})


def test_the_build_command_writes_a_test_bed_and_names_a_bad_key(tmp_path):
    from typer.testing import CliRunner

    from dail.cli import app

    config = tmp_path / "b.toml"
    config.write_text("\n".join(f"{k} = {json.dumps(v) if not isinstance(v, dict) else '{' + ', '.join(f'{a} = {b}' for a, b in v.items()) + '}'}"
                                for k, v in MINI.items()))
    result = CliRunner().invoke(app, ["testbed", "build", "--out", str(tmp_path / "tb"), "--config", str(config),
                                      "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "tb" / "build.json").read_text())["config"]["seed"] == 3
    config.write_text("stesp = 3\n")
    result = CliRunner().invoke(app, ["testbed", "build", "--out", str(tmp_path / "x"), "--config", str(config)])
    assert result.exit_code == 1 and "stesp" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_without_a_shipped_build_the_alias_and_split_names_say_how_to_make_one(tmp_path, monkeypatch):
    from dail import testbed
    from dail.data import DataError
    from dail.datasets import resolve_problems
    from dail.models import ModelNotFoundError, resolve
    from dail.testbed.build import BuildConfig, build

    monkeypatch.setattr(testbed, "SHIPPED", tmp_path / "none")
    with pytest.raises(ModelNotFoundError, match="dail testbed build"):
        resolve("testbed")
    with pytest.raises(DataError, match="neither a bundled split"):
        resolve_problems("testbed-val")
    # a build placed where the package looks is found by alias and split name
    built = build(BuildConfig(**MINI), tmp_path / "shipped")
    monkeypatch.setattr(testbed, "SHIPPED", built)
    assert resolve("testbed").path == str(built / "model")
    assert [p.id for p in resolve_problems("testbed-test")] == [f"testbed-test-{i:04d}" for i in range(3)]
