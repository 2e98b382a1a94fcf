"""`dail rl` on tiny random models: the update is the GRPO surrogate a plain forward computes, zero-variance
groups give no gradient, one update per batch has ratio 1, rewards rise, a killed run resumes to the same
rollouts, and NuRL re-rolls all-fail groups with the hint.

A random tiny model never writes a correct answer, so the loop tests swap the reward for one it can earn
(the `earnable_reward` fixture: the first token's id is even); the grading the real reward uses is tested in test_grading.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from dail.config import ConfigError, RLConfig
from dail.data import DataError, Problem, Rollout, read_jsonl, write_jsonl
from dail.roles import Role

from conftest import launch_two, save_tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, embedded_path) -> str:
    """A random 2-layer Llama (peaked logits) on the embedded tokenizer."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-rl"), embedded_path, initializer_range=0.5)


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> str:
    from dail.datasets import resolve_problems

    path = tmp_path_factory.mktemp("rl-data") / "problems.jsonl"
    write_jsonl(path, resolve_problems("arith-train")[:6])
    return str(path)


def _cfg(tiny_dir: str, problems: str, out: Path, **kw) -> RLConfig:
    base = dict(model=tiny_dir, data=problems, out=str(out), steps=4, problems_per_step=2, group_size=4, lr=1e-2,
                lora={"r": 4}, dtype="float64", seed=0, sampling={"max_new_tokens": 6}, decode_batch=8)
    return RLConfig(**{**base, **kw})


@pytest.fixture
def earnable_reward(monkeypatch):
    """Reward 1 when a rollout's first token id is even: a reward a random model earns about half the time."""
    from dail.rl import rollouts

    real = rollouts._sample

    def sample(ctx, step, by_id, sink, prompts, hinted):
        class Sink:
            todo = sink.todo

            @staticmethod
            def put(i, row):
                reward = 1.0 if row.token_ids and row.token_ids[0] % 2 == 0 else 0.0
                sink.put(i, row.model_copy(update={"reward": reward}))

        real(ctx, step, by_id, Sink, prompts, hinted)

    monkeypatch.setattr(rollouts, "_sample", sample)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _rollout(pid: str, g: int, ids: list[int], reward: float, step: int = 0) -> Rollout:
    return Rollout(problem_id=pid, sample=g, step=step, token_ids=ids, logprobs=[0.0] * len(ids), finish="length",
                   answer=None, reward=reward)


# --------------------------------------------------------------------------------------------------
# the update against a plain forward


def _session(tiny_dir, problems, tmp_path, **kw):
    from dail.train.session import open_session

    cfg = _cfg(tiny_dir, problems, tmp_path / "s", **kw)
    return open_session(cfg, lambda _: (1, 4))


def _hand_batch(session, scale=True):
    from dail.rl.update import score

    prompts = {("a", False): [1, 2, 3], ("b", False): [4, 5], ("c", False): [6, 7, 8, 9]}
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(10, 400, (n,), generator=g).tolist()  # noqa: E731
    rollouts = ([_rollout("a", i, ids(3 + i), r) for i, r in enumerate([1.0, 0.0, 0.0, 1.0])]
                + [_rollout("b", i, ids(2 + 2 * i), 0.0) for i in range(4)]  # all fail
                + [_rollout("c", i, ids(4), r) for i, r in enumerate([0.0, 1.0, 0.0, 0.0])])
    return rollouts, prompts, score(rollouts, prompts, scale=scale)


def _grads_of_update(session, batch, monkeypatch, step=0):
    """The gradient the update's optimizer step would apply (captured, not applied), and its stats."""
    from dail.rl import update as upd

    seen = {}

    def capture(s):
        seen.update({n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                     for n, p in s.peft_model.named_parameters() if p.requires_grad})
        s.optimizer.zero_grad(set_to_none=True)
        return torch.zeros(()), 0.0

    monkeypatch.setattr(upd, "optimizer_step", capture)
    session.peft_model.train()
    stats = upd.update(session, batch, step)
    return seen, stats


def _reference_grads(session, rollouts, prompts, advantages, kl_coef=0.0):
    """The surrogate at ratio 1 by a full forward of each rollout, summed over every token / their number."""
    model = session.peft_model
    model.zero_grad(set_to_none=True)
    total = sum(len(r.token_ids) for r in rollouts)
    loss = 0.0
    for r, a in zip(rollouts, advantages):
        prompt = prompts[(r.problem_id, r.hinted)]
        ids = torch.tensor([prompt + r.token_ids])
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]  # positions predicting the rollout
        lp = torch.log_softmax(logits.double(), -1).gather(-1, torch.tensor(r.token_ids)[:, None])[:, 0]
        term = -(torch.exp(lp - lp.detach()) * a).sum()
        if kl_coef:
            with torch.no_grad(), model.disable_adapter():
                ref = torch.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1:-1].double(), -1)
                ref = ref.gather(-1, torch.tensor(r.token_ids)[:, None])[:, 0]
            d = ref - lp
            term = term + kl_coef * (torch.exp(d) - d - 1).sum()
        loss = loss + term / total
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


def test_scores_are_group_normalised_and_flat_groups_counted(tiny_dir, problems, tmp_path):
    session = _session(tiny_dir, problems, tmp_path)
    _, _, batch = _hand_batch(session)
    a = batch.advantages
    assert a[0:4] == pytest.approx([1, -1, -1, 1], abs=1e-5)  # mean .5, std .5
    assert a[4:8] == [0.0] * 4  # all fail: exactly zero
    s = 3 ** 0.5  # c: rewards 0 1 0 0, mean .25, std sqrt(3)/4
    assert a[8:12] == pytest.approx([-1 / s, 3 / s, -1 / s, -1 / s], abs=1e-5)
    assert (batch.groups, batch.all_fail, batch.all_pass) == (3, 1, 0)


@pytest.mark.parametrize("kl_coef", [0.0, 0.3])
def test_update_applies_the_gradient_of_the_surrogate_over_every_token(tiny_dir, problems, tmp_path, monkeypatch,
                                                                       kl_coef):
    session = _session(tiny_dir, problems, tmp_path, kl_coef=kl_coef)
    with torch.no_grad():  # a non-zero adapter, so that the KL term has something to measure
        for n, p in session.peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    rollouts, prompts, batch = _hand_batch(session)
    want = _reference_grads(session, rollouts, prompts, batch.advantages, kl_coef)
    got, stats = _grads_of_update(session, batch, monkeypatch)
    assert stats.tokens == sum(len(r.token_ids) for r in rollouts)  # the normaliser counts the flat group's tokens
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-7, atol=1e-10, msg=n)
    assert any(float(g.abs().max()) > 1e-6 for g in want.values())  # the check has something to compare
    assert stats.sums["ratio"] / stats.forwarded == pytest.approx(1.0, abs=1e-12)  # one update: ratio 1
    assert stats.sums["clip_fraction"] == 0.0


def test_zero_variance_groups_give_no_gradient_and_are_not_run(tiny_dir, problems, tmp_path, monkeypatch):
    from dail.rl.update import score

    session = _session(tiny_dir, problems, tmp_path)
    prompts = {("a", False): [1, 2, 3], ("b", False): [4, 5]}
    rollouts = [_rollout("a", i, [10 + i, 11], 0.0) for i in range(4)] + [_rollout("b", i, [20, 21, 22], 1.0)
                                                                         for i in range(4)]
    batch = score(rollouts, prompts, scale=True)
    assert (batch.all_fail, batch.all_pass) == (1, 1)
    got, stats = _grads_of_update(session, batch, monkeypatch)
    assert all(float(g.abs().max()) == 0.0 for g in got.values())
    assert stats.forwarded == 0  # the one row run for the all-reduce is not compute the batch used


def test_an_idle_process_adds_nothing_through_the_row_it_runs_for_the_all_reduce(tiny_dir, problems, tmp_path,
                                                                                monkeypatch):
    # Five processes, two rows with a gradient: process 4 has none of its own and runs row 0 (process 0's,
    # advantage 1) only to join the all-reduce; that row must not count twice.
    from dail.rl.update import score

    session = _session(tiny_dir, problems, tmp_path)
    prompts = {("a", False): [1, 2, 3], ("b", False): [4, 5]}
    rollouts = [_rollout("a", 0, [10, 11], 1.0), _rollout("a", 1, [12, 13], 0.0),
                _rollout("b", 0, [20, 21], 0.0), _rollout("b", 1, [22, 23], 0.0)]
    batch = score(rollouts, prompts, scale=True)
    assert batch.advantages[0] != 0.0
    kind = type(session.accelerator)
    monkeypatch.setattr(kind, "process_index", property(lambda _: 4))
    monkeypatch.setattr(kind, "num_processes", property(lambda _: 5))
    got, stats = _grads_of_update(session, batch, monkeypatch)
    assert all(float(g.abs().max()) == 0.0 for g in got.values())
    assert stats.forwarded == 0 and stats.sums == {}


def test_a_second_update_on_the_same_batch_is_off_policy(tiny_dir, problems, tmp_path):
    from dail.rl.update import old_logprobs, update

    session = _session(tiny_dir, problems, tmp_path, updates_per_batch=2, lr=0.05)
    _, _, batch = _hand_batch(session)
    batch.old = old_logprobs(session, batch)
    session.peft_model.train()
    first = update(session, batch, 0)
    second = update(session, batch, 1)
    assert first.sums["ratio"] / first.forwarded == pytest.approx(1.0, abs=1e-9)  # old = the policy that sampled
    assert abs(second.sums["ratio"] / second.forwarded - 1.0) > 1e-4  # the policy moved: the ratio is not 1


# --------------------------------------------------------------------------------------------------
# the loop


def test_rewards_rise_when_the_model_can_earn_them(tiny_dir, problems, tmp_path, earnable_reward):
    from dail.rl.fit import fit

    cfg = _cfg(tiny_dir, problems, tmp_path / "run", steps=12, problems_per_step=3, group_size=8, lr=0.1,
               sampling={"max_new_tokens": 1}, save_every=100)
    _, summary = fit(cfg)
    log = _log(tmp_path / "run")
    assert [r["step"] for r in log] == list(range(1, 13))
    first, last = sum(r["reward"] for r in log[:3]) / 3, sum(r["reward"] for r in log[-3:]) / 3
    assert 0.0 < first < 1.0  # the premise: some groups have signal
    assert last > first + 0.2  # measured: 0.43 -> 0.81
    assert all(r["ratio"] == pytest.approx(1.0) for r in log)
    assert summary["sampled_tokens_seen"] == sum(r["sampled_tokens"] for r in log)
    # the compute a run's table reads back from the rollout files is what the run counted as it went
    from dail.rl.rollouts import compute_from_files

    assert compute_from_files(tmp_path / "run") == {"sampled": summary["sampled_tokens_seen"],
                                                   "trained": log[-1]["tokens_seen"]}
    assert 0 < log[-1]["tokens_seen"] < summary["sampled_tokens_seen"]  # some groups were flat: not trained on


def test_a_killed_run_resumes_with_the_rollouts_an_uninterrupted_run_drew(tiny_dir, problems, tmp_path,
                                                                            earnable_reward):
    from dail.rl.fit import fit

    out = tmp_path / "run"
    cfg = _cfg(tiny_dir, problems, out, save_every=2)
    straight, _ = fit(cfg)
    weights = {n: p.detach().clone() for n, p in straight.named_parameters() if "lora_" in n}
    kept = tmp_path / "straight-rollouts"
    shutil.copytree(out / "rollouts", kept)
    log_straight = _log(out)
    assert any(0 < r["reward"] < 1 for r in log_straight)  # updates that move the weights

    # Killed while step 4 (index 3) sampled: its last checkpoint is step 2, half of step 3's rollouts written.
    shutil.rmtree(out / "checkpoints" / "step-4")
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (out / f).unlink()
    last = out / "rollouts" / "step-000003.jsonl"
    lines = last.read_text().splitlines(keepends=True)
    last.write_text("".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:20])  # and a torn line
    with pytest.raises(ConfigError, match="already holds a training run"):
        fit(cfg)
    resumed, summary = fit(cfg.model_copy(update={"resume": True}))
    assert summary["start_step"] == 2
    for f in sorted(kept.glob("step-*.jsonl")):
        got, want = read_jsonl(out / "rollouts" / f.name, Rollout), read_jsonl(f, Rollout)
        assert [(r.problem_id, r.sample, r.token_ids, r.reward) for r in got] == \
               [(r.problem_id, r.sample, r.token_ids, r.reward) for r in want], f.name
    log_resumed = _log(out)
    assert [r["step"] for r in log_resumed] == [1, 2, 3, 4]
    for key in ("loss", "reward", "grad_norm", "tokens_seen", "sampled_tokens_seen"):
        torch.testing.assert_close(torch.tensor([float(r[key]) for r in log_resumed]),
                                   torch.tensor([float(r[key]) for r in log_straight]), rtol=1e-6, atol=1e-9, msg=key)
    for n, p in resumed.named_parameters():
        if "lora_" in n:
            torch.testing.assert_close(p.detach(), weights[n], rtol=1e-6, atol=1e-9)


_LAUNCHED = """
import sys
from dail.config import RLConfig
from dail.rl import rollouts, run

real = rollouts._sample

def sample(ctx, step, by_id, sink, prompts, hinted):  # the earnable reward of the tests, in each process
    class Sink:
        todo = sink.todo

        @staticmethod
        def put(i, row):
            sink.put(i, row.model_copy(update={"reward": 1.0 if row.token_ids[0] % 2 == 0 else 0.0}))

    real(ctx, step, by_id, Sink, prompts, hinted)

rollouts._sample = sample
run(RLConfig.model_validate_json(open(sys.argv[1]).read()))
"""


def test_two_processes_give_the_single_process_run(tiny_dir, problems, tmp_path, earnable_reward):
    # DDP on CPU (gloo): each process samples its share of the problems and trains on its share of the rows.
    from dail import models
    from dail.rl.fit import fit

    cfg = _cfg(tiny_dir, problems, tmp_path / "one", steps=3, problems_per_step=3)
    one, _ = fit(cfg)
    launch_two(tmp_path, _LAUNCHED, cfg.model_copy(update={"out": str(tmp_path / "two"), "grad_accum": 2}))
    for f in sorted((tmp_path / "one" / "rollouts").glob("step-*.jsonl")):
        got = read_jsonl(tmp_path / "two" / "rollouts" / f.name, Rollout)
        assert [(r.problem_id, r.sample, r.token_ids) for r in got] == \
               [(r.problem_id, r.sample, r.token_ids) for r in read_jsonl(f, Rollout)]
    log_one, log_two = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert any(r["grad_norm"] > 0 for r in log_one)
    for key in ("loss", "grad_norm", "reward", "tokens", "forwarded_tokens", "tokens_seen"):
        torch.testing.assert_close(torch.tensor([float(r[key]) for r in log_two]),
                                   torch.tensor([float(r[key]) for r in log_one]), rtol=1e-9, atol=1e-12, msg=key)
    two, _ = models.load(tiny_dir, dtype="float64", adapter=tmp_path / "two")
    ids = torch.tensor([[1, 17, 300, 4021, 9, 77]])
    with torch.no_grad():
        torch.testing.assert_close(two(ids).logits, one(ids).logits, rtol=1e-9, atol=1e-9)


def test_nurl_rolls_all_fail_groups_again_with_the_hint(tiny_dir, problems, tmp_path, monkeypatch):
    from dail.rl import rollouts
    from dail.rl.fit import fit

    hints = {p.id: "think of the total" for p in read_jsonl(problems, Problem)}
    real = rollouts._sample

    def sample(ctx, step, by_id, sink, prompts, hinted):  # plain rollouts fail, hinted ones succeed
        class Sink:
            todo = sink.todo

            @staticmethod
            def put(i, row):
                sink.put(i, row.model_copy(update={"reward": 1.0 if hinted and row.sample % 2 else 0.0}))

        real(ctx, step, by_id, Sink, prompts, hinted)

    monkeypatch.setattr(rollouts, "_sample", sample)
    out = tmp_path / "nurl"
    _, summary = fit(_cfg(tiny_dir, problems, out, steps=2, hints="unused"), hints=hints)
    assert summary["method"] == "nurl"
    log = _log(out)
    assert [r["rerolled"] for r in log] == [2, 2]  # both groups of each step failed, both were nudged
    assert [r["hinted"] for r in log] == [6, 6]  # rollouts 1..G-1 of each group carry the hint
    hinted = read_jsonl(out / "rollouts" / "step-000000.hinted.jsonl", Rollout)
    assert sorted({r.sample for r in hinted}) == [1, 2, 3] and all(r.hinted for r in hinted)
    assert all(r["all_fail"] == 0.0 and r["grad_norm"] > 0 for r in log)  # the nudged groups carry signal
    # sampled: the plain rollouts the re-rolls replaced were drawn too
    drawn = [sum(len(r.token_ids) for f in (f"step-{i:06d}.jsonl", f"step-{i:06d}.hinted.jsonl")
                 for r in read_jsonl(out / "rollouts" / f, Rollout)) for i in (0, 1)]
    assert [r["sampled_tokens"] for r in log] == drawn
    assert log[-1]["sampled_tokens_seen"] == sum(drawn)
    from dail.rl.rollouts import compute_from_files

    assert compute_from_files(out) == {"sampled": sum(drawn), "trained": log[-1]["tokens_seen"]}


def test_the_hinted_prompt_holds_the_hint_and_the_plain_one_does_not(tiny_dir, problems, tmp_path):
    from dail.prompts import render
    from dail.rl.fit import Context, _prompts

    ps = read_jsonl(problems, Problem)[:2]
    session = _session(tiny_dir, problems, tmp_path)
    ctx = Context(_cfg(tiny_dir, problems, tmp_path / "x"), session, None, ps, {}, {ps[0].id: "HINTWORD"})
    got = _prompts(ctx)
    tok = session.tokenizer
    assert got[(ps[0].id, False)] == render(tok, Role.LEARNER, ps[0], ctx.cfg.prompts)
    assert "HINTWORD" in tok.decode(got[(ps[0].id, True)]) and "HINTWORD" not in tok.decode(got[(ps[0].id, False)])
    assert (ps[1].id, True) not in got  # no hint, no hinted prompt


def test_problems_without_answers_are_refused_before_a_model_loads(tmp_path):
    from dail.rl.fit import load_problems

    path = tmp_path / "p.jsonl"
    write_jsonl(path, [Problem(id="x", problem="what?", solution="so")])
    with pytest.raises(DataError, match="answer"):
        load_problems(str(path))


@pytest.mark.parametrize(("steps", "nurl_from", "switch"), [(1, None, 0), (4, 4, 4)])
def test_nurl_needs_grpo_batches_before_its_own_and_after(steps, nurl_from, switch):
    from dail.config import RunConfig

    with pytest.raises(ValueError, match=rf"nurl_from: {switch} must be at least 1 and below rl.steps \({steps}\)"):
        RunConfig(name="r", model="testbed", train_data="testbed-train", eval_data=["testbed-val"],
                  methods=["base", "grpo", "nurl"], rl={"steps": steps}, nurl_from=nurl_from)
    RunConfig(name="r", model="testbed", train_data="testbed-train", eval_data=["testbed-val"],  # without nurl: no switch
              methods=["base", "grpo"], rl={"steps": steps})


def test_sampling_other_than_the_policy_is_refused():
    with pytest.raises(ValueError, match="temperature 1"):
        RLConfig(data="x", out="y", sampling={"temperature": 0.7})


@pytest.mark.parametrize("template", ["{problem}", "Hint: {hint}", "{problem} {hint} {answer}", "{problem {hint}"])
def test_a_hint_template_without_both_fields_is_refused_before_a_model_loads(template):
    with pytest.raises(ValueError, match="hint_template"):
        RLConfig(data="x", out="y", hint_template=template)


# --------------------------------------------------------------------------------------------------
# NuRL's hints


@pytest.mark.parametrize("hint, leaked", [
    ("Add the two amounts first.", False),
    ("The answer is 42.", True),
    ("so the result is \\boxed{42}", True),
    ("Use 420 apples and 4.2 kg.", False),  # 42 inside longer numbers is no leak
    ("Multiply 42 by nothing.", True),
])
def test_a_hint_that_holds_the_answer_leaks(hint, leaked):
    from dail.rl.hints import leaks

    assert leaks(hint, Problem(id="p", problem="q", answer="42")) is leaked


def test_read_hints_takes_the_first_attempt_that_does_not_leak(tmp_path):
    from dail.rl.hints import Hint, read_hints

    path = tmp_path / "h.jsonl"
    rows = [("a", 1, "second", False), ("a", 0, "the answer is 3", True), ("b", 0, "x is 5", True),
            ("c", 0, "  ", False)]
    write_jsonl(path, [Hint(problem_id=p, sample=a, hint=h, n_tokens=3, leaked=x) for p, a, h, x in rows])
    assert read_hints(path) == {"a": "second"}


def test_hints_stage_writes_resumable_rows_marked_for_leaks(tiny_dir, problems, tmp_path):
    from dail.config import HintConfig
    from dail.rl.hints import Hint, make_hints

    out = tmp_path / "hints.jsonl"
    cfg = HintConfig(model=tiny_dir, data=problems, out=str(out), attempts=2, limit=3, mode="partial",
                     sampling={"max_new_tokens": 8}, dtype="float64")
    summary = make_hints(cfg)
    rows = read_jsonl(out, Hint)
    assert [(r.problem_id, r.sample) for r in rows] == [(p.id, a) for p in read_jsonl(problems, Problem)[:3]
                                                       for a in range(2)]
    assert summary["attempts"] == 6 and summary["with_hint"] <= 3
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:3]))  # killed after three rows
    make_hints(cfg)
    assert read_jsonl(out, Hint) == rows  # the rest drawn as the first run drew them
