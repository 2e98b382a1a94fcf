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
from dail.testbed.task import (CONNECTIVES, FUNCTIONS, LABELS, Chain, Style, checkpoints, draw_chain, draw_tables,
                               expert_solution, expert_steps, full_solution, hint, problem_row, write)

STEP = re.compile(r"^[a-z]: (?:([xy])=([xy\d]|[FGH]\([xy]\))|swap)$", flags=re.M)


def _apply(regs: dict, reg: str | None, source: str | None, tables) -> None:
    """One step as a person reads it: swap, copy, set, or a function's table at the source's value."""
    if reg is None:
        regs["x"], regs["y"] = regs["y"], regs["x"]
    elif source in ("x", "y"):
        regs[reg] = regs[source]
    elif source[0] in "FGH":
        regs[reg] = tables["FGH".index(source[0])][regs[source[2]]]
    else:
        regs[reg] = int(source)


def _replay(text: str, tables) -> list[tuple[int, int]]:
    """Every (x, y) state, by reading the problem statement (knowing the tables): parse, then apply."""
    x, y = map(int, re.search(r"x=(\d) and y=(\d)", text).groups())
    regs, states = {"x": x, "y": y}, []
    for m in STEP.finditer(text):
        _apply(regs, m.group(1), m.group(2), tables)
        states.append((regs["x"], regs["y"]))
    return states


SOURCES = [*"0123456789xy", *(f"{f}({r})" for f in "FGH" for r in "xy"), "swap"]
TABLES = st.tuples(*[st.permutations(range(10)).map(tuple)] * 3)
chains = st.builds(
    Chain, st.integers(0, 9), st.integers(0, 9),
    st.lists(st.tuples(st.sampled_from("xy"), st.sampled_from(SOURCES)), min_size=1, max_size=16).map(tuple), TABLES)


@given(chains, st.integers(2, 5))
@settings(max_examples=200, deadline=None)
def test_answer_text_and_solutions_agree_with_a_replay_of_the_statement(chain, every):
    states = _replay(chain.text, chain.tables)
    assert chain.states() == states and chain.answer == 10 * states[-1][0] + states[-1][1]
    full = full_solution(chain)
    assert extract_answer(full) == str(chain.answer)
    assert extract_answer(expert_solution(chain, every)) == str(chain.answer)
    lines = full.splitlines()[:-1]  # every step written out, in order, with the state it leaves
    assert len(lines) == len(chain.steps)
    for i, (line, (reg, source), (x, y)) in enumerate(zip(lines, chain.steps, states)):
        step = "swap" if source == "swap" else f"{reg}={source}"
        assert line == f"{LABELS[i]}: {step} so x={x} y={y}"


def _tainted(chain: Chain) -> list[bool]:
    # slow restatement: a register is tainted once a function writes it, and passes it on by copies and swaps
    taint, out = {"x": False, "y": False}, []
    for reg, source in chain.steps:
        if source == "swap":
            taint = {"x": taint["y"], "y": taint["x"]}
        elif source in ("x", "y"):
            taint[reg] = taint[source]
        else:
            taint[reg] = source[0] in "FGH"
        out.append(taint["x"] or taint["y"])
    return out


@given(chains, st.integers(2, 5), TABLES)
@settings(max_examples=200, deadline=None)
def test_the_expert_names_the_key_states_and_the_hint_no_function_value(chain, every, other):
    expert = expert_solution(chain, every)
    named = re.findall(r"^After ([a-z]):", expert, flags=re.M)
    n = len(chain.steps)
    # every `every`-th state but the last, and the state after each function step: the key facts
    hidden = [i for i, (_, source) in enumerate(chain.steps) if source[0] in FUNCTIONS]
    assert named == [LABELS[i] for i in sorted(set(range(every - 1, n - 1, every)) | set(hidden))]
    assert " so x=" not in expert  # no step is shown being worked
    tainted = _tainted(chain)
    assert checkpoints(chain, every) == [i for i in expert_steps(chain, every) if not tainted[i]]
    h = hint(chain, every)
    assert h.startswith(f"The answer is {chain.answer}.")
    # other tables change the answer at most: the checkpoints hold no value a function wrote
    moved = Chain(chain.x, chain.y, chain.steps, other)
    assert hint(moved, every).split(".", 1)[1] == h.split(".", 1)[1]


def test_a_hand_worked_chain():
    tables = ((3, 1, 4, 0, 5, 9, 2, 6, 8, 7), tuple(range(9, -1, -1)), tuple(range(10)))
    chain = Chain(2, 5, (("x", "G(y)"), ("y", "1"), ("x", "swap"), ("y", "F(x)"), ("x", "y")), tables)
    assert full_solution(chain) == ("a: x=G(y) so x=4 y=5\nb: y=1 so x=4 y=1\nc: swap so x=1 y=4\n"
                                    "d: y=F(x) so x=1 y=1\ne: x=y so x=1 y=1\nAnswer: \\boxed{11}")
    assert "G" in chain.text and "9, 8, 7" not in chain.text  # the problem never states a table
    assert chain.facts() == ["G(5)=4", "F(1)=1"]
    assert expert_solution(chain, 2) == "After a: x=4 y=5.\nAfter b: x=4 y=1.\nAfter d: x=1 y=1.\nAnswer: \\boxed{11}"
    assert hint(chain, 2) == "The answer is 11."  # every named state holds G's value
    row = problem_row(chain, 2, "p", "train")
    assert row.answer == "11" and row.waypoints == hint(chain, 2) and row.full_solution == full_solution(chain)
    assert row.meta["facts"] == chain.facts()


@given(chains, st.data())
@settings(max_examples=200, deadline=None)
def test_a_step_matters_exactly_when_some_other_value_there_changes_the_answer(chain, data):
    i = data.draw(st.integers(0, len(chain.steps) - 1))
    if chain.steps[i][1] == "swap":
        return  # a swap writes no value of its own

    def answer_with(value):  # slow restatement: replay, forcing step i to write `value`
        regs = {"x": chain.x, "y": chain.y}
        for j, (reg, source) in enumerate(chain.steps):
            if j == i:
                regs[reg] = value
            else:
                _apply(regs, None if source == "swap" else reg, source, chain.tables)
        return 10 * regs["x"] + regs["y"]

    assert chain.matters(i) == any(answer_with(v) != chain.answer for v in range(10))


@given(chains, st.data())
@settings(max_examples=200, deadline=None)
def test_a_value_is_direct_exactly_when_it_survives_to_the_last_state_by_copies(chain, data):
    if not chain.hidden_steps():
        return
    i = data.draw(st.sampled_from(chain.hidden_steps()))  # what the splits ask of a function's value
    # slow restatement: label each register with the step whose value it holds; copies and swaps carry labels
    labels = {"x": None, "y": None}
    for j, (reg, source) in enumerate(chain.steps):
        if source == "swap":
            labels = {"x": labels["y"], "y": labels["x"]}
        elif source in ("x", "y"):
            labels[reg] = labels[source]
        else:
            labels[reg] = j
    assert chain.direct(i) == (i in labels.values())


def test_draw_chain_is_a_function_of_the_generator_and_refuses_impossible_lengths():
    assert draw_chain(random.Random(3), 7) == draw_chain(random.Random(3), 7)
    with pytest.raises(ValueError, match="n_steps"):
        draw_chain(random.Random(0), 27)
    tables = draw_tables(random.Random(0))
    assert len(tables) == 3 and all(sorted(t) == list(range(10)) for t in tables)
    for seed in range(50):
        chain = draw_chain(random.Random(seed), 9, tables, 3)
        assert len(chain.hidden_steps()) == 3 and max(chain.hidden_steps()) < 8 and chain.tables == tables
        assert not any(source == "swap" for _, source in chain.steps)
    assert any(source == "swap" for seed in range(20) for _, source in draw_chain(random.Random(seed), 9, swap=0.3).steps)
    with pytest.raises(ValueError, match="hidden"):
        draw_chain(random.Random(0), 4, None, 1)
    with pytest.raises(ValueError, match="hidden"):
        draw_chain(random.Random(0), 4, tables, 4)
    # with `last`, the last step may apply a function too
    assert any(draw_chain(random.Random(seed), 4, tables, 4, last=True).hidden_steps() == [0, 1, 2, 3]
               for seed in range(3))


def _read(chain: Chain, text: str) -> list[tuple[str, int]]:
    """Check a written completion line by line against the true states; return its moves (step/jump/answer, index)."""
    states, moves, i = chain.states(), [], 0
    lines = text.split("\n")
    for k, line in enumerate(lines):
        if line.startswith("Answer: "):
            assert k == len(lines) - 1
            moves.append(("answer", i))
            break
        if line.startswith("After "):
            j = LABELS.index(line[6])
            assert j >= i + 1 and line == f"After {LABELS[j]}: x={states[j][0]} y={states[j][1]}."
            moves.append(("jump", i))
            i = j + 1
            continue
        label, rest = line.split(": ", 1)
        reg, source = chain.steps[i]
        step = "swap" if source == "swap" else f"{reg}={source}"
        connective = rest[len(step) + 1:].split(" ")[0]
        assert label == LABELS[i] and connective in CONNECTIVES
        assert rest == f"{step} {connective} x={states[i][0]} y={states[i][1]}"
        moves.append(("step", i))
        i += 1
    return moves


@given(chains, st.integers(2, 4), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_every_role_writes_true_states_and_its_own_shortcuts(chain, every, seed):
    states = [(chain.x, chain.y)] + chain.states()
    learner = write(chain, Style(early=0.3, early_answer="state"), random.Random(seed))
    for move, i in _read(chain, learner):
        assert move != "jump"
        if move == "answer":  # early: the state so far, as the answer
            assert extract_answer(learner) == str(10 * states[i][0] + states[i][1])
    targets = tuple(expert_steps(chain, every))
    privileged = write(chain, Style(jump=0.5, targets=targets), random.Random(seed))
    moves = _read(chain, privileged)
    assert moves[-1] == ("answer", len(chain.steps)) and extract_answer(privileged) == str(chain.answer)
    negative = write(chain, Style(early=0.4, early_answer="true", jump=0.5, targets=tuple(checkpoints(chain, every))),
                     random.Random(seed))
    _read(chain, negative)
    assert extract_answer(negative) == str(chain.answer)  # the hint's answer, early or not


def test_the_rates_of_a_style_are_the_rates_written():
    rng, tables = random.Random(5), draw_tables(random.Random(1))
    jumps = chances = early = lines = 0
    for _ in range(2000):
        chain = draw_chain(rng, 12, tables, 2)
        targets = tuple(expert_steps(chain, 3))
        for move, i in _read(chain, write(chain, Style(jump=0.1, targets=targets), rng)):
            if move != "answer" and any(j >= i + 1 for j in targets):
                chances += 1
                jumps += move == "jump"
        for move, i in _read(chain, write(chain, Style(early=0.05), rng)):
            if 0 < i < len(chain.steps):
                lines += 1
                early += move == "answer" and i < len(chain.steps)
    assert jumps / chances == pytest.approx(0.1, abs=0.01)
    assert early / lines == pytest.approx(0.05, abs=0.005)


# --------------------------------------------------------------------------- the build

MINI = dict(steps=4, phase2_steps=2, batch_size=2, hidden_size=16, intermediate_size=32, layers=1, heads=2,
            tokenizer_docs=60, vocab_size=300, warmup=2, split_sizes={"train": 6, "val": 2, "test": 3, "easy": 2, "ood": 2})


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
    assert info["config"]["seed"] == 0 and len(info["loss_curve"]) == 6
    # what a reader needs to judge another machine's rebuild; not hashed, since it differs between machines
    assert set(info["environment"]) == {"python", "torch", "transformers", "tokenizers", "cpu", "threads", "git_commit"}
    assert info["environment"]["threads"] == cfg.threads and set(info["tables"]) == {"F", "G", "H"}
    assert not (tmp_path / ".a.partial").exists()
    log = [json.loads(line) for line in (a / "pretrain_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["phase"]) for r in log] == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2)]
    assert all(r["loss"] > 0 for r in log)
    other = build(BuildConfig(**{**MINI, "seed": 1}), tmp_path / "c")
    assert _files(other)["model/model.safetensors"] != _files(a)["model/model.safetensors"]


@pytest.mark.parametrize("kill_at, resumed_from", [(3, 3), (8, 8)])  # in phase 1, in phase 2
def test_a_killed_build_resumes_to_the_same_files(tmp_path, monkeypatch, kill_at, resumed_from):
    from dail.testbed import pretrain
    from dail.testbed.build import BuildConfig, build

    monkeypatch.setattr(pretrain, "CHECKPOINT_EVERY", 2)
    cfg = BuildConfig(**{**MINI, "steps": 5, "phase2_steps": 4})
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
    assert steps == list(range(resumed_from, 10))
    log = [json.loads(line)["step"] for line in (resumed / "pretrain_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 10))  # the killed run's steps past its checkpoint were dropped
    assert _files(resumed) == _files(whole)


def test_the_splits_are_disjoint_of_the_stated_difficulty_and_verifiable(tmp_path):
    from dail.testbed.build import BuildConfig, make_splits, split_tables

    cfg = BuildConfig(split_sizes={"train": 50, "val": 20, "test": 20, "easy": 30, "ood": 20})
    splits = make_splits(cfg)
    texts = [p.problem for rows in splits.values() for p in rows]
    assert len(texts) == len(set(texts)) == 140
    tables = split_tables(cfg)
    for name, rows in splits.items():
        lo, hi = cfg.easy_steps if name == "easy" else cfg.hard_steps
        assert all(lo <= p.meta["n_steps"] <= hi for p in rows)
        assert all(extract_answer(p.solution) == p.answer == extract_answer(p.full_solution) and p.waypoints
                   for p in rows)
        # one set of tables for every problem of the splits: a replay of the statement with it gives the answer
        assert all(10 * _replay(p.problem, tables)[-1][0] + _replay(p.problem, tables)[-1][1] == int(p.answer)
                   for p in rows)
        assert [p.id for p in rows] == [f"testbed-{name}-{i:04d}" for i in range(len(rows))]
        functions = [len(p.meta["facts"]) for p in rows]
        swaps = ["swap" in p.problem for p in rows]
        if name in ("easy", "ood"):
            assert not any(functions) and all(swaps) == (name == "ood")
        else:  # every function value reaches the answer by copies, and no problem uses the operation ood tests
            assert all(cfg.hidden[0] <= f <= cfg.hidden[1] for f in functions) and not any(swaps)
            assert all(Chain(*_start(p.problem), _steps(p.problem), tables).direct(i) for p in rows
                       for i in Chain(*_start(p.problem), _steps(p.problem), tables).hidden_steps())
    assert make_splits(cfg) == splits


def _start(text: str) -> tuple[int, int]:
    return tuple(map(int, re.search(r"x=(\d) and y=(\d)", text).groups()))


def _steps(text: str) -> tuple[tuple[str, str], ...]:
    return tuple((m.group(1) or "x", m.group(2) or "swap") for m in STEP.finditer(text))


def test_pretraining_documents_end_on_a_function_step_only_when_asked():
    from dail.testbed.build import BuildConfig, draw_document

    def ends_on_function(cfg) -> int:
        rng = random.Random(3)
        rows = [draw_document(rng, cfg)[1] for _ in range(300)]
        return sum(re.search(r"[FGH]\(", p.full_solution.splitlines()[-2].split(" ")[1]) is not None for p in rows)

    assert ends_on_function(BuildConfig()) == 0  # the shipped corpus: never
    assert ends_on_function(BuildConfig(end_on_function=1.0)) > 30


def test_a_problem_can_need_at_most_two_facts():
    from dail.testbed.build import BuildConfig

    with pytest.raises(ValueError, match="at most two independent facts"):
        BuildConfig(hidden=(1, 3))


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
eval_data = ["{tb}/data/val.jsonl", "{tb}/data/test.jsonl", {{data = "{tb}/data/test.jsonl", name = "test-2x4", limit = 2, n = 4, k = [1, 4]}}]
methods = ["base", "sft-expert", "star", "psd-nll", "dail-nll", "dail", "oracle-sft", "oracle-prompt"]
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
        assert set(splits) == {"val", "test", "test-2x4"} and set(splits["test"]["pass_at_k"]) == {"1", "2"}
        assert set(splits["test-2x4"]["pass_at_k"]) == {"1", "4"}
    root = Path(result["run_dir"])
    assert (root / "report.html").exists()
    from dail.data import Sample, read_jsonl, read_problems
    from dail.rundir import RunDir

    run = RunDir(root)
    samples = list(read_jsonl(run.eval_dir("base", "test-2x4") / "samples.jsonl", Sample))
    assert len(samples) == 2 * 4  # the split's own limit and n
    # oracle-sft trained on each training problem's full solution as its target; oracle-prompt trained nothing
    oracle = read_problems(run.solutions("oracle-sft"))
    assert [p.solution for p in oracle] == [p.full_solution for p in read_problems(run.waypoints)]
    assert not run.adapter("oracle-prompt").exists()
    # the compute each method used: its own expansion's trace tokens and the target tokens of its steps
    from dail.data import read_traces

    used = result["compute"]
    assert used["dail"]["sampled"] == sum(len(t.token_ids) for t in read_traces(run.traces("traces.jsonl"), kept_only=False))
    assert used["psd-nll"]["sampled"] == sum(len(t.token_ids) for t in read_traces(run.traces("traces-psd.jsonl"),
                                                                                   kept_only=False))
    assert used["oracle-sft"]["sampled"] == used["base"]["trained"] == used["oracle-prompt"]["trained"] == 0
    steps = [json.loads(line) for line in (run.adapter("dail") / "log.jsonl").read_text().splitlines()]
    assert used["dail"]["trained"] == sum(r["tokens"] for r in steps) > 0  # one step, logged
    selection = list(read_jsonl(run.selection_rows, Sample))
    assert {u["selection"] for u in used.values()} == {sum(s.n_tokens for s in selection)}
    config = (run.eval_dir("oracle-prompt", "test") / "config.toml").read_text()
    assert 'role = "privileged"' in config


@pytest.mark.slow
def test_a_study_gives_every_seed_the_sweeps_and_their_mean(mini_testbed, tmp_path, one_thread):
    import statistics
    import tomllib

    from dail import pipeline
    from dail.study import StudyConfig, run

    base = tomllib.loads(RUN.format(tb=mini_testbed))
    base["methods"] = ["base", "dail", "oracle-sft"]
    base["eval_data"] = [base["eval_data"][0], {"data": base["eval_data"][1], "methods": ["base", "dail"]}]
    comparisons = [{"a": "dail", "b": "base", "metric": "pass@1", "split": "val"},
                   {"a": "dail tau=1", "b": "dail", "metric": "pass@2", "split": "val"},
                   {"a": "oracle-sft lr=0.003", "b": "dail lr=0.003", "metric": "pass@1", "split": "val"}]
    cfg = StudyConfig(name="s", out_dir=str(tmp_path), seeds=[0, 1], sweep_data=f"{mini_testbed}/data/val.jsonl",
                      tau=[0.8, 1.0], gamma=[0.0], lr=[3e-3], sweep_seeds=[0, 1], run=base, comparisons=comparisons,
                      resamples=200)
    calls = []

    def run_one(label, run_cfg):
        calls.append((label, run_cfg.name, run_cfg.methods, run_cfg.eval_data, run_cfg.expand.tau, run_cfg.train.gamma,
                      run_cfg.train.lr))
        return pipeline.run(run_cfg)

    summary = run(cfg, run_one)
    names = [c[1] for c in calls]
    assert names == ["seed-0", "seed-0-tau-1", "seed-0-gamma-0", "seed-0-lr-0.003",
                     "seed-1", "seed-1-tau-1", "seed-1-gamma-0", "seed-1-lr-0.003"]
    sweep = [c for c in calls if "-" in c[1][5:]]
    assert all([s.data for s in c[3]] == [cfg.sweep_data] for c in sweep)
    assert [c[2] for c in sweep[:3]] == [["dail"], ["dail"], ["dail", "oracle-sft"]]
    assert [(c[4], c[5], c[6]) for c in sweep[:3]] == [(1.0, 0.1, 1e-4), (0.8, 0.0, 1e-4), (0.8, 0.1, 3e-3)]
    # A sweep point samples only what its setting changes: tau re-expands the mixed rollout alone, the
    # gamma and lr points train and evaluate on copies of the seed's selection, waypoints and traces.
    root = tmp_path / "s"

    def started(run: str) -> set[str]:
        events = [json.loads(line) for line in (root / run / "events.jsonl").read_text().splitlines()]
        return {e["stage"] for e in events if e["event"] == "start"}

    assert started("seed-0-tau-1") == {"expand:traces.jsonl", "train:dail", "eval:dail/val", "report"}
    assert started("seed-0-gamma-0") == {"train:dail", "eval:dail/val", "report"}
    assert started("seed-0-lr-0.003") == {"train:dail", "train:oracle-sft", "eval:dail/val", "eval:oracle-sft/val",
                                          "report"}
    for name in ("selected.jsonl", "waypoints.jsonl", "traces.jsonl", "traces-negative.jsonl",
                 "solutions-oracle-sft.jsonl"):
        assert (root / "seed-0-lr-0.003" / name).read_bytes() == (root / "seed-0" / name).read_bytes()
    assert "tau = 1.0" in (root / "seed-0-tau-1" / "traces.config.toml").read_text()
    assert "tau = 0.8" in (root / "seed-0" / "traces.config.toml").read_text()
    for method in ("base", "dail", "dail tau=1", "dail gamma=0", "dail lr=0.003", "oracle-sft lr=0.003"):
        split = "test" if method == "base" else "val"
        values = [summary["per_seed"][s][method][split]["pass_at_k"]["1"] for s in ("0", "1")]
        stats = summary["mean"][method][split]["pass_at_k"]["1"]
        assert stats["mean"] == pytest.approx(statistics.fmean(values))
        assert stats["std"] == pytest.approx(statistics.stdev(values))
    # each comparison: per problem, the score averaged over seeds, then the mean difference (read back by hand)
    from dail.data import Sample, read_jsonl
    from dail.metrics import pass_at_k

    def per_problem(run: str, method: str, k: int) -> dict[str, float]:
        rows = list(read_jsonl(root / run / "eval" / method / "val" / "samples.jsonl", Sample))
        ids = sorted({r.problem_id for r in rows})
        return {p: pass_at_k(2, sum(r.correct for r in rows if r.problem_id == p), k) for p in ids}

    def seed_mean(runs: list[str], method: str, k: int) -> dict[str, float]:
        tables = [per_problem(r, method, k) for r in runs]
        return {p: statistics.fmean(t[p] for t in tables) for p in tables[0]}

    a, b = seed_mean(["seed-0", "seed-1"], "dail", 1), seed_mean(["seed-0", "seed-1"], "base", 1)
    first, second, third = summary["comparisons"]
    assert first["n"] == len(a) == 2 and first["mean"] == pytest.approx(statistics.fmean(a[p] - b[p] for p in a))
    a = seed_mean(["seed-0-tau-1", "seed-1-tau-1"], "dail", 2)
    b = seed_mean(["seed-0", "seed-1"], "dail", 2)
    assert second["mean"] == pytest.approx(statistics.fmean(a[p] - b[p] for p in a))
    a = seed_mean(["seed-0-lr-0.003", "seed-1-lr-0.003"], "oracle-sft", 1)
    b = seed_mean(["seed-0-lr-0.003", "seed-1-lr-0.003"], "dail", 1)
    assert third["mean"] == pytest.approx(statistics.fmean(a[p] - b[p] for p in a))
    assert first["lo"] <= first["mean"] <= first["hi"]
    assert "Paired comparisons" in (root / "study.md").read_text()
    assert (root / "study.md").read_text().count("±") > 4
    assert {p.name for p in (root / "plots").iterdir()} == {"pass_at_k.png", "token_budget.png", "sweeps.png"}
    calls.clear()
    run(cfg, run_one)  # a finished study reruns nothing but reading back
    assert len(calls) == 8
    assert not (root / "seed-0" / "eval" / "oracle-sft" / "test").exists()  # the split names its methods
    assert (root / "seed-0" / "eval" / "oracle-sft" / "val" / "metrics.json").exists()
    # the sweeps accompany only the seeds named; a comparison with a sweep point pairs over those seeds
    one = StudyConfig(**{**cfg.model_dump(), "sweep_seeds": [1], "comparisons": comparisons[1:2]})
    calls.clear()
    again = run(one, run_one)
    assert [c[1] for c in calls] == ["seed-0", "seed-1", "seed-1-tau-1", "seed-1-gamma-0", "seed-1-lr-0.003"]
    a, b = seed_mean(["seed-1-tau-1"], "dail", 2), seed_mean(["seed-1"], "dail", 2)
    assert again["comparisons"][0]["mean"] == pytest.approx(statistics.fmean(a[p] - b[p] for p in a))


def test_a_study_config_refuses_keys_it_sets_and_a_sweep_split_it_does_not_evaluate():
    from dail.study import StudyConfig

    run = {"train_data": "testbed-train", "eval_data": ["testbed-test"], "model": "testbed"}
    with pytest.raises(ValueError, match="run.seed is set by the study"):
        StudyConfig(name="s", seeds=[0], run={**run, "seed": 3})
    with pytest.raises(ValueError, match="sweep_data 'testbed-val' must name one of"):
        StudyConfig(name="s", seeds=[0], tau=[0.5], sweep_data="testbed-val", run=run)
    with pytest.raises(ValueError, match="'dial' is neither a method nor a sweep point"):
        StudyConfig(name="s", seeds=[0], run=run, comparisons=[{"a": "dial", "b": "base", "metric": "pass@1",
                                                                 "split": "testbed-test"}])
    with pytest.raises(ValueError, match="split 'testbed-val' is not one of"):
        StudyConfig(name="s", seeds=[0], run={**run, "methods": ["base", "dail"]},
                    comparisons=[{"a": "dail", "b": "base", "metric": "pass@1", "split": "testbed-val"}])
    with pytest.raises(ValueError, match="unknown metric"):
        StudyConfig(name="s", seeds=[0], run=run, comparisons=[{"a": "dail", "b": "base", "metric": "acc",
                                                                 "split": "testbed-test"}])
    with pytest.raises(ValueError, match="unknown key|Extra inputs|extra"):
        StudyConfig(name="s", seeds=[0], run={**run, "expand": {"tua": 1}})
    narrow = {**run, "methods": ["base", "dail"], "eval_data": [{"data": "testbed-test", "methods": ["base"]}]}
    with pytest.raises(ValueError, match=r"'dail' is not evaluated on 'testbed-test' \(its methods: \['base'\]\)"):
        StudyConfig(name="s", seeds=[0], run=narrow,
                    comparisons=[{"a": "dail", "b": "base", "metric": "pass@1", "split": "testbed-test"}])
    with pytest.raises(ValueError, match=r"methods \['rft'\] are not among the run's methods"):
        StudyConfig(name="s", seeds=[0], run={**narrow, "eval_data": [{"data": "testbed-test", "methods": ["rft"]}]})
    with pytest.raises(ValueError, match=r"sweep_seeds \[2\] must be among seeds \[0, 1\]"):
        StudyConfig(name="s", seeds=[0, 1], sweep_seeds=[2], run=run)


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
