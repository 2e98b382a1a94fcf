"""The shipped test-bed: its files are the recorded default build's, and it carries the premise it exists for."""

from __future__ import annotations

import json

import pytest

from dail import testbed
from dail.data import write_jsonl
from dail.config import PromptConfig
from dail.testbed.build import BuildConfig, build_tokenizer, file_hashes, make_splits

INFO = json.loads((testbed.SHIPPED / "build.json").read_text())


def test_the_shipped_files_are_the_recorded_build_of_the_default_config(tmp_path):
    from transformers import AutoModelForCausalLM

    from dail.datasets import resolve_problems
    from dail.models import resolve

    # `dail testbed build` with no options rebuilds this: the splits and tokenizer byte for byte anywhere, the
    # weights byte for byte only on the CPU kernels and thread count build.json names (test_testbed: deterministic)
    assert INFO["config"] == BuildConfig().model_dump(mode="json")
    assert file_hashes(testbed.SHIPPED) == INFO["files"]
    for name, rows in make_splits(BuildConfig()).items():  # the splits regenerate from the seed alone
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (testbed.SHIPPED / "data" / f"{name}.jsonl").read_bytes()
    tokenizer = build_tokenizer(BuildConfig(), PromptConfig())  # pure text and integers: the same on any machine
    tokenizer.save_pretrained(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").read_bytes() == (testbed.SHIPPED / "model" / "tokenizer.json").read_bytes()
    assert resolve("testbed").path == str(testbed.SHIPPED / "model")
    model = AutoModelForCausalLM.from_pretrained(resolve("testbed").path)
    assert sum(p.numel() for p in model.parameters()) == INFO["parameters"]
    assert len(resolve_problems("testbed-test")) == INFO["config"]["split_sizes"]["test"]


@pytest.mark.slow
def test_each_part_of_dail_has_something_to_act_on_in_the_shipped_test_bed():
    """The premise at the demo's expansion settings, at sizes fixed here; which method wins is not asserted.

    24 validation problems, the demo's rollouts (threshold rule, tau 0.8, 4 per problem) against
    privileged-only ones, 16 base samples per problem.
    """
    from dail.cli import _probe_expand
    from dail.testbed.probe import ProbeSizes, probe

    result = probe(testbed.SHIPPED, _probe_expand(None), ProbeSizes(problems=24, samples=16, split="val"))
    ex, tf, summary = result["expansion"], result["teacher_forced"], result["summary"]
    assert ex["pairs"] == 96
    # mixing: the mixed rollout is not the privileged-only one in disguise, and it is the learner's own writing
    assert ex["identical_share"] < 0.5
    assert 0.40 <= ex["learner_token_share"] <= 0.95
    assert ex["base_nll_privileged_only"] > ex["base_nll_mixed"]
    # the contrast: the negative reference takes shortcuts far more often than the privileged student
    assert tf["negative"]["shortcut_rate"] >= 5 * tf["privileged"]["shortcut_rate"]
    # no length confound: the learner prompt is no handicap on routine steps ...
    assert summary["routine_gap"] <= 0.05
    # ... the hidden facts are what it lacks, and the reference supplies them
    assert tf["learner"]["fact_accuracy"] < 0.3 and tf["privileged"]["fact_accuracy"] > 0.8
    # hard, but not hopeless
    assert 0.05 <= result["base_pass_at_k"]["16"] <= 0.60
