"""The shipped test-bed: its files are the recorded default build's, and it carries the premise it exists for."""

from __future__ import annotations

import json

import pytest

from dail import testbed
from dail.data import read_traces, write_jsonl
from dail.testbed.build import BuildConfig, file_hashes, make_splits

INFO = json.loads((testbed.SHIPPED / "build.json").read_text())


def test_the_shipped_files_are_the_recorded_build_of_the_default_config(tmp_path):
    from transformers import AutoModelForCausalLM

    from dail.datasets import resolve_problems
    from dail.models import resolve

    # `dail testbed build` with no options rebuilds exactly this (the build is deterministic: test_testbed)
    assert INFO["config"] == BuildConfig().model_dump(mode="json")
    assert file_hashes(testbed.SHIPPED) == INFO["files"]
    for name, rows in make_splits(BuildConfig()).items():  # the splits regenerate from the seed alone
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (testbed.SHIPPED / "data" / f"{name}.jsonl").read_bytes()
    assert resolve("testbed").path == str(testbed.SHIPPED / "model")
    model = AutoModelForCausalLM.from_pretrained(resolve("testbed").path)
    assert sum(p.numel() for p in model.parameters()) == INFO["parameters"]
    assert len(resolve_problems("testbed-test")) == INFO["config"]["split_sizes"]["test"]


@pytest.mark.slow
def test_the_shipped_model_fails_hard_problems_alone_and_solves_them_with_the_reference(tmp_path):
    """The premise, at a size fixed here: base pass@1 low but pass@32 above 0; the privileged student solves most."""
    from dail import evaluate, expand
    from dail.config import EvalConfig, ExpandConfig

    common = dict(model="testbed", data="testbed-val", limit=12, device="cpu", seed=0)
    metrics = evaluate.run(EvalConfig(**common, out=str(tmp_path / "base"), n=32, k=[1, 32], batch_size=128,
                                      force_answer=False, sampling={"max_new_tokens": 240}))
    assert metrics["pass_at_k"]["1"] < 0.25
    assert metrics["pass_at_k"]["32"] > 0
    expand.run(ExpandConfig(**common, out=str(tmp_path / "priv.jsonl"), n=2, tau=1.0, keep="all-correct",
                            batch_size=24, sampling={"max_new_tokens": 240}))
    traces = read_traces(tmp_path / "priv.jsonl", kept_only=False)
    assert len(traces) == 24
    assert sum(t.kept for t in traces) / len(traces) >= 0.6
