"""Tests for dail.evaluate: token pieces, hand-computed pass@k and budgets, end-to-end runs, resume."""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from dail import evaluate
from dail.config import ConfigError, EvalConfig
from dail.data import Sample, read_jsonl
from dail.engine import Generation, row_key
from dail.metrics import pass_at_k

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
            "sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8}}
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
    pieces = evaluate.token_pieces(tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == text
    assert pieces[-1] == ""  # EOS adds no text
    # A multi-byte character split over tokens is carried whole by the token that completes it.
    assert all("\ufffd" not in p for p in pieces)


def test_grade_sample_maps_the_answer_end_to_its_token() -> None:
    pieces = ["So ", "the ", "sum ", "is ", "\\boxed{", "4", "2", "}", ".", ""]
    text, answer, correct, token = evaluate.grade_sample(pieces, "42", "integer")
    assert (text, answer, correct, token) == ("So the sum is \\boxed{42}.", "42", True, 7)
    assert evaluate.grade_sample(["no ", "answer"], "42", "integer")[1:] == (None, False, None)
    assert evaluate.grade_sample(["\\boxed{", "C", "}"], "C", "choice")[2:] == (True, 2)
    assert evaluate.grade_sample(["\\boxed{", "C", "}"], "B", "choice")[2] is False


def _s(pid: str, i: int, correct: bool, answer_token: int | None, n_tokens: int) -> Sample:
    return Sample(problem_id=pid, sample=i, seed=0, text="", n_tokens=n_tokens, finish="eos",
                  answer="x" if answer_token is not None else None, correct=correct, answer_token=answer_token)


def test_compute_metrics_by_hand() -> None:
    # p: 2 of 4 correct (answers end at tokens 3 and 9); q: 1 of 4 (at token 7).
    samples = [_s("p", 0, True, 3, 10), _s("p", 1, True, 9, 20), _s("p", 2, False, 2, 30), _s("p", 3, False, None, 40),
               _s("q", 0, False, None, 50), _s("q", 1, False, 5, 60), _s("q", 2, True, 7, 70), _s("q", 3, False, 1, 80)]
    m = evaluate.compute_metrics(samples, ["p", "q"], 4, [1, 2, 4], [4, 8, 10])
    # pass@2 of (n=4, c=2) is 1 - C(2,2)/C(4,2) = 5/6; of (4, 1) it is 1 - C(3,2)/C(4,2) = 1/2.
    assert m["pass_at_k"] == pytest.approx({"1": (2 / 4 + 1 / 4) / 2, "2": (5 / 6 + 1 / 2) / 2, "4": 1.0})
    assert m["accuracy"] == pytest.approx(3 / 8)
    assert m["mean_tokens"] == pytest.approx(45.0)
    assert m["mean_tokens_correct"] == pytest.approx((10 + 20 + 70) / 3)
    # Budget 4: only p's token-3 answer; budget 8: plus q's token-7; budget 10: all three (9 < 10).
    assert m["accuracy_at_budget"] == pytest.approx({"4": 1 / 8, "8": 2 / 8, "10": 3 / 8})
    assert m["pass_at_k_budget"]["4"] == pytest.approx({"1": 1 / 8, "2": (1 / 2 + 0) / 2, "4": 1 / 2})
    assert m["pass_at_k_budget"]["10"] == m["pass_at_k"]
    assert m["correct_per_problem"] == {"p": 2, "q": 1}
    with pytest.raises(ValueError, match="lack 4 samples"):
        evaluate.compute_metrics(samples[:-1], ["p", "q"], 4, [1], [8])


# --------------------------------------------------------------------------- forced texts


def test_run_with_forced_texts_by_hand(tmp_path, monkeypatch, tiny_model_dir, tokenizer) -> None:
    """The engine is replaced by fixed token sequences; pass@k and budgets are checked by hand."""
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
    by_key = {row_key(0, pid, i): ids for (pid, i), ids in forced.items()}

    def fake_generate(self, prompts, keys, choose, *, max_new_tokens, stop_on_eos=True):
        for index, key in reversed(list(enumerate(keys))):  # out of order, as a real batch finishes
            ids = by_key[key]
            yield Generation(index, token_ids=ids, source=[0] * len(ids), logprobs=[[0.0] * len(ids)],
                             finish="eos" if ids[-1] == eos else "length")

    monkeypatch.setattr("dail.engine.Engine.generate", fake_generate)
    data = write_problems(tmp_path / "p.jsonl", PROBLEMS)
    m = evaluate.run(config(tiny_model_dir, data, tmp_path / "out", budgets=[8, 16, 64],
                            sampling={"max_new_tokens": 64}))

    rows = {(s.problem_id, s.sample): s for s in read_jsonl(tmp_path / "out" / "samples.jsonl", Sample)}
    assert [(s.answer, s.correct, s.answer_token) for s in (rows[("int", i)] for i in range(4))] == [
        ("5", True, 5), ("5", True, 15), ("6", False, 5), (None, False, None)]
    assert [rows[("mc", i)].correct for i in range(4)] == [True, False, False, False]
    assert rows[("mc", 0)].answer_token == 16 and rows[("int", 3)].finish == "length"
    assert all(rows[("frac", i)].correct and rows[("frac", i)].answer_token == 7 for i in range(4))

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
        assert (s.answer_token is None) == (s.answer is None)
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
    assert (full / "eval_config.toml").read_text().startswith('model = "')

    # A kill mid-write: the file is cut inside a row; the rerun finishes it and matches the full run.
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(full / "eval_config.toml", cut)
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
    real_kind = evaluate.answer_kind
    monkeypatch.setattr(evaluate, "answer_kind", lambda a, c: kinds.append(real_kind(a, c)) or real_kind(a, c))
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


def test_nothing_verifiable_is_an_error(tmp_path, tiny_model_dir) -> None:
    from dail.data import DataError

    data = write_problems(tmp_path / "p.jsonl", PROBLEMS[3:])
    with pytest.raises(DataError, match="none of 1 problems has an answer"):
        evaluate.run(config(tiny_model_dir, data, tmp_path / "o"))
    bad = write_problems(tmp_path / "bad.jsonl", [{**PROBLEMS[2], "answer": "Argon"}])
    with pytest.raises(DataError, match="problem 'mc'"):
        evaluate.run(config(tiny_model_dir, bad, tmp_path / "o"))
