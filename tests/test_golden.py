"""Golden files: the traces and samples of fixed small runs, on any CPU.

A refactor must not change what a seed produces. `expand` (threshold and nucleus rules, first-correct
keep) and `eval` (presence penalty, budgets, forced answers) run on a float64 tiny model with a
word-level tokenizer, and their rows must equal the ones in tests/golden/, written by an earlier
commit: every token, text, source, verdict, key and row order exactly, the log-probs to 1e-9 of
their value (`conftest.assert_same_rows`), since another CPU's kernels move float64 results by a
few ulps. The model's weights are read from tests/golden/tiny-llama.safetensors, not drawn: float32
`normal_` draws differ by an ulp between CPU kernels (AVX2 against ATEN_CPU_CAPABILITY=default),
which moves the log-probs by ~1e-7. When a change is MEANT to change the rows (a new default, a new
field), rewrite them with `DAIL_WRITE_GOLDEN=1 pytest tests/test_golden.py` and say so in the commit
message; that also draws the weights again (torch.manual_seed(0)) if their file is missing.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dail.config import EvalConfig, ExpandConfig
from dail.data import Problem, write_jsonl

from conftest import assert_same_jsonl, assert_same_rows, read_rows, word_llama, word_tokenizer

GOLDEN = Path(__file__).parent / "golden"
WEIGHTS = GOLDEN / "tiny-llama.safetensors"
WRITE = os.environ.get("DAIL_WRITE_GOLDEN") == "1"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    tokenizer = word_tokenizer()
    model = word_llama(tokenizer)  # seed 0: the draw a missing weights file is written from
    if WRITE and not WEIGHTS.exists():
        save_file({name: t.contiguous() for name, t in model.state_dict().items()}, WEIGHTS)
    assert WEIGHTS.exists(), f"{WEIGHTS} missing: draw it with DAIL_WRITE_GOLDEN=1"
    model.load_state_dict(load_file(WEIGHTS))
    model = model.to(torch.float64).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(25)  # sharper than random: both sources and some retries appear
    model.generation_config.eos_token_id = list(range(9, 19))  # traces end at different steps
    monkeypatch.setattr("dail.models.load", lambda name, **kw: (model, tokenizer))
    problems = [Problem(id=f"g{i}", problem="what is two plus " + "three " * (i + 1) + "?",
                        solution="add to get five . so = five . the answer is \\boxed{five}", answer="five")
                for i in range(4)]
    write_jsonl(tmp_path / "problems.jsonl", problems)
    return tmp_path


def _check(path: Path, name: str) -> None:
    golden = GOLDEN / name
    if WRITE:
        golden.write_bytes(path.read_bytes())
    assert golden.exists(), f"{golden} missing: write it with DAIL_WRITE_GOLDEN=1"
    assert_same_jsonl(path, golden)


@pytest.mark.parametrize("rule, tau", [("threshold", 0.3), ("nucleus", 0.02)])
def test_expand_rows_are_the_golden_ones(tiny, rule, tau):
    from dail.expand import run

    cfg = ExpandConfig(data=str(tiny / "problems.jsonl"), out=str(tiny / "traces.jsonl"), n=3, batch_size=5,
                       seed=11, device="cpu", rule=rule, tau=tau, sampling={"max_new_tokens": 10})
    run(cfg)
    _check(tiny / "traces.jsonl", f"traces-{rule}.jsonl")


def test_eval_rows_are_the_golden_ones(tiny):
    from dail.evaluate import run

    cfg = EvalConfig(data=str(tiny / "problems.jsonl"), out=str(tiny / "eval"), n=3, k=[1, 3], batch_size=5,
                     seed=11, device="cpu", budgets=[3, 6], presence_penalty=1.0, force_answer_tokens=3,
                     sampling={"max_new_tokens": 10})
    run(cfg)
    _check(tiny / "eval" / "samples.jsonl", "samples.jsonl")


# --------------------------------------------------------------------------------------------------
# the comparison itself: it must catch every change of a row and let a few ulps through


@pytest.fixture
def golden_rows():
    return read_rows(GOLDEN / "traces-threshold.jsonl")


def _fails(got, want) -> str:
    with pytest.raises(AssertionError) as err:
        assert_same_rows(got, want)
    return str(err.value)


def test_the_comparison_fails_on_any_discrete_change(golden_rows):
    want = golden_rows
    row = next(i for i, r in enumerate(want) if len(r["token_ids"]) > 3)
    token = copy.deepcopy(want)
    token[row]["token_ids"][2] += 1
    assert "token_ids[2]" in _fails(token, want)
    swapped = copy.deepcopy(want)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    assert "row 0" in _fails(swapped, want)
    missing = copy.deepcopy(want)
    del missing[row]["reject_reason"]
    assert "keys" in _fails(missing, want)
    extra = copy.deepcopy(want)
    extra[row]["note"] = None
    assert "keys" in _fails(extra, want)
    reordered = copy.deepcopy(want)
    reordered[row] = dict(reversed(list(reordered[row].items())))
    assert "keys" in _fails(reordered, want)
    for key, value in (("kept", True), ("answer", "five"), ("source", "L" * len(want[row]["source"])),
                       ("text", want[row]["text"] + " "), ("sample", 7)):
        changed = copy.deepcopy(want)
        changed[row][key] = value
        assert f".{key}" in _fails(changed, want)
    assert "rows" in _fails(want[:-1], want)
    as_int = copy.deepcopy(want)
    as_int[row]["sample"] = float(as_int[row]["sample"])  # 1.0 for 1: a discrete field stays an int
    assert ".sample" in _fails(as_int, want)
    nested = [{"budgets": {"3": {"correct": False}}}]
    assert "budgets.3.correct" in _fails([{"budgets": {"3": {"correct": True}}}], nested)


def test_the_comparison_holds_floats_to_1e_9_of_their_value(golden_rows):
    want = golden_rows

    def moved(relative: float, key: str = "logprob_privileged") -> list:
        got = copy.deepcopy(want)
        got[3][key][0] *= 1 + relative
        return got

    assert_same_rows(moved(1e-14), want)  # a few ulps: another CPU
    assert_same_rows(moved(-1e-14, "logprob_learner"), want)
    assert "logprob_privileged[0]" in _fails(moved(1e-6), want)  # a real change of the model's numbers
    assert "logprob_learner[0]" in _fails(moved(-1e-6, "logprob_learner"), want)
    assert "[0]" in _fails(moved(1e-8), want)
    # the absolute floor: a log-prob near 0 may move by 1e-13, not by 1e-10
    near_zero = [{"lp": [-3e-13]}]
    assert_same_rows([{"lp": [-2e-13]}], near_zero)
    assert "lp[0]" in _fails([{"lp": [-1e-10]}], near_zero)
    assert "lp[0]" in _fails([{"lp": [float("nan")]}], near_zero)
    assert_same_rows([{"lp": [float("-inf"), float("nan")]}], [{"lp": [float("-inf"), float("nan")]}])
