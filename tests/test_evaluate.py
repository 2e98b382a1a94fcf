"""Tests for dail.evaluate: token pieces, hand-computed pass@k and budgets, end-to-end runs, resume."""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from dail import evaluate, grading
from dail.config import ConfigError, EvalConfig
from dail.data import Problem, Sample, read_jsonl
from dail.engine import Generation
from dail.metrics import pass_at_k
from dail.sampling import row_key

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: intra-op threads only add waiting

# One integer, one math and one GPQA-style multiple-choice problem, and one that cannot be graded.
PROBLEMS = [
    {"id": "int", "problem": "What is 2 + 3?", "answer": "5"},
    {"id": "frac", "problem": "What is 1/4 + 1/4?", "answer": "\\frac{1}{2}"},
    {"id": "mc", "problem": "Which of these is a noble gas?", "choices": ["Oxygen", "Argon", "Nitrogen", "Hydrogen"],
     "answer": "B"},
    {"id": "open", "problem": "Prove that there are infinitely many primes."},
]


def write_problems(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def config(model: str, data: str, out: Path, **kw) -> EvalConfig:
    # top_p = 1 skips a vocabulary sort per step: the CPU tests are dominated by it otherwise.
    base = {"model": model, "data": data, "out": str(out), "n": 4, "k": [1, 2, 4], "device": "cpu", "batch_size": 6,
            "sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8}, "force_answer_tokens": 4}
    return EvalConfig.model_validate({**base, **kw})


# --------------------------------------------------------------------------- pure parts


def test_default_budgets() -> None:
    assert evaluate.default_budgets(1024) == [16, 32, 64, 128, 256, 512, 1024]
    assert evaluate.default_budgets(100) == [16, 32, 64, 100]
    assert evaluate.default_budgets(16) == [16]
    assert evaluate.default_budgets(5) == [5]


def test_token_pieces_join_to_the_decoded_text(tokenizer) -> None:
    text = "Héllo wörld — 数学 😀 \\boxed{42}\n\nend"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    pieces = grading.token_pieces(tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == text
    assert pieces[-1] == ""  # EOS adds no text
    # A multi-byte character split over tokens is carried whole by the token that completes it.
    assert all("\ufffd" not in p for p in pieces)


def test_prefix_texts_are_the_texts_of_the_prefixes(tokenizer) -> None:
    """A cut's text is what `token_pieces` of the cut tokens joins to, torn characters included."""
    ids = tokenizer("Héllo 数学 😀 \\boxed{42}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    cuts = list(range(1, len(ids)))
    texts = grading.prefix_texts(tokenizer, ids, cuts + [0, len(ids), len(ids) + 5])
    assert sorted(texts) == cuts  # only real cuts: 0 < c < len(ids)
    for c in cuts:
        assert texts[c] == "".join(grading.token_pieces(tokenizer, ids[:c])), c
    assert any("\ufffd" in t for t in texts.values())  # a cut inside a character shows its torn decode


@pytest.mark.parametrize(("cue", "continuation", "expected"), [
    ("Final answer: \\boxed{", "5}.", ("5", True)),  # the cue opens the box, the continuation closes it
    ("Final answer: \\boxed{", "6}", ("6", False)),
    ("Final answer: \\boxed{", "5 and so on", (None, False)),  # never closed
    ("The answer, in \\boxed{}, is", " \\boxed{5}", ("5", True)),
    ("The answer, in \\boxed{x}, is", " hmm", (None, False)),  # the cue's own box is no answer
    ("Answer:", " 5", ("5", True)),  # a phrase answer ending in the continuation
])
def test_grade_forced(cue, continuation, expected) -> None:
    assert evaluate.grade_forced(cue, continuation, "5", "integer") == expected


def test_grade_sample_maps_the_answer_end_to_its_token() -> None:
    pieces = ["So ", "the ", "sum ", "is ", "\\boxed{", "4", "2", "}", ".", ""]
    text, answer, correct, token = evaluate.grade_sample(pieces, "42", "integer")
    assert (text, answer, correct, token) == ("So the sum is \\boxed{42}.", "42", True, 7)
    assert evaluate.grade_sample(["no ", "answer"], "42", "integer")[1:] == (None, False, None)
    assert evaluate.grade_sample(["\\boxed{", "C", "}"], "C", "choice")[2:] == (True, 2)
    assert evaluate.grade_sample(["\\boxed{", "C", "}"], "B", "choice")[2] is False


def _s(pid: str, i: int, correct: bool, n_tokens: int, **cut: bool) -> Sample:
    """A sample; `cut` gives the verdict at each budget (b8=True: correct on its first 8 tokens)."""
    return Sample(problem_id=pid, sample=i, seed=0, text="", n_tokens=n_tokens, finish="eos", answer=None,
                  correct=correct, budgets={b[1:]: Sample.AtBudget(answer=None, correct=v) for b, v in cut.items()})


def test_compute_metrics_by_hand() -> None:
    # p: 2 of 4 correct; q: 1 of 4. Budgets 4 and 8 cut the samples longer than them.
    samples = [_s("p", 0, True, 4), _s("p", 1, True, 9, b4=False, b8=True), _s("p", 2, False, 6, b4=True),
               _s("p", 3, False, 8, b4=False),
               _s("q", 0, False, 3), _s("q", 1, False, 5, b4=False), _s("q", 2, True, 10, b4=False, b8=False),
               _s("q", 3, False, 12, b4=False, b8=False)]
    samples[6].forced, samples[6].forced_tokens = True, 6
    m = evaluate.compute_metrics(samples, ["p", "q"], 4, [1, 2, 4], [4, 8, 16])
    # pass@2 of (n=4, c=2) is 1 - C(2,2)/C(4,2) = 5/6; of (4, 1) it is 1 - C(3,2)/C(4,2) = 1/2.
    assert m["pass_at_k"] == pytest.approx({"1": (2 / 4 + 1 / 4) / 2, "2": (5 / 6 + 1 / 2) / 2, "4": 1.0})
    assert m["accuracy"] == pytest.approx(3 / 8)
    assert m["mean_tokens"] == pytest.approx(57 / 8)
    assert m["mean_tokens_correct"] == pytest.approx((4 + 9 + 10) / 3)
    assert (m["forced_rate"], m["mean_forced_tokens"]) == (1 / 8, 6 / 8)
    # Budget 4: p0 ended within it (correct), p2 is correct on its first 4 tokens, q has none.
    # Budget 8: p0 and p1 (cut, correct), p2 and p3 ended within it (wrong); q none (q2 is cut, wrong).
    assert m["accuracy_at_budget"] == pytest.approx({"4": 2 / 8, "8": 2 / 8, "16": 3 / 8})
    assert m["pass_at_k_budget"]["4"] == pytest.approx({"1": 1 / 4, "2": (5 / 6 + 0) / 2, "4": 1 / 2})
    assert m["pass_at_k_budget"]["16"] == m["pass_at_k"]
    assert m["correct_per_problem"] == {"p": 2, "q": 1}
    with pytest.raises(ValueError, match="lack 4 samples"):
        evaluate.compute_metrics(samples[:-1], ["p", "q"], 4, [1], [8])
    with pytest.raises(ValueError, match="no verdict at budget 2"):
        evaluate.compute_metrics(samples, ["p", "q"], 4, [1], [2])


# --------------------------------------------------------------------------- forced texts


def test_run_with_forced_texts_by_hand(tmp_path, monkeypatch, tiny_model_dir, tokenizer) -> None:
    """The engine is replaced by fixed token sequences; pass@k and budgets are checked by hand.

    Without forced answers a sample counts at budget B when its first B tokens hold the right answer.
    """
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    eos = tokenizer.eos_token_id
    filler = enc(" so")[0]

    def ending_at(box: str, last: int) -> list[int]:
        """Filler, then `box`, whose closing brace is token `last`; then EOS."""
        ids = enc(box)
        return [filler] * (last + 1 - len(ids)) + ids + [eos]

    forced = {  # (problem, sample) -> token ids; the answer's closing brace is at the index given
        ("int", 0): ending_at("\\boxed{5}", 5),
        ("int", 1): ending_at("\\boxed{5}", 15),  # inside budget 16 (15 < 16)
        ("int", 2): ending_at("\\boxed{6}", 5),  # wrong
        ("int", 3): [filler] * 20,  # no answer, cut at the length limit
        ("mc", 0): ending_at("\\boxed{B}", 16),  # right, but not inside budget 16
        ("mc", 1): ending_at("\\boxed{A}", 6),
        ("mc", 2): ending_at("\\boxed{(A)}", 6),
        ("mc", 3): ending_at("\\boxed{D}", 30),
        **{("frac", i): ending_at("\\boxed{0.5}", 7) for i in range(4)},  # math-verify: 0.5 = 1/2
    }
    by_key = {row_key(0, pid, i, "eval"): ids for (pid, i), ids in forced.items()}

    def fake_generate(self, prompts, keys, choose, *, max_new_tokens, stop_on_eos=True):
        for index, key in reversed(list(enumerate(keys))):  # out of order, as a real batch finishes
            ids = by_key[key]
            yield Generation(index, token_ids=ids, source=[0] * len(ids), logprobs=[[0.0] * len(ids)],
                             finish="eos" if ids[-1] == eos else "length")

    monkeypatch.setattr("dail.engine.Engine.generate", fake_generate)
    data = write_problems(tmp_path / "p.jsonl", PROBLEMS)
    m = evaluate.run(config(tiny_model_dir, data, tmp_path / "out", budgets=[8, 16, 64],
                            sampling={"max_new_tokens": 64}, force_answer=False))

    rows = {(s.problem_id, s.sample): s for s in read_jsonl(tmp_path / "out" / "samples.jsonl", Sample)}
    assert [(s.answer, s.correct, s.answer_token) for s in (rows[("int", i)] for i in range(4))] == [
        ("5", True, 5), ("5", True, 15), ("6", False, 5), (None, False, None)]
    assert [rows[("mc", i)].correct for i in range(4)] == [True, False, False, False]
    assert rows[("mc", 0)].answer_token == 16 and rows[("int", 3)].finish == "length"
    assert all(rows[("frac", i)].correct and rows[("frac", i)].answer_token == 7 for i in range(4))
    # Verdicts at the budgets that cut a sample: int 1's box is not in its first 8 tokens, but in its first 16.
    assert {b: (v.answer, v.correct, v.forced) for b, v in rows[("int", 1)].budgets.items()} == {
        "8": (None, False, False), "16": ("5", True, False)}
    assert rows[("mc", 0)].budgets["16"].answer is None  # the box closes at token 16: still open in 16 tokens
    assert not any(s.forced for s in rows.values())

    # Correct counts: int 2, frac 4, mc 1.  pass@2(4, c): c=1 -> 1/2, c=2 -> 5/6, c=4 -> 1.
    assert m["pass_at_k"] == pytest.approx({"1": (2 / 4 + 1 + 1 / 4) / 3, "2": (5 / 6 + 1 + 1 / 2) / 3, "4": 1.0})
    # Budget 8: int 1 (token 5), frac 4, mc 0.  Budget 16: int 2 (5, 15), frac 4, mc 0 (16 is not < 16).
    assert m["pass_at_k_budget"]["8"] == pytest.approx({"1": (1 / 4 + 1 + 0) / 3, "2": (1 / 2 + 1 + 0) / 3,
                                                        "4": (1 + 1 + 0) / 3})
    assert m["pass_at_k_budget"]["16"] == pytest.approx({"1": (2 / 4 + 1 + 0) / 3, "2": (5 / 6 + 1 + 0) / 3,
                                                         "4": (1 + 1 + 0) / 3})
    assert m["pass_at_k_budget"]["64"] == pytest.approx(m["pass_at_k"])
    assert m["accuracy_at_budget"] == pytest.approx({"8": 5 / 12, "16": 6 / 12, "64": 7 / 12})
    lengths = {key: len(ids) for key, ids in forced.items()}
    assert m["mean_tokens"] == pytest.approx(sum(lengths.values()) / 12)
    assert m["mean_tokens_correct"] == pytest.approx(sum(lengths[k] for k, s in rows.items() if s.correct) / 7)
    assert m["n_problems"] == 3 and m["n_samples"] == 12 and m["n_skipped_unverifiable"] == 1


# --------------------------------------------------------------------------- end to end on a tiny model


def recompute_pass_at_k(samples: list[Sample], k: int) -> float:
    """Mean pass@k over problems from the rows, counted here independently of evaluate."""
    n, c = defaultdict(int), defaultdict(int)
    for s in samples:
        n[s.problem_id] += 1
        c[s.problem_id] += s.correct
    return math.fsum(pass_at_k(n[p], c[p], k) for p in n) / len(n)


def test_run_end_to_end_and_resume(tmp_path, tiny_model_dir, tokenizer) -> None:
    data = write_problems(tmp_path / "p.jsonl", PROBLEMS)
    full = tmp_path / "full"
    m = evaluate.run(config(tiny_model_dir, data, full, sampling={"top_p": 0.95, "max_new_tokens": 8}))

    samples = read_jsonl(full / "samples.jsonl", Sample)
    assert [(s.problem_id, s.sample) for s in samples] == [(p, i) for p in ("int", "frac", "mc") for i in range(4)]
    for s in samples:
        assert 1 <= s.n_tokens <= 8 and s.seed == 0
        assert s.finish == "eos" or s.n_tokens == 8
        assert s.forced == (s.answer_token is None)  # a sample without an answer of its own is forced one
        assert s.forced or s.answer is not None
        assert (s.forced_text is not None) == s.forced and s.forced_tokens <= 4
    on_disk = json.loads((full / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    for key in ("pass_at_k", "accuracy", "mean_tokens", "mean_tokens_correct", "pass_at_k_budget",
                "accuracy_at_budget", "budgets", "n_problems", "n_samples", "config", "versions"):
        assert key in m, key
    assert set(m["versions"]) == {"dail", "torch", "transformers", "python"}
    assert m["config"]["n"] == 4 and m["budgets"] == [8]
    assert (m["n_problems"], m["n_samples"], m["n_skipped_unverifiable"]) == (3, 12, 1)
    for k in (1, 2, 4):
        assert m["pass_at_k"][str(k)] == pytest.approx(recompute_pass_at_k(samples, k))
    assert m["mean_tokens"] == pytest.approx(sum(s.n_tokens for s in samples) / 12)
    assert (full / "config.toml").read_text().startswith('model = "')

    # A kill mid-write: the file is cut inside a row; the rerun finishes it and matches the full run.
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(full / "config.toml", cut)
    shutil.copy(full / "provenance.json", cut)  # a killed run had written it: rows are added only beside one
    content = (full / "samples.jsonl").read_bytes()
    (cut / "samples.jsonl").write_bytes(content[: int(len(content) * 0.45)])
    m2 = evaluate.run(config(tiny_model_dir, data, cut, sampling={"top_p": 0.95, "max_new_tokens": 8}))
    assert (cut / "samples.jsonl").read_bytes() == content
    assert {k: v for k, v in m2.items() if k != "config"} == {k: v for k, v in m.items() if k != "config"}

    # Nothing left to do: a rerun samples nothing and rewrites the same metrics.
    m3 = evaluate.run(config(tiny_model_dir, data, cut, sampling={"top_p": 0.95, "max_new_tokens": 8}))
    assert (cut / "samples.jsonl").read_bytes() == content and m3 == m2


def test_rerun_with_a_different_setting_is_refused(tmp_path, tiny_model_dir) -> None:
    data = write_problems(tmp_path / "p.jsonl", PROBLEMS[:1])
    evaluate.run(config(tiny_model_dir, data, tmp_path / "o", n=1, k=[1], sampling={"max_new_tokens": 4}))
    with pytest.raises(ConfigError, match="seed"):
        evaluate.run(config(tiny_model_dir, data, tmp_path / "o", n=1, k=[1], seed=1, sampling={"max_new_tokens": 4}))
    # Settings that change a sample or its verdicts: the penalty, the forced answers, the budgets.
    for key, value in (("presence_penalty", 1.5), ("force_answer", False), ("answer_cue", "Answer: \\boxed{"),
                       ("force_answer_tokens", 9), ("budgets", [2])):
        with pytest.raises(ConfigError, match=key):
            evaluate.run(config(tiny_model_dir, data, tmp_path / "o", n=1, k=[1], sampling={"max_new_tokens": 4},
                                **{key: value}))
    # More samples of the same setting are fine: samples 1 and 2 are added, sample 0 is kept.
    before = (tmp_path / "o" / "samples.jsonl").read_text()
    m = evaluate.run(config(tiny_model_dir, data, tmp_path / "o", n=3, k=[1, 3], sampling={"max_new_tokens": 4}))
    assert (tmp_path / "o" / "samples.jsonl").read_text().startswith(before) and m["n_samples"] == 3


def test_gpqa_style_multiple_choice_end_to_end(tmp_path, monkeypatch, tiny_model_dir) -> None:
    """4 options, a letter answer: lettered prompt, graded as `choice`, with no special casing."""
    rows = [{"id": f"gpqa-{i}", "problem": f"Question {i} <about> physics?", "choices": ["alpha", "beta", "gamma", "delta"],
             "answer": "ABCD"[i % 4], "source": "gpqa-style"} for i in range(3)]
    data = write_problems(tmp_path / "gpqa.jsonl", rows)
    import dail.prompts

    seen: list[str] = []
    real_render = dail.prompts.render

    def spy(tokenizer, role, problem, templates, waypoints=None):
        seen.append(dail.prompts.render_text(tokenizer, role, problem, templates))
        return real_render(tokenizer, role, problem, templates, waypoints)

    monkeypatch.setattr(dail.prompts, "render", spy)
    # A random model never writes a box; name a letter from each text so some samples are right.
    # The letter is graded by the real rule (grading.is_correct with kind "choice").
    kinds = []
    real_kind = evaluate.problem_kind
    monkeypatch.setattr(evaluate, "problem_kind", lambda p: kinds.append(real_kind(p)) or real_kind(p))
    monkeypatch.setattr(evaluate, "extract_answer_span", lambda text: (f"({'ABCD'[len(text) % 4]})", len(text)))
    m = evaluate.run(config(tiny_model_dir, data, tmp_path / "out", n=6, k=[1, 2, 6], batch_size=18))

    assert set(kinds) == {"choice"}
    assert len(seen) == 3 and all("(A) alpha\n(B) beta\n(C) gamma\n(D) delta" in s for s in seen)
    samples = read_jsonl(tmp_path / "out" / "samples.jsonl", Sample)
    by_id = {r["id"]: r["answer"] for r in rows}
    for s in samples:
        assert s.correct == (s.answer == f"({by_id[s.problem_id]})")
    assert 0 < sum(s.correct for s in samples) < len(samples)  # the check below is not vacuous
    for k in (1, 2, 6):
        assert m["pass_at_k"][str(k)] == pytest.approx(recompute_pass_at_k(samples, k))


def test_a_stage_salt_draws_other_samples(tmp_path, monkeypatch, tiny_model_dir) -> None:
    """`run(cfg, stage=...)` samples from `row_key(..., stage)` and forces from `row_key(..., stage + "-force")`."""
    from dail.engine import Engine

    keys = []
    real_generate = Engine.generate

    def spy(self, prompts, batch_keys, choose, **kw):
        keys.extend(batch_keys)
        return real_generate(self, prompts, batch_keys, choose, **kw)

    monkeypatch.setattr(Engine, "generate", spy)
    data = write_problems(tmp_path / "p.jsonl", PROBLEMS[:1])
    evaluate.run(config(tiny_model_dir, data, tmp_path / "o", n=2, k=[1], force_answer_tokens=2,
                        sampling={"max_new_tokens": 3}), stage="select")
    assert keys == [row_key(0, "int", i, "select") for i in range(2)] + [row_key(0, "int", i, "select-force")
                                                                          for i in range(2)]


def test_budgets_are_validated_at_config_time() -> None:
    from dail.config import load_config

    with pytest.raises(ConfigError, match="key 'budgets': each budget must be >= 1 token; got \\[0\\]"):
        load_config(EvalConfig, overrides={"data": "x", "out": "y", "budgets": [0, 8]})
    with pytest.raises(ConfigError, match="key 'presence_penalty'"):
        load_config(EvalConfig, overrides={"data": "x", "out": "y", "presence_penalty": 3.0})
    cfg = load_config(EvalConfig, overrides={"data": "x", "out": "y", "budgets": [64, 8, 64, 4096]})
    assert evaluate.resolved_budgets(cfg) == [8, 64, 4096]  # >= max_new_tokens is allowed: it cuts nothing
    assert evaluate.resolved_budgets(load_config(EvalConfig, overrides={"data": "x", "out": "y"})) == [
        16, 32, 64, 128, 256, 512, 1024]
    assert (cfg.presence_penalty, cfg.force_answer, cfg.force_answer_tokens) == (0.0, True, 100)


def test_nothing_verifiable_is_an_error(tmp_path, tiny_model_dir) -> None:
    from dail.data import DataError

    data = write_problems(tmp_path / "p.jsonl", PROBLEMS[3:])
    with pytest.raises(DataError, match="none of 1 problems has an answer"):
        evaluate.run(config(tiny_model_dir, data, tmp_path / "o"))
    bad = write_problems(tmp_path / "bad.jsonl", [{**PROBLEMS[2], "answer": "Argon"}])
    with pytest.raises(DataError, match="problem 'mc'"):
        evaluate.run(config(tiny_model_dir, bad, tmp_path / "o"))


# --------------------------------------------------------------------------- forced answers and budgets


def test_forced_answers_by_hand(tmp_path, monkeypatch, tiny_model_dir, tokenizer) -> None:
    """A completion (or budget prefix) without an answer gets one continuation after the cue, recorded in its row."""
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    eos = tokenizer.eos_token_id
    filler = enc(" so")[0]
    box = enc("\\boxed{5}")
    first = {  # sample -> completion, budget 4, max_new_tokens 12
        0: [filler] + box + [eos],  # its own answer; its first 4 tokens hold none
        1: [filler] * 6 + [eos],  # no answer, ended by EOS: the context drops the EOS
        2: [filler] * 12,  # no answer, cut at the length limit
        3: [filler] * 5 + box + [eos],
    }
    cue = "\n\nSo, the final answer: \\boxed{"
    cue_ids = enc(cue)
    calls = []

    def fake_generate(self, prompts, keys, choose, *, max_new_tokens, stop_on_eos=True):
        for index, key in enumerate(keys):
            sample = next((i for i in first if row_key(0, "int", i, "eval") == key), None)
            if sample is not None:
                ids = first[sample]
            else:
                sample = next(i for i in first if row_key(0, "int", i, "eval-force") == key)
                context = prompts[index][0]
                calls.append((sample, len(context), context[-len(cue_ids):] == cue_ids, max_new_tokens))
                # The full no-answer completion of sample 2 gets a continuation without an answer.
                ids = enc(" hmm") * 3 if (sample, len(context)) == (2, n_prompt + 12 + len(cue_ids)) else enc("5} done")
            yield Generation(index, token_ids=ids, source=[0] * len(ids), logprobs=[[0.0] * len(ids)],
                             finish="eos" if ids[-1] == eos else "length")

    import dail.prompts
    from dail.config import PromptConfig

    n_prompt = len(dail.prompts.render(tokenizer, "learner", Problem(**PROBLEMS[0]), PromptConfig()))
    monkeypatch.setattr("dail.engine.Engine.generate", fake_generate)
    data = write_problems(tmp_path / "p.jsonl", PROBLEMS[:1])
    m = evaluate.run(config(tiny_model_dir, data, tmp_path / "out", budgets=[4], answer_cue=cue, force_answer_tokens=7,
                            sampling={"max_new_tokens": 12}))

    # Contexts: prompt + completion (no EOS) + cue, or prompt + first 4 tokens + cue; 7 new tokens at most.
    body_lengths = [(0, 4), (1, 6), (1, 4), (2, 12), (2, 4), (3, 4)]
    assert sorted(calls) == sorted((i, n_prompt + n + len(cue_ids), True, 7) for i, n in body_lengths)
    rows = read_jsonl(tmp_path / "out" / "samples.jsonl", Sample)
    got = [(s.answer, s.correct, s.forced, s.forced_text, s.forced_tokens) for s in rows]
    assert got == [("5", True, False, None, 0), ("5", True, True, "5} done", len(enc("5} done"))),
                   (None, False, True, " hmm hmm hmm", 3 * len(enc(" hmm"))), ("5", True, False, None, 0)]
    assert rows[1].text == " so" * 6 and rows[1].n_tokens == 7  # the completion itself is kept apart
    assert all(s.budgets["4"] == Sample.AtBudget(answer="5", correct=True, forced=True) for s in rows)
    assert m["accuracy"] == 3 / 4 and m["accuracy_at_budget"] == {"4": 1.0} and m["forced_rate"] == 2 / 4

    # Forcing off: no continuations, the completions are graded as they are.
    calls.clear()
    off = evaluate.run(config(tiny_model_dir, data, tmp_path / "off", budgets=[4], force_answer=False,
                              sampling={"max_new_tokens": 12}))
    assert calls == [] and off["accuracy"] == 2 / 4 and off["accuracy_at_budget"] == {"4": 0.0}
    assert not any(s.forced for s in read_jsonl(tmp_path / "off" / "samples.jsonl", Sample))


def test_budgets_equal_runs_with_that_many_tokens(tmp_path, monkeypatch, tiny_model_dir) -> None:
    """The verdict of every sample at budget B is the verdict of a run with max_new_tokens = B.

    One pass of 12 tokens with budgets 4 and 8 against separate runs of 4 and 8 tokens, forced answers
    on, in float64. A random model seldom ends or answers, so here every 13th token id ends a sample
    and the answer is the last k, v or w of the text (k and w: "1", v: "0"; about one token in seven
    holds one): samples end before, at and after each budget; prefixes with and without an answer;
    forced answers found and not.
    """
    import dail.engine

    def last_kvw(text: str) -> tuple[str | None, int | None]:
        j = next((j for j in range(len(text) - 1, -1, -1) if text[j] in "kvw"), None)
        return (None, None) if j is None else (str(ord(text[j]) % 2), j + 1)

    monkeypatch.setattr(evaluate, "extract_answer_span", last_kvw)
    monkeypatch.setattr(dail.engine, "default_eos_ids",
                        lambda model, *extra: [i for i in range(model.config.vocab_size) if i % 13 == 0])
    rows = [{"id": f"q{i}", "problem": f"Question {i}?", "answer": "1"} for i in range(3)]
    data = write_problems(tmp_path / "p.jsonl", rows)

    def run(name: str, max_new_tokens: int, budgets: list[int]):
        m = evaluate.run(config(tiny_model_dir, data, tmp_path / name, dtype="float64", budgets=budgets,
                                force_answer_tokens=3,
                                sampling={"temperature": 1.0, "top_p": 1.0, "max_new_tokens": max_new_tokens}))
        return m, {(s.problem_id, s.sample): s for s in read_jsonl(tmp_path / name / "samples.jsonl", Sample)}

    m_full, full = run("full", 12, [4, 8])
    cases = set()
    for budget in (4, 8):
        m_cut, cut = run(f"max{budget}", budget, [budget])
        assert cut.keys() == full.keys()
        for key, s in full.items():
            assert set(s.budgets) == ({str(budget)} if s.n_tokens > budget else set()) | set(s.budgets) - {str(budget)}
            alone = cut[key]
            assert alone.n_tokens == min(s.n_tokens, budget) and alone.budgets == {}
            if s.n_tokens <= budget:  # ended within the budget: the same sample
                assert (alone.text, alone.finish, alone.forced_text) == (s.text, s.finish, s.forced_text)
            verdict = s.budgets[str(budget)] if s.n_tokens > budget else s
            assert (verdict.answer, verdict.correct, verdict.forced) == (alone.answer, alone.correct, alone.forced), (
                key, budget)
            cases.add((s.n_tokens > budget, verdict.forced, verdict.answer is not None))
        assert m_full["pass_at_k_budget"][str(budget)] == m_cut["pass_at_k"]
        assert m_full["accuracy_at_budget"][str(budget)] == m_cut["accuracy"]
    # Not vacuous: cut and uncut samples, answers of their own, forced answers found and not found.
    assert {(True, False, True), (True, True, True), (True, True, False)} <= cases, cases
    assert any(not was_cut for was_cut, _, _ in cases), cases
    assert 0 < m_full["accuracy_at_budget"]["4"] < 1 and m_full["accuracy_at_budget"]["4"] != m_full["accuracy"]


def test_presence_penalty_samples_as_the_reference(tmp_path, monkeypatch, tiny_model_dir) -> None:
    """With a presence penalty, samples and forced continuations are `reference_sample`'s, token for token."""
    from dail.engine import Engine, default_eos_ids, reference_sample
    from dail.models import load

    decoded = []  # (prompt, key, max_new_tokens, token ids) of every sequence the engine decodes
    real_generate = Engine.generate

    def spy(self, prompts, keys, choose, *, max_new_tokens, stop_on_eos=True):
        for gen in real_generate(self, prompts, keys, choose, max_new_tokens=max_new_tokens, stop_on_eos=stop_on_eos):
            decoded.append((prompts[gen.index][0], keys[gen.index], max_new_tokens, gen.token_ids))
            yield gen

    monkeypatch.setattr(Engine, "generate", spy)
    data = write_problems(tmp_path / "p.jsonl", PROBLEMS[:2])

    def run(name: str, penalty: float) -> dict[int, list[int]]:
        decoded.clear()
        evaluate.run(config(tiny_model_dir, data, tmp_path / name, n=2, k=[1], dtype="float64",
                            presence_penalty=penalty, force_answer_tokens=3,
                            sampling={"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6}))
        return {key: ids for _, key, _, ids in decoded}

    plain = run("plain", 0.0)
    penalised = run("penalised", 1.5)
    model, tokenizer = load(tiny_model_dir, dtype="float64", device="cpu")
    eos = default_eos_ids(model, tokenizer.eos_token_id)
    for prompt, key, limit, ids in decoded:
        ref = reference_sample(model, prompt, key, max_new_tokens=limit, temperature=1.0, top_p=1.0,
                               presence_penalty=1.5, eos_token_ids=eos)
        assert ref.token_ids == ids
    samples = [row_key(0, p, i, "eval") for p in ("int", "frac") for i in range(2)]
    assert {row_key(0, p, i, "eval-force") for p in ("int", "frac") for i in range(2)} <= penalised.keys()
    # The first token sees no penalty; later ones do.
    assert all(plain[k][0] == penalised[k][0] for k in samples)
    assert any(plain[k] != penalised[k] for k in samples)
