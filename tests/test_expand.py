"""Tests for dail.expand: the batched mixed rollout equals the slow reference token for token on tiny
random float64 models (batch sizes, prompt lengths, order); its limits (tau > 1 is privileged
sampling, a trivial transform with tau = 0 is learner sampling); the filters; and the stage end to
end with a resumed, killed run on a tiny word-level tokenizer and model."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch

from dail.config import ExpandConfig, load_config
from dail.data import Problem, read_traces, write_jsonl
from dail.engine import Engine
from dail.expand import reference_rollout, rollout, run, verdict
from dail.roles import Role
from dail.sampling import PRIVILEGED_DRAW, row_key, tag_rejected, tag_role, transform

from conftest import TINY_VOCAB as VOCAB
from conftest import assert_same_jsonl, tiny_llama, tiny_qwen2, word_llama, word_tokenizer

F64 = torch.float64
EOS = (5, 11)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request):
    return {"llama": tiny_llama, "qwen2": tiny_qwen2}[request.param]()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def sharp_model(request):
    """A tiny model whose output head is scaled up: random weights give near-uniform softmaxes
    (p ~ 0.01 over 97 tokens), under which no proposal reaches tau = 0.3; scaled, p_P spans [0, 1]."""
    model = {"llama": tiny_llama, "qwen2": tiny_qwen2}[request.param]()
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
    return model


def pairs_of(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """(learner, privileged) prompts; the privileged one is longer, as it holds the solution."""
    rng = random.Random(seed)
    ids = [i for i in range(VOCAB) if i not in EOS]
    out = []
    for _ in range(n):
        learner = [rng.choice(ids) for _ in range(rng.randint(1, 12))]
        out.append((learner, learner + [rng.choice(ids) for _ in range(rng.randint(1, 20))]))
    return out


def keys_of(n: int) -> list[int]:
    return [row_key(0, f"problem-{i // 2}", i % 2) for i in range(n)]


MIXED = {"temperature": 0.8, "top_p": 0.7, "top_k": 30}


# --------------------------------------------------------------------------------------------------
# engine rollout vs reference


# (rule, tau) -> the sources the rollout must show: tau = 0 keeps every first proposal, tau >= 1 none.
RULE_CASES = {("threshold", 0.0): {Role.LEARNER}, ("threshold", 0.3): {Role.LEARNER, Role.PRIVILEGED},
              ("threshold", 0.8): {Role.LEARNER, Role.PRIVILEGED}, ("threshold", 1.0): {Role.PRIVILEGED},
              ("nucleus", 0.05): {Role.LEARNER, Role.PRIVILEGED}}


@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize("rule,tau", list(RULE_CASES))
def test_rollout_equals_reference(sharp_model, batch_size, rule, tau):
    model = sharp_model
    pairs, keys = pairs_of(8), keys_of(8)
    engine = Engine(model, eos_token_ids=EOS)
    got = {}
    for start in range(0, 8, batch_size):
        for gen in rollout(engine, pairs[start:start + batch_size], keys[start:start + batch_size],
                           max_new_tokens=20, rule=rule, tau=tau, **MIXED):
            got[start + gen.index] = gen
    tags = []
    for i in range(8):
        want = reference_rollout(model, *pairs[i], keys[i], max_new_tokens=20, rule=rule, tau=tau,
                                 eos_token_ids=EOS, **MIXED)
        assert got[i].token_ids == want.token_ids
        assert got[i].source == want.source  # source and number of rejected proposals, per token
        assert got[i].finish == want.finish
        torch.testing.assert_close(torch.tensor(got[i].logprobs), torch.tensor(want.logprobs), rtol=1e-9, atol=1e-9)
        tags += want.source
    assert {tag_role(t) for t in tags} == RULE_CASES[rule, tau]
    if (rule, tau) == ("threshold", 0.3):  # a later proposal was kept after an earlier one failed
        assert any(tag_rejected(t) > 0 for t in tags if tag_role(t) is Role.LEARNER)
    if rule == "threshold" and tau >= 1:  # every step tried all 5 proposals before falling back
        assert set(tags) == {2 * 5 + Role.PRIVILEGED.row}


def test_threshold_rule_written_out_independently(sharp_model):
    """The rule checked against a third statement of it: per step, from the two roles' logits, the
    first of 5 learner draws whose raw privileged probability is >= tau, else a privileged draw."""
    from dail.sampling import inverse_cdf, uniforms

    model, tau = sharp_model, 0.5
    (learner, privileged), key = pairs_of(1, seed=9)[0], keys_of(1)[0]
    gen = next(rollout(Engine(model, eos_token_ids=()), [(learner, privileged)], [key], max_new_tokens=12,
                       rule="threshold", tau=tau, retries=5, stop_on_eos=False, **MIXED))
    ctx_l, ctx_p, k = list(learner), list(privileged), torch.tensor([key])
    for t, token in enumerate(gen.token_ids):
        with torch.no_grad():
            raw_l = model(input_ids=torch.tensor([ctx_l])).logits[0, -1]
            raw_p = model(input_ids=torch.tensor([ctx_p])).logits[0, -1]
        q_l, q_p = transform(raw_l, **MIXED), transform(raw_p, **MIXED)
        p_p = raw_p.softmax(-1)
        draws = [int(inverse_cdf(q_l, uniforms(k, t, d)[0])) for d in range(5)]
        passing = [a for a in draws if p_p[a] >= tau]
        want = passing[0] if passing else int(inverse_cdf(q_p, uniforms(k, t, PRIVILEGED_DRAW)[0]))
        assert token == want
        assert tag_role(gen.source[t]) is (Role.LEARNER if passing else Role.PRIVILEGED)
        ctx_l.append(token)
        ctx_p.append(token)


def test_rollout_in_every_decode_mode_equals_reference(model, engine_mode):
    pairs, keys = pairs_of(8, seed=5), keys_of(8)
    got = {g.index: g for g in rollout(engine_mode(model, eos_token_ids=EOS), pairs, keys, max_new_tokens=20,
                                       tau=0.01, **MIXED)}
    for i in range(8):
        want = reference_rollout(model, *pairs[i], keys[i], max_new_tokens=20, tau=0.01, eos_token_ids=EOS, **MIXED)
        assert (got[i].token_ids, got[i].source, got[i].finish) == (want.token_ids, want.source, want.finish)
        torch.testing.assert_close(torch.tensor(got[i].logprobs), torch.tensor(want.logprobs), rtol=1e-9, atol=1e-9)
    assert {g.finish for g in got.values()} == {"eos", "length"}


def test_rollout_is_invariant_to_request_order(model):
    pairs, keys = pairs_of(8, seed=1), keys_of(8)
    engine = Engine(model, eos_token_ids=EOS)
    want = {g.index: g for g in rollout(engine, pairs, keys, max_new_tokens=16, **MIXED)}
    order = list(range(8))
    random.Random(2).shuffle(order)
    got = rollout(engine, [pairs[i] for i in order], [keys[i] for i in order], max_new_tokens=16, **MIXED)
    for gen in got:
        i = order[gen.index]
        assert (gen.token_ids, gen.source, gen.finish) == (want[i].token_ids, want[i].source, want[i].finish)


def test_tau_above_one_is_privileged_sampling(model):
    pairs, keys = pairs_of(6, seed=3), keys_of(6)
    engine = Engine(model, eos_token_ids=EOS)
    mixed = {g.index: g for g in rollout(engine, pairs, keys, max_new_tokens=16, tau=1.5, **MIXED)}
    # every step rejects, so the token is the privileged draw from q_P: plain sampling of the privileged prompt
    plain = engine.sample([p for _, p in pairs], keys, max_new_tokens=16, draw=Role.PRIVILEGED.draw, **MIXED)
    for i in range(6):
        assert {tag_role(t) for t in mixed[i].source} == {Role.PRIVILEGED}
        assert mixed[i].token_ids == plain[i].token_ids and mixed[i].finish == plain[i].finish
        torch.testing.assert_close(torch.tensor(mixed[i].logprobs[Role.PRIVILEGED.row]), torch.tensor(plain[i].logprobs[0]))


def test_tau_above_one_first_token_follows_q_privileged():
    model = tiny_llama()
    learner, privileged = [3, 4, 6], [3, 4, 6, 7, 8, 9, 10]
    n = 4000
    keys = [row_key(9, "dist", s) for s in range(n)]
    engine = Engine(model, eos_token_ids=())
    first = [g.token_ids[0] for g in rollout(engine, [(learner, privileged)] * n, keys, max_new_tokens=1,
                                             tau=2.0, **MIXED)]
    with torch.no_grad():
        q = transform(model(input_ids=torch.tensor([privileged])).logits[0, -1], **MIXED)  # [V]
    freq = torch.bincount(torch.tensor(first), minlength=VOCAB).to(F64) / n
    assert float((freq - q).abs().sum()) / 2 < 0.05  # total variation
    assert float(freq[q == 0].sum()) == 0.0  # nothing outside the privileged nucleus


def test_trivial_transform_with_tau_zero_is_learner_sampling(model):
    pairs, keys = pairs_of(6, seed=4), keys_of(6)
    engine = Engine(model, eos_token_ids=EOS)
    mixed = {g.index: g for g in rollout(engine, pairs, keys, max_new_tokens=16, top_p=1.0, top_k=0, tau=0.0)}
    plain = engine.sample([learner for learner, _ in pairs], keys, max_new_tokens=16, draw=Role.LEARNER.draw)
    for i in range(6):
        assert set(mixed[i].source) == {Role.LEARNER.row}  # tau = 0: every first proposal stands
        assert mixed[i].token_ids == plain[i].token_ids
        torch.testing.assert_close(torch.tensor(mixed[i].logprobs[Role.LEARNER.row]), torch.tensor(plain[i].logprobs[0]))


# --------------------------------------------------------------------------------------------------
# filters

LEAK = [re.compile(p) for p in ExpandConfig(data="x", out="y").leak_patterns]
VERIFIABLE = Problem(id="v", problem="2 + 2?", solution="4", answer="4")
OPEN = Problem(id="o", problem="Describe 4.", solution="It is 4.")


@pytest.mark.parametrize("text, finish, problem, answer, reason", [
    ("so \\boxed{4}", "eos", VERIFIABLE, "4", None),
    ("so \\boxed{5}", "eos", VERIFIABLE, "5", "wrong_answer"),
    ("I am not sure", "eos", VERIFIABLE, None, "no_answer"),
    ("As the expert solution says, \\boxed{4}", "eos", VERIFIABLE, "4", "leak"),
    ("so \\boxed{4} and on and on", "length", VERIFIABLE, "4", "length"),
    ("The expert solution says \\boxed{4}", "length", VERIFIABLE, "4", "length"),  # length is checked first
    ("no box here", "eos", OPEN, None, None),  # unverifiable: kept without an answer
    ("the reference solution: 4", "eos", OPEN, None, "leak"),
])
def test_verdict(text, finish, problem, answer, reason):
    assert verdict(text, finish, problem, LEAK) == (answer, reason)


# --------------------------------------------------------------------------------------------------
# the stage, end to end

@pytest.fixture
def stage(tmp_path, monkeypatch):
    tokenizer = word_tokenizer()
    model = word_llama(tokenizer)
    loads = []

    def fake_load(name, **kw):
        loads.append((name, kw))
        return model, tokenizer

    monkeypatch.setattr("dail.models.load", fake_load)
    problems = [Problem(id=f"q{i}", problem="what is two plus " + "three " * (i + 1) + "?",
                        solution="add to get five . the answer is \\boxed{5}", answer="5") for i in range(3)]
    write_jsonl(tmp_path / "problems.jsonl", problems)
    cfg = ExpandConfig(data=str(tmp_path / "problems.jsonl"), out=str(tmp_path / "run" / "traces.jsonl"), n=3,
                       batch_size=4, seed=5, device="cpu", sampling={"max_new_tokens": 6, "top_p": 0.9})
    return cfg, loads


def test_run_writes_every_trace_with_verdict_config_and_log(stage):
    cfg, loads = stage
    summary = run(cfg)
    assert loads == [(cfg.model, {"dtype": cfg.dtype, "device": "cpu"})]
    traces = read_traces(cfg.out, kept_only=False)
    assert sorted((t.problem_id, t.sample) for t in traces) == [(f"q{i}", s) for i in range(3) for s in range(3)]
    for t in traces:
        assert t.seed == 5 and len(t.token_ids) <= 6 and set(t.source) <= {Role.LEARNER.letter, Role.PRIVILEGED.letter}
        assert t.kept == (t.reject_reason is None)
        assert t.reject_reason in {"length", "no_answer", "wrong_answer", "leak", None}
        assert (t.finish == "length") == (t.reject_reason == "length")
    assert summary["traces"] == summary["new_traces"] == 9
    assert summary["kept"] + sum(summary["rejected"].values()) == 9
    assert summary["new_tokens"] == sum(len(t.token_ids) for t in traces)
    assert 0.0 <= summary["acceptance_rate"] <= 1.0
    assert summary["privileged_share"] == pytest.approx(1 - summary["acceptance_rate"])
    from dail.rundir import data_digest

    # the config saved beside the traces, with the digest of the data they came from
    assert load_config(ExpandConfig, summary["config"]) == cfg.model_copy(update={"data_digest": data_digest(cfg.data)})
    log = [json.loads(line) for line in (Path(cfg.out).parent / "events.jsonl").read_text().splitlines()]
    assert log[-1]["stage"] == "expand" and log[-1]["traces"] == 9


def test_rerun_after_a_kill_skips_done_traces_and_reproduces_the_lost_ones(stage):
    cfg, loads = stage
    run(cfg)
    lines = open(cfg.out).read().splitlines(keepends=True)
    with open(cfg.out, "w") as f:  # a kill: two traces lost, the next one torn mid-line
        f.writelines(lines[:6])
        f.write(lines[6][:20])
    summary = run(cfg)
    assert summary["new_traces"] == 3 and summary["traces"] == 9
    again = open(cfg.out).read().splitlines(keepends=True)
    assert again[:6] == lines[:6]
    # other batch composition on the rerun, same traces: randomness is per (seed, problem, sample);
    # float32 log-probs may differ in the last bits with the batch's shape
    def by_key(rows):
        return {(r["problem_id"], r["sample"]): r for r in map(json.loads, rows)}

    old, new = by_key(lines[6:]), by_key(again[6:])
    assert old.keys() == new.keys()
    for key, row in old.items():
        for f in ("logprob_learner", "logprob_privileged"):
            assert new[key].pop(f) == pytest.approx(row.pop(f), rel=1e-4, abs=1e-5)
        assert row == new[key]
    assert run(cfg)["new_traces"] == 0 and len(loads) == 2  # nothing left to do: the model is not even loaded


# --------------------------------------------------------------------------------------------------
# the stage on a float64 model whose traces end at different steps

EARLY_EOS = list(range(9, 19))  # 10 of the 54 words end a trace: about one step in five stops


@pytest.fixture
def stage64(tmp_path, monkeypatch):
    """`stage`'s set-up, but float64 (batch composition then changes no digit of a log-prob) and with
    EARLY_EOS as the model's EOS ids, so traces of one batch end by EOS at different steps."""
    tokenizer = word_tokenizer()
    model = word_llama(tokenizer).to(F64)
    model.generation_config.eos_token_id = EARLY_EOS
    monkeypatch.setattr("dail.models.load", lambda name, **kw: (model, tokenizer))
    problems = [Problem(id=f"q{i}", problem="what is two plus " + "three " * (i + 1) + "?",
                        solution="add to get five . the answer is \\boxed{5}", answer="5") for i in range(3)]
    write_jsonl(tmp_path / "problems.jsonl", problems)
    # Explicit sampling and tau (not the config's defaults): tau = 0.02 rejects some learner tokens.
    cfg = ExpandConfig(data=str(tmp_path / "problems.jsonl"), out=str(tmp_path / "one" / "traces.jsonl"), n=3,
                       batch_size=4, seed=5, device="cpu", tau=0.02,
                       sampling={"max_new_tokens": 12, "temperature": 1.0, "top_p": 0.9, "top_k": 0})
    return cfg, model, tokenizer, problems


def test_trace_logprobs_are_each_roles_own_forward_on_its_prompt(stage64):
    """logprob_learner[j] = log_softmax(model(learner prompt + trace))[L - 1 + j, trace[j]] and
    logprob_privileged the same on the privileged prompt: one direct forward per role, no cache."""
    from dail.prompts import render

    cfg, model, tokenizer, problems = stage64
    run(cfg)
    traces = read_traces(cfg.out, kept_only=False)
    assert len(traces) == 9 and {"L", "P"} <= set("".join(t.source for t in traces))
    by_id = {p.id: p for p in problems}
    gap = 0.0
    for t in traces:
        want = {}
        for role in ("learner", "privileged"):
            prompt = render(tokenizer, role, by_id[t.problem_id], cfg.prompts)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + t.token_ids])).logits[0]  # [P + T, V]
            at = logits[len(prompt) - 1: len(prompt) - 1 + len(t.token_ids)]  # [T, V] predicting the trace
            want[role] = torch.log_softmax(at, -1).gather(-1, torch.tensor(t.token_ids)[:, None])[:, 0]  # [T]
        torch.testing.assert_close(torch.tensor(t.logprob_learner, dtype=F64), want["learner"], rtol=0, atol=1e-9)
        torch.testing.assert_close(torch.tensor(t.logprob_privileged, dtype=F64), want["privileged"], rtol=0, atol=1e-9)
        gap = max(gap, float((want["learner"] - want["privileged"]).abs().max()))
    assert gap > 1e-3  # the two prompts give different log-probs: a swap of the fields cannot pass


def same_lines(got: bytes, want: bytes) -> None:
    """The same lines in the same order: byte for byte once the log-probs are cut out, and those equal
    to 1e-12 (float64 log-probs move in the last bits with the batch's shape)."""
    got_rows, want_rows = got.decode().splitlines(), want.decode().splitlines()
    assert len(got_rows) == len(want_rows)
    cut = re.compile(r'"logprob_(learner|privileged)": \[[^]]*\]')
    for g, w in zip(got_rows, want_rows):
        assert cut.sub("", g) == cut.sub("", w)
        for field in ("logprob_learner", "logprob_privileged"):
            torch.testing.assert_close(torch.tensor(json.loads(g)[field], dtype=F64),
                                       torch.tensor(json.loads(w)[field], dtype=F64), rtol=0, atol=1e-12)


def test_traces_are_written_in_canonical_order_whatever_the_batching_or_process_count(stage64, monkeypatch):
    """Rows come in problem-file order, then sample index, although traces of a batch finish in
    another order; the file is the one of batch_size=1 and of a 2-process run, line for line: every
    byte but the last digits of log-probs, which move by float64 rounding with the batch's shape."""
    from dail import distributed as dist
    from dail.rundir import provenance_path

    cfg, _, _, problems = stage64
    run(cfg)
    one = Path(cfg.out).read_bytes()
    rows = [json.loads(line) for line in one.decode().splitlines()]
    assert [(r["problem_id"], r["sample"]) for r in rows] == [(p.id, s) for p in problems for s in range(3)]
    # The precondition that makes this test bite: within some batch of 4 (in canonical order), a trace
    # ended by EOS before one ahead of it, so the engine yields them out of canonical order.
    lengths = [len(r["token_ids"]) for r in rows]
    assert {r["finish"] for r in rows} == {"eos", "length"} and len(set(lengths)) > 2
    assert any(lengths[i] > lengths[j] for b in range(0, 9, 4) for i in range(b, min(b + 4, 9))
               for j in range(i + 1, min(b + 4, 9)))

    single = cfg.model_copy(update={"out": str(Path(cfg.out).parent.parent / "single" / "traces.jsonl"),
                                    "batch_size": 1})
    run(single)
    same_lines(Path(single.out).read_bytes(), one)

    # Two processes, emulated in this one: an `accelerate launch` costs ~20 s of interpreter and
    # launcher start-up, and a launched process could not be handed this float64 model with its EOS
    # ids. So rank 1 runs the stage to the end (its shard into its part), then rank 0 (its part, then
    # the merge): the stage's own shard / part-file / merge_parts path, with the barrier (rank 1 has
    # finished) and the gather (of the summary counts only) stubbed.
    two = cfg.model_copy(update={"out": str(Path(cfg.out).parent.parent / "two" / "traces.jsonl")})
    owners = (dist, dist.ranks)  # stage and expand look these up on the package, the package's own modules on `ranks`
    for owner in owners:
        monkeypatch.setattr(owner, "world_size", lambda: 2)
        monkeypatch.setattr(owner, "barrier", lambda: None)
        monkeypatch.setattr(owner, "gather", lambda obj: [obj])
    for r in (1, 0):
        for owner in owners:
            monkeypatch.setattr(owner, "rank", lambda r=r: r)
        run(two)
        if r == 1:  # rank 1 decoded q1 only, into its part
            part = [json.loads(line) for line in dist.part_path(two.out, 1, 2).read_text().splitlines()]
            assert [(x["problem_id"], x["sample"]) for x in part] == [("q1", s) for s in range(3)]
            # rank 0 of a launch records the model as the output opens, before rank 1 has a row
            provenance_path(two.out).write_bytes(provenance_path(cfg.out).read_bytes())
    assert dist.find_parts(two.out) == []
    same_lines(Path(two.out).read_bytes(), one)


# --------------------------------------------------------------------------------------------------
# keep: which traces training reads


def _unverifiable(stage64, tmp_path):
    """stage64 with the answers removed: every trace that ends by EOS passes the filters (no grading)."""
    cfg, model, tokenizer, problems = stage64
    write_jsonl(tmp_path / "open.jsonl", [p.model_copy(update={"answer": None}) for p in problems])
    return cfg.model_copy(update={"data": str(tmp_path / "open.jsonl")}), model, tokenizer, problems


def test_first_correct_keeps_the_first_passing_trace_of_each_problem(stage64, tmp_path):
    cfg, *_ = _unverifiable(stage64, tmp_path)
    every = cfg.model_copy(update={"keep": "all-correct", "out": str(tmp_path / "all" / "traces.jsonl")})
    first = cfg.model_copy(update={"keep": "first-correct", "out": str(tmp_path / "first" / "traces.jsonl")})
    run(every)
    run(first)
    a, b = read_traces(every.out, kept_only=False), read_traces(first.out, kept_only=False)
    assert [t.token_ids for t in a] == [t.token_ids for t in b]  # keep changes verdicts, never tokens
    seen = set()
    for x, y in zip(a, b):
        if x.kept and x.problem_id not in seen:
            assert y.kept
            seen.add(x.problem_id)
        elif x.kept:
            assert (y.kept, y.reject_reason) == (False, "not_first")
        else:
            assert (y.kept, y.reject_reason) == (False, x.reject_reason)
    assert 0 < len(seen) < sum(x.kept for x in a)  # the case is not vacuous: some problem had two passing traces


def test_first_correct_resume_gives_the_uninterrupted_file(stage64, tmp_path):
    cfg, *_ = _unverifiable(stage64, tmp_path)
    cfg = cfg.model_copy(update={"keep": "first-correct", "batch_size": 2})
    run(cfg)
    whole = Path(cfg.out).read_bytes()
    (tmp_path / "whole.jsonl").write_bytes(whole)
    lines = whole.splitlines(keepends=True)
    done = b"".join(lines[:4])
    Path(cfg.out).write_bytes(done + lines[4][:20])  # killed mid-write of the fifth trace
    run(cfg)
    assert Path(cfg.out).read_bytes().startswith(done)  # the finished rows are left as they were
    # The redone rows are decoded again, and a resume promises their tokens, not the last bits of their
    # log-probs: its batches need not be the first run's (here they align: 4 rows done, batches of 2).
    assert_same_jsonl(Path(cfg.out), tmp_path / "whole.jsonl")


def test_one_random_decodes_only_the_seeded_choice_and_keeps_it_ungraded(stage64, tmp_path):
    from dail.expand import random_sample
    from dail.prompts import render

    cfg, model, tokenizer, problems = stage64  # verifiable problems: grading would reject these traces
    cfg = cfg.model_copy(update={"keep": "one-random", "n": 32})
    run(cfg)
    traces = read_traces(cfg.out, kept_only=False)
    chosen = [(p.id, random_sample(cfg.seed, p.id, 32)) for p in problems]
    assert [(t.problem_id, t.sample) for t in traces] == chosen
    assert len({s for _, s in chosen}) > 1  # the choice depends on the problem
    assert all(t.kept and t.reject_reason is None for t in traces)  # length / wrong answers are not graded
    # The chosen trace is sample s of the expansion's own stream, salted with the stage's name.
    t = traces[0]
    p = problems[0]
    want = reference_rollout(model, render(tokenizer, "learner", p, cfg.prompts),
                             render(tokenizer, "privileged", p, cfg.prompts), row_key(cfg.seed, p.id, t.sample, "expand"),
                             max_new_tokens=cfg.sampling.max_new_tokens, rule=cfg.rule, tau=cfg.tau,
                             retries=cfg.retries, temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p,
                             top_k=cfg.sampling.top_k, eos_token_ids=EARLY_EOS)
    assert t.token_ids == want.token_ids
