"""Golden files: the traces and samples of fixed small runs, byte for byte.

A refactor must not change what a seed produces. `expand` (threshold and nucleus rules, first-correct
keep) and `eval` (presence penalty, budgets, forced answers) run on a seeded float64 tiny model with a
word-level tokenizer, and their files must equal the ones in tests/golden/, written by an earlier
commit. When a change is MEANT to change them (a new default, a new field), rewrite them with
`DAIL_WRITE_GOLDEN=1 pytest tests/test_golden.py` and say so in the commit message.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dail.config import EvalConfig, ExpandConfig
from dail.data import Problem, write_jsonl

from test_expand import word_tokenizer

GOLDEN = Path(__file__).parent / "golden"
WRITE = os.environ.get("DAIL_WRITE_GOLDEN") == "1"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    tokenizer = word_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = LlamaForCausalLM(config).to(torch.float64).eval()
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
    assert path.read_bytes() == golden.read_bytes(), f"{name} changed: a seed now produces other rows"


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
