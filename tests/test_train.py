"""The training loop on tiny random models: it learns, touches only LoRA, resumes exactly, and its
update does not depend on how a step is split into micro-batches.

The model is conftest's tiny Llama on the embedded tokenizer, initialised with a large std so its
next-token distributions are peaked (a default-init tiny model is near uniform, and every objective
would see ~zero signal). The data are four bundled problems and traces written by hand: the
privileged role's greedy continuations, so the privileged reference favours the trace tokens as it
does for real mixed-policy traces.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from dail import models, train
from dail.config import ConfigError, PromptConfig, TrainConfig
from dail.data import DataError, Trace, write_jsonl
from dail.objectives import OBJECTIVES
from dail.rows import build_rows, collate

from conftest import hand_trace, launch_two, save_tiny_llama, write_provenance

TRACE_LENGTHS = (5, 9, 7, 12)  # unequal on purpose: a per-micro-batch mean would weight rows differently


# --------------------------------------------------------------------------------------------------
# fixtures


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, embedded_path) -> str:
    """A random 2-layer Llama (hidden 32, peaked logits) saved with the embedded tokenizer."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-train"), embedded_path, initializer_range=0.5)


@pytest.fixture(scope="module")
def data(tiny_dir, tmp_path_factory) -> dict[str, str]:
    """problems.jsonl (4 bundled problems), traces.jsonl (4 kept greedy traces + 1 rejected) and its provenance."""
    from dail.datasets import resolve_problems
    from dail.prompts import render

    root = tmp_path_factory.mktemp("train-data")
    problems = resolve_problems("arith-train")[:4]
    write_jsonl(root / "problems.jsonl", problems)
    model, tok = models.load(tiny_dir)
    traces = []
    with torch.no_grad():
        for p, n in zip(problems, TRACE_LENGTHS):
            ids = render(tok, "privileged", p, PromptConfig())
            out: list[int] = []
            for _ in range(n):  # greedy under the privileged prompt, no cache: tiny and short
                out.append(int(model(torch.tensor([ids + out])).logits[0, -1].argmax()))
            traces.append(_trace(tok, p.id, out))
    rejected = _trace(tok, problems[0].id, [5, 6, 7], sample=1, kept=False)
    write_jsonl(root / "traces.jsonl", traces + [rejected])
    write_provenance(root / "traces.jsonl", tiny_dir, model, tok)  # as expand writes it: train needs it
    return {"problems": str(root / "problems.jsonl"), "traces": str(root / "traces.jsonl")}


def _trace(tok, problem_id: str, ids: list[int], sample: int = 0, kept: bool = True) -> Trace:
    """A hand-written trace whose text is its tokens decoded."""
    return hand_trace(problem_id, ids, sample=sample, text=tok.decode(ids), finish="length", kept=kept)


def _cfg(tiny_dir: str, data: dict, out: Path, **kw) -> TrainConfig:
    base = dict(model=tiny_dir, traces=data["traces"], problems=data["problems"], out=str(out), batch_size=4,
                lr=1e-2, warmup_ratio=0.0, lora={"r": 4}, seed=0)
    return TrainConfig(**{**base, **kw})


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def nll_run(tiny_dir, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("nll") / "adapter"
    model, summary = train.fit(_cfg(tiny_dir, data, out, objective="nll", max_steps=16))
    return model, summary, out


@pytest.fixture(scope="module")
def contrastive_run(tiny_dir, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("contrastive") / "adapter"
    model, summary = train.fit(_cfg(tiny_dir, data, out, objective="contrastive", max_steps=16))
    return model, summary, out


def _probe_ids() -> torch.Tensor:
    return torch.tensor([[1, 17, 300, 4021, 9, 77, 2048, 11], [5, 6, 7, 8, 9, 10, 11, 12]])  # [2, 8]


# --------------------------------------------------------------------------------------------------
# gather


def test_logits_are_gathered_at_the_positions_that_predict_trace_tokens(tiny_dir, data, tmp_path):
    cfg = _cfg(tiny_dir, data, tmp_path, objective="contrastive")
    model, tok = models.load(tiny_dir, dtype="float64")  # float64: padding and batching change no digit that matters
    rows = build_rows(cfg, tok)
    assert len(rows) == 4  # the rejected trace is left out
    lm = train.TraceHidden(models.attach_lora(model, r=4))
    with torch.no_grad():
        for role in ("learner", "privileged", "negative"):
            ids, index = collate(rows, role, tok.pad_token_id, "cpu")  # [B, L], [N]
            got = lm.head(lm(ids, index))  # [N, V]
            want = []
            for r in rows:  # each row alone, unpadded, through the ordinary forward
                seq = torch.tensor([r.prompts[role] + r.target])
                p = len(r.prompts[role])
                want.append(model(seq).logits[0, p - 1:p - 1 + len(r.target)])
            torch.testing.assert_close(got, torch.cat(want), rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# it learns, and only the adapter moves


def test_nll_training_lowers_the_trace_nll(nll_run):
    _, summary, out = nll_run
    log = _log(out)
    assert [r["step"] for r in log] == list(range(1, 17))
    assert {"step", "epoch", "loss", "lr", "tokens", "grad_norm", "nll", "elapsed"} <= set(log[0])
    assert log[0]["tokens"] == sum(TRACE_LENGTHS)  # every kept row, one step per epoch
    assert log[-1]["nll"] < log[0]["nll"] - 1.0
    assert summary["steps"] == 16 and summary["rows"] == 4
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert (out / "config.toml").exists() and (out / "checkpoints" / "step-16" / "state.json").exists()


def test_contrastive_training_lowers_its_loss_and_the_trace_nll(contrastive_run):
    _, _, out = contrastive_run
    log = _log(out)
    for key in ("kl_privileged", "kl_negative", "margin", "nll"):
        assert key in log[0]
    assert log[-1]["loss"] < log[0]["loss"] - 1.0
    assert log[-1]["kl_privileged"] < log[0]["kl_privileged"]
    assert log[-1]["nll"] < log[0]["nll"] - 1.0  # the privileged model favours the trace; the learner follows
    assert log[-1]["margin"] == pytest.approx(log[0]["margin"], abs=1e-4)  # references are frozen


def _fresh_base(tiny_dir: str):
    return models.load(tiny_dir)[0]


def test_only_lora_parameters_change(contrastive_run, tiny_dir):
    model, _, _ = contrastive_run
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    base = _fresh_base(tiny_dir).state_dict()
    trained = {n.replace(".base_layer", ""): t
               for n, t in model.get_base_model().state_dict().items() if "lora_" not in n}
    assert trained.keys() == base.keys()
    for name, tensor in base.items():
        assert torch.equal(trained[name], tensor), name
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # B starts at zero


def test_disabled_adapter_is_exactly_the_base_model(contrastive_run, tiny_dir):
    model, _, _ = contrastive_run
    ids = _probe_ids()
    with torch.no_grad():
        want = _fresh_base(tiny_dir)(ids).logits
        with model.disable_adapter():
            assert torch.equal(model(ids).logits, want)
        assert not torch.allclose(model(ids).logits, want)  # the adapter did learn something


def test_saved_adapter_loads_back_with_dail_and_with_peft(contrastive_run, tiny_dir):
    from peft import PeftModel

    model, _, out = contrastive_run
    ids = _probe_ids()
    with torch.no_grad():
        want = model(ids).logits
        via_dail, _ = models.load(tiny_dir, adapter=out)
        via_peft = PeftModel.from_pretrained(_fresh_base(tiny_dir), str(out)).eval()
        torch.testing.assert_close(via_dail(ids).logits, want, rtol=0, atol=1e-6)
        torch.testing.assert_close(via_peft(ids).logits, want, rtol=0, atol=1e-6)


def test_sft_expert_trains_on_solutions_without_traces(tiny_dir, data, tmp_path):
    cfg = _cfg(tiny_dir, data, tmp_path / "sft", objective="sft-expert", traces=None, max_steps=8)
    _, summary = train.fit(cfg)
    log = _log(tmp_path / "sft")
    assert summary["rows"] == 4 and log[-1]["loss"] < log[0]["loss"] - 1.0
    assert "kl_privileged" not in log[0] and log[0]["nll"] == log[0]["loss"]  # no reference forwards


# --------------------------------------------------------------------------------------------------
# resume and gradient accumulation


def test_resume_gives_the_losses_of_an_uninterrupted_run(tiny_dir, data, tmp_path):
    out = tmp_path / "run"
    # batch 2 over 4 rows: the checkpoint at step 3 sits mid-epoch; dropout > 0 exercises the RNG.
    cfg = _cfg(tiny_dir, data, out, objective="contrastive", max_steps=6, save_every=3, batch_size=2,
               schedule="cosine", warmup_ratio=0.2, lora={"r": 4, "dropout": 0.1})
    straight, _ = train.fit(cfg)
    log_straight = _log(out)
    weights_straight = {n: p.detach().clone() for n, p in straight.named_parameters() if "lora_" in n}
    state = json.loads((out / "checkpoints" / "step-3" / "state.json").read_text())
    assert (state["step"], state["epoch"], state["position"]) == (3, 1, 2)

    # Interrupted after step 3 as a kill would leave it: later checkpoints and the final adapter gone.
    shutil.rmtree(out / "checkpoints" / "step-6")
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (out / f).unlink()
    with pytest.raises(ConfigError, match="already holds a training run"):
        train.fit(cfg)
    resumed, summary = train.fit(cfg.model_copy(update={"resume": True}))
    assert summary["start_step"] == 3
    log_resumed = _log(out)
    assert [r["step"] for r in log_resumed] == list(range(1, 7))  # lines of redone steps not duplicated
    for key in ("loss", "lr", "grad_norm", "kl_privileged", "kl_negative", "nll", "tokens"):
        torch.testing.assert_close(torch.tensor([r[key] for r in log_resumed], dtype=torch.float64),
                                   torch.tensor([r[key] for r in log_straight], dtype=torch.float64),
                                   rtol=1e-6, atol=1e-7, msg=key)
    for n, p in resumed.named_parameters():
        if "lora_" in n:
            torch.testing.assert_close(p.detach(), weights_straight[n], rtol=1e-6, atol=1e-7)

    _, again = train.fit(cfg.model_copy(update={"resume": True}))  # a finished run resumes to a no-op
    assert again["start_step"] == 6 and len(_log(out)) == 6
    # another plan is refused before the model loads, naming the setting (the checkpoint's plan check stays behind it)
    with pytest.raises(ConfigError, match="max_steps: 6 -> 8"):
        train.fit(cfg.model_copy(update={"resume": True, "max_steps": 8}))


def test_tensorboard_holds_each_logged_step_as_the_jsonl_log_across_a_resume(tiny_dir, data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dail.rundir import AdapterDir
    from dail.trackers import PROJECT

    out = tmp_path / "run"
    cfg = _cfg(tiny_dir, data, out, objective="sft-expert", traces=None, max_steps=4, save_every=2,
               report_to=["tensorboard"])
    train.fit(cfg)
    # Killed after the checkpoint at step 2: the steps it logged past it are redone and must not show twice.
    shutil.rmtree(out / "checkpoints" / "step-4")
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (out / f).unlink()
    train.fit(cfg.model_copy(update={"resume": True}))
    events = EventAccumulator(str(AdapterDir(out).trackers / PROJECT))
    events.Reload()
    log = _log(out)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    for key in ("loss", "lr", "grad_norm", "tokens", "tokens_seen", "nll"):
        got = [(e.step, e.value) for e in events.Scalars(f"train/{key}")]
        assert got == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in log], key  # float32 in the event file


def _one_step(cfg: TrainConfig, rows) -> tuple[dict, dict]:
    """Accumulated gradients and updated LoRA weights after the first optimizer step."""
    session = train.setup(cfg, len(rows))
    grads: dict[str, torch.Tensor] = {}
    for name, p in session.peft_model.named_parameters():
        if p.requires_grad:  # fires after each accumulation: the last value is the full gradient
            p.register_post_accumulate_grad_hook(lambda p, name=name: grads.__setitem__(name, p.grad.clone()))
    train.train_step(session, 0, rows)
    return grads, {n: p.detach().clone() for n, p in session.peft_model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("objective", ["contrastive", "contrastive-target", "nll"])
def test_gradient_accumulation_gives_the_full_batch_update(tiny_dir, data, tmp_path, objective):
    # Adam's first step is nearly sign(g), blind to how g is scaled; the gradients are compared too.
    cfg = _cfg(tiny_dir, data, tmp_path, objective=objective, dtype="float64", lr=1e-4, max_grad_norm=None,
               schedule="constant", max_steps=1)
    rows = build_rows(cfg, models.load_tokenizer(tiny_dir))
    assert len({len(r.target) for r in rows}) > 1
    grads_full, weights_full = _one_step(cfg, rows)
    grads_acc, weights_acc = _one_step(cfg.model_copy(update={"grad_accum": 4}), rows)  # micro-batches of 1
    assert grads_full.keys() == grads_acc.keys() and any(g.abs().sum() > 0 for g in grads_full.values())
    for name in grads_full:
        torch.testing.assert_close(grads_acc[name], grads_full[name], rtol=1e-10, atol=1e-12, msg=name)
        torch.testing.assert_close(weights_acc[name], weights_full[name], rtol=1e-10, atol=1e-12, msg=name)


_LAUNCHED = """
import sys
from dail.config import TrainConfig
from dail.train import run
run(TrainConfig.model_validate_json(open(sys.argv[1]).read()))
"""


def test_two_processes_with_accumulation_give_the_single_process_run(tiny_dir, data, tmp_path):
    # DDP on CPU (gloo): 2 processes x 2 micro-batches of 1 row must log what 1 process x 4 rows logs.
    cfg = _cfg(tiny_dir, data, tmp_path / "one", objective="contrastive", dtype="float64", max_steps=3)
    one, _ = train.fit(cfg)
    launch_two(tmp_path, _LAUNCHED, cfg.model_copy(update={"out": str(tmp_path / "two"), "grad_accum": 2}))
    log_one, log_two = _log(tmp_path / "one"), _log(tmp_path / "two")
    for key in ("loss", "grad_norm", "kl_privileged", "kl_negative", "margin", "nll", "tokens"):
        torch.testing.assert_close(torch.tensor([r[key] for r in log_two]), torch.tensor([r[key] for r in log_one]),
                                   rtol=1e-9, atol=1e-12, msg=key)
    two, _ = models.load(tiny_dir, dtype="float64", adapter=tmp_path / "two")
    ids = _probe_ids()
    with torch.no_grad():
        torch.testing.assert_close(two(ids).logits, one(ids).logits, rtol=1e-9, atol=1e-9)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dir, data, tmp_path):
    cfg = _cfg(tiny_dir, data, tmp_path, objective="contrastive", dtype="float64", max_grad_norm=None, max_steps=1)
    rows = build_rows(cfg, models.load_tokenizer(tiny_dir))
    grads, _ = _one_step(cfg, rows)
    grads_ckpt, _ = _one_step(cfg.model_copy(update={"gradient_checkpointing": True}), rows)
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-10, atol=1e-12, msg=name)


def test_schedule_warms_up_linearly_and_never_runs_a_step_at_zero():
    cosine = [train.lr_lambda("cosine", 2, 10)(s) for s in range(10)]
    assert cosine[:3] == pytest.approx([1 / 3, 2 / 3, 1.0]) and all(0 < f <= 1 for f in cosine)
    assert cosine == sorted(cosine[:3]) + sorted(cosine[3:], reverse=True)
    assert [train.lr_lambda("linear", 0, 4)(s) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert {train.lr_lambda("constant", 1, 4)(s) for s in range(1, 4)} == {1.0}


# --------------------------------------------------------------------------------------------------
# bad input


def test_trace_naming_an_unknown_problem_names_the_file_and_the_id(tiny_dir, data, tmp_path):
    tok = models.load_tokenizer(tiny_dir)
    bad = tmp_path / "traces.jsonl"
    write_jsonl(bad, [_trace(tok, "no-such-problem", [5, 6])])
    with pytest.raises(DataError) as info:
        train.run(_cfg(tiny_dir, data, tmp_path / "out", traces=str(bad)))
    assert str(bad) in str(info.value) and "no-such-problem" in str(info.value) and ":1:" in str(info.value)


def test_student_and_references_are_scored_at_the_positions_that_predict_each_trace_token(
        tiny_dir, data, tmp_path, monkeypatch):
    """What the contrastive loss receives, row by row: at counted position i (row b, token j), the
    student's logits are those of `learner prompt + trace` at column len(learner prompt) - 1 + j, and
    each reference's those of ITS prompt + trace at len(its prompt) - 1 + j -- all predicting trace
    token j. Checked on the logits the step really hands to the loss (captured), against one direct
    forward per row and role, as log-probs of the trace token. At step 0 the adapter's B is zero, so
    the student is the base model too. Chunks of 7 positions exercise the chunked head."""
    from dail.datasets import resolve_problems
    from dail.prompts import render
    from dail.waypoints import waypoints_for

    cfg = _cfg(tiny_dir, data, tmp_path, objective="contrastive", dtype="float64", max_steps=1)
    tok = models.load_tokenizer(tiny_dir)
    rows = build_rows(cfg, tok)
    session = train.setup(cfg, len(rows))
    monkeypatch.setattr(train.step, "LOGIT_CHUNK_ELEMENTS", 7 * session.vocab_size)
    seen: list[tuple[torch.Tensor, ...]] = []
    real = OBJECTIVES["contrastive"].fn

    def capture(student, privileged, negative, mask, *args, **kwargs):
        seen.append((student.detach().clone(), privileged.clone(), negative.clone(), mask.clone()))
        return real(student, privileged, negative, mask, *args, **kwargs)

    monkeypatch.setitem(OBJECTIVES, "contrastive", dataclasses.replace(OBJECTIVES["contrastive"], fn=capture))
    train.train_step(session, 0, rows)
    assert len(seen) == -(-sum(TRACE_LENGTHS) // 7)  # one call per chunk
    student, privileged, negative, mask = (torch.cat(x) for x in zip(*seen))  # [N, V] x 3, [N]

    base, _ = models.load(tiny_dir, dtype="float64")
    problems = {p.id: p for p in resolve_problems(cfg.problems)}
    targets = torch.tensor([t for r in rows for t in r.target])  # [N], row-major then token
    want, late = {}, {}  # role -> [N] log-probs of the trace tokens, at the right columns and one late
    for role in ("learner", "privileged", "negative"):
        lp, lp_late = [], []
        for r in rows:  # the prompt rendered here, not taken from the row: positions come from its length
            problem = problems[r.key.rsplit("#", 1)[0]]
            waypoints = waypoints_for(problem) if role == "negative" else None
            prompt = render(tok, role, problem, cfg.prompts, waypoints=waypoints)
            assert prompt == r.prompts[role]
            with torch.no_grad():
                logits = base(torch.tensor([prompt + r.target])).logits[0]  # [P + T, V]
            target = torch.tensor(r.target)[:, None]  # [T, 1]
            p, n = len(prompt), len(r.target)
            # column P - 1 + j predicts token j
            lp.append(torch.log_softmax(logits[p - 1:p - 1 + n], -1).gather(-1, target)[:, 0])
            lp_late.append(torch.log_softmax(logits[p:p + n], -1).gather(-1, target)[:, 0])
        want[role], late[role] = torch.cat(lp), torch.cat(lp_late)
    counted = mask.nonzero()[:, 0]
    assert len(counted) == len(targets) == sum(TRACE_LENGTHS)
    for role, logits in (("learner", student), ("privileged", privileged), ("negative", negative)):
        got = torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0]  # [N]
        torch.testing.assert_close(got[counted], want[role][counted], rtol=0, atol=1e-9, msg=role)
    for role in want:  # the check has teeth: one column late gives other log-probs of the trace tokens
        assert float((late[role] - want[role]).abs().max()) > 1e-2, role


def test_fresh_deletes_a_training_runs_own_files_and_nothing_else(tmp_path):
    from dail.checkpoint import remove_run

    out = tmp_path / "adapter"
    (out / "checkpoints" / "step-2").mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "log.jsonl", "config.toml", "provenance.json",
                 "checkpoints/step-2/state.json", "notes.txt"):
        (out / name).write_text("x")
    remove_run(out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    mine = tmp_path / "project"  # a config.toml alone does not make a folder a training run's
    mine.mkdir()
    (mine / "config.toml").write_text("x")
    remove_run(mine)
    assert (mine / "config.toml").exists()
