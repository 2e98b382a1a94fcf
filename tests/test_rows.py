"""Training rows: kept traces (or solutions) joined with their problems per the objective's registry
entry, the seeded step plan, micro-batches, and collation. No model: the embedded tokenizer only."""

from __future__ import annotations

import pytest

from dail.config import ConfigError, PromptConfig, TrainConfig
from dail.data import DataError, write_jsonl
from dail.datasets import resolve_problems
from dail.objectives import OBJECTIVES
from dail.prompts import render
from dail.rows import TrainRow, build_rows, collate, micro_batches, plan_steps, step_rows
from dail.waypoints import waypoints_for

from conftest import hand_trace

TRACE_IDS = ([5, 6, 7], [8, 9], [10, 11, 12, 13])  # one per problem


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    """problems.jsonl (3 bundled problems); traces.jsonl: one kept trace each, a rejected one, an empty kept one."""
    problems = resolve_problems("arith-train")[:3]
    write_jsonl(tmp_path / "problems.jsonl", problems)
    traces = [hand_trace(p.id, ids) for p, ids in zip(problems, TRACE_IDS)]
    traces.insert(1, hand_trace(problems[0].id, [1, 2], sample=1, kept=False))
    traces.append(hand_trace(problems[1].id, [], sample=2))
    write_jsonl(tmp_path / "traces.jsonl", traces)
    return {"problems": str(tmp_path / "problems.jsonl"), "traces": str(tmp_path / "traces.jsonl")}


def _cfg(files: dict[str, str], tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{"traces": files["traces"], "problems": files["problems"], "out": str(tmp_path / "out"), **kw})


# --------------------------------------------------------------------------------------------------
# rows


@pytest.mark.parametrize("objective", ["contrastive", "contrastive-target", "nll"])
def test_trace_rows_are_the_kept_nonempty_traces_with_the_objectives_prompts(files, tmp_path, tokenizer, objective):
    cfg = _cfg(files, tmp_path, objective=objective)
    rows = build_rows(cfg, tokenizer)
    problems = resolve_problems("arith-train")[:3]
    assert [r.key for r in rows] == [f"{p.id}#0" for p in problems]  # rejected and empty traces left out, in order
    assert [r.target for r in rows] == list(TRACE_IDS)
    roles = {"learner", "privileged", "negative"} if OBJECTIVES[objective].needs_references else {"learner"}
    for r, p in zip(rows, problems):
        assert set(r.prompts) == roles
        for role in roles:
            waypoints = waypoints_for(p) if role == "negative" else None
            assert r.prompts[role] == render(tokenizer, role, p, PromptConfig(), waypoints=waypoints)


def test_rejected_traces_count_when_kept_only_is_off(files, tmp_path, tokenizer):
    rows = build_rows(_cfg(files, tmp_path, objective="nll", kept_only=False), tokenizer)
    assert [r.target for r in rows] == [TRACE_IDS[0], [1, 2], *TRACE_IDS[1:]]


def test_sft_expert_rows_are_the_solutions_then_eos_under_the_learner_prompt(files, tmp_path, tokenizer):
    rows = build_rows(_cfg(files, tmp_path, objective="sft-expert", traces=None), tokenizer)
    problems = resolve_problems("arith-train")[:3]
    assert [r.key for r in rows] == [f"{p.id}#solution" for p in problems]
    for r, p in zip(rows, problems):
        assert r.target == tokenizer(p.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert set(r.prompts) == {"learner"}


def test_trace_naming_an_unknown_problem_names_the_file_the_line_and_the_id(files, tmp_path, tokenizer):
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [hand_trace(resolve_problems("arith-train")[0].id, [5]), hand_trace("no-such-problem", [5, 6])])
    with pytest.raises(DataError) as info:
        build_rows(_cfg(files, tmp_path, traces=str(bad)), tokenizer)
    assert str(bad) in str(info.value) and "no-such-problem" in str(info.value) and ":2:" in str(info.value)


def test_no_kept_traces_is_a_clear_error(files, tmp_path, tokenizer):
    bad = tmp_path / "bad.jsonl"
    row = hand_trace("x", [5, 6], kept=False, finish="length")
    row.reject_reason = "length"
    write_jsonl(bad, [row])
    with pytest.raises(DataError, match=r"no kept traces to train on \(1 rows: 1 length\)"):
        build_rows(_cfg(files, tmp_path, traces=str(bad)), tokenizer)


def test_only_empty_kept_traces_is_a_clear_error(files, tmp_path, tokenizer):
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [hand_trace(resolve_problems("arith-train")[0].id, [])])
    with pytest.raises(DataError, match="every kept trace is empty"):
        build_rows(_cfg(files, tmp_path, traces=str(bad)), tokenizer)


def test_trace_objectives_need_a_traces_file(files, tmp_path, tokenizer):
    with pytest.raises(ConfigError, match="traces: required for objective 'nll'"):
        build_rows(_cfg(files, tmp_path, traces=None, objective="nll"), tokenizer)


# --------------------------------------------------------------------------------------------------
# the step plan


def test_step_plan_is_a_seeded_shuffle_per_epoch():
    order = [step_rows(10, 4, seed=3, step=s, per_epoch=3) for s in range(6)]
    assert sorted(sum(order[:3], [])) == list(range(10)) and sorted(sum(order[3:], [])) == list(range(10))
    assert order[:3] != order[3:]  # a new order each epoch...
    assert order == [step_rows(10, 4, seed=3, step=s, per_epoch=3) for s in range(6)]  # ...reproducible


def test_plan_steps_counts_epochs_and_max_steps(tmp_path):
    cfg = TrainConfig(problems="arith-train", out=str(tmp_path), epochs=2.5, batch_size=3)
    assert plan_steps(10, cfg) == (4, 10)
    assert plan_steps(10, cfg.model_copy(update={"max_steps": 7})) == (4, 7)
    assert plan_steps(10, cfg, num_processes=2) == (3, 8)  # a 1-row last step cannot feed 2 processes
    with pytest.raises(ConfigError, match="1 training rows cannot feed 2 processes"):
        plan_steps(1, cfg, num_processes=2)


def test_micro_batches_keep_the_last_one_full():
    assert [len(m) for m in micro_batches(list(range(6)), 4)] == [1, 1, 2, 2]
    assert [len(m) for m in micro_batches([0], 3)] == [0, 0, 1]
    assert sum(micro_batches(list(range(7)), 3), []) == list(range(7))  # contiguous, in order


# --------------------------------------------------------------------------------------------------
# collation


def test_collate_pads_right_and_indexes_the_columns_that_predict_each_target_token():
    rows = [TrainRow("a#0", {"learner": [1, 2, 3]}, [7, 8]), TrainRow("b#0", {"learner": [4]}, [9, 10, 11])]
    ids, index = collate(rows, "learner", pad_id=0, device="cpu")
    assert ids.tolist() == [[1, 2, 3, 7], [4, 9, 10, 0]]  # prompt + target[:-1], right-padded  [B, L]
    # column len(prompt) - 1 + j predicts target token j; row-major, then token, flat over [B * L]
    assert index.tolist() == [2, 3, 4 + 0, 4 + 1, 4 + 2]
    # at each indexed column, the next token of the unpadded `prompt + target` is the target token
    full = [r.prompts["learner"] + r.target for r in rows]
    width = ids.shape[1]
    assert [full[b][c + 1] for b, c in (divmod(i, width) for i in index.tolist())] == [7, 8, 9, 10, 11]
