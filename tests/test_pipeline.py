"""End to end: `dail run` on a tiny random model writes every artefact, resumes, and skips done work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dail import pipeline
from dail.cli import app
from dail.config import ConfigError, RunConfig, load_config
from dail.data import read_traces, write_jsonl
from dail.datasets import resolve_problems

METHODS = ["base", "sft-expert", "star", "psd-nll", "dail-nll", "dail"]


@pytest.fixture
def run_config(tmp_path, tiny_model_dir) -> Path:
    write_jsonl(tmp_path / "train.jsonl", resolve_problems("arith-train")[:3])
    write_jsonl(tmp_path / "test.jsonl", resolve_problems("arith-test")[:2])
    text = f"""
name = "e2e"
out_dir = "{tmp_path / 'runs'}"
model = "{tiny_model_dir}"
train_data = "{tmp_path / 'train.jsonl'}"
eval_data = ["{tmp_path / 'test.jsonl'}"]
methods = {json.dumps(METHODS)}
device = "cpu"
[expand]
n = 2
batch_size = 4
[expand.sampling]
max_new_tokens = 12
[train]
max_steps = 2
batch_size = 2
kept_only = false   # a random model answers nothing right: train on every trace
save_every = 1
[train.lora]
r = 2
alpha = 4
[eval]
n = 2
k = [1, 2]
batch_size = 4
force_answer_tokens = 4
[eval.sampling]
max_new_tokens = 12
"""
    path = tmp_path / "e2e.toml"
    path.write_text(text)
    return path


def _events(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != "events.jsonl"}


@pytest.mark.slow
def test_run_writes_everything_and_resumes(run_config, monkeypatch):
    cfg = load_config(RunConfig, run_config)
    root = pipeline.run_dir(cfg).root

    # Killed in training, right after expansion finished.
    def killed(_cfg, **_):
        raise KeyboardInterrupt

    monkeypatch.setattr("dail.train.run", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(cfg)
    traces_before = (root / "traces.jsonl").read_bytes()
    monkeypatch.undo()

    n_events = len(_events(root))
    result = CliRunner().invoke(app, ["run", "--config", str(run_config)])
    assert result.exit_code == 0, result.output
    # The plan names every stage the run goes through, in its order; the CLI counts them off.
    plan = pipeline.plan(cfg)
    assert [e["stage"] for e in _events(root)[n_events:] if e["event"] in ("start", "skip")] == plan
    k = plan.index("train:dail") + 1
    assert f"[stage {k}/{len(plan)}] train:dail · elapsed " in result.output
    assert f"[stage 1/{len(plan)}] waypoints: complete, skipped" in result.output
    # Expansion was complete: the resumed run skipped it and left the traces untouched.
    resumed = _events(root)
    assert {"event": "skip", "stage": "expand:traces.jsonl"}.items() <= next(
        e for e in resumed if e.get("stage") == "expand:traces.jsonl" and e["event"] == "skip").items()
    assert (root / "traces.jsonl").read_bytes() == traces_before

    # Every artefact of the layout.
    for name in ["config.toml", "waypoints.jsonl", "traces.jsonl", "traces-star.jsonl", "traces-psd.jsonl", "report.html",
                 "metrics.json", "events.jsonl"]:
        assert (root / name).is_file(), name
    assert list((root / "plots").glob("*.png"))
    for method in METHODS:
        if method != "base":
            assert (root / "adapter" / method / "adapter_config.json").is_file(), method
        eval_dir = root / "eval" / method / "test"
        assert (eval_dir / "samples.jsonl").is_file() and (eval_dir / "metrics.json").is_file(), method
    traces = read_traces(root / "traces.jsonl", kept_only=False)
    assert len(traces) == 3 * 2
    star = read_traces(root / "traces-star.jsonl", kept_only=False)
    psd = read_traces(root / "traces-psd.jsonl", kept_only=False)
    assert all(set(t.source) <= {"P"} for t in star + psd)  # both privileged-only
    # STaR's privileged prompt holds the answer, psd's the solution: other contexts, other tokens.
    assert [t.token_ids for t in star] != [t.token_ids for t in psd]
    # keep = first-correct (the default): at most one kept trace per problem
    assert all(sum(t.kept for t in traces if t.problem_id == pid) <= 1 for pid in {t.problem_id for t in traces})
    report = (root / "report.html").read_text()
    for method in METHODS:
        assert method in report
    summary = json.loads((root / "metrics.json").read_text())
    assert set(summary["methods"]) == set(METHODS)

    # A finished run: rerunning recomputes nothing.
    before = _snapshot(root)
    n_events = len(_events(root))
    result = CliRunner().invoke(app, ["run", "--config", str(run_config)])
    assert result.exit_code == 0, result.output
    after = _events(root)[n_events:]
    assert {e["event"] for e in after} <= {"skip", "done"}
    assert _snapshot(root) == before


@pytest.mark.parametrize("processes", [1, 4])
def test_accelerate_launcher_command(tmp_path, monkeypatch, processes):
    # Several processes go through accelerate's torchrun launcher (--multi_gpu), CPU runs say so
    # through the environment: `accelerate launch --cpu` would start one process.
    calls = []
    monkeypatch.setattr(pipeline.subprocess, "run", lambda command, check, env: calls.append((command, env)))
    cfg = RunConfig(name="x", train_data="arith-train", eval_data=["arith-test"], launcher="accelerate",
                    num_processes=processes, device="cpu")
    pipeline._launch(cfg, tmp_path / "expand.toml", "expand", cfg)  # any config: it is only saved
    (command, env), = calls
    assert command[command.index("--num_processes") + 1] == str(processes)
    assert ("--multi_gpu" in command) == (processes > 1) and "--cpu" not in command
    assert env["ACCELERATE_USE_CPU"] == "true"
    assert command[-4:-2] == ["dail", "expand"] and Path(command[-1]).is_file()


def test_selection_samples_the_problems_evaluation_samples_from_a_stream_of_its_own(tmp_path, tiny_model_dir,
                                                                                     one_thread):
    """`dail run` with select and an eval split equal to the candidates: selection and evaluation sample
    the same (problem, sample index) under the same seed, and must not draw the same tokens, else
    selection would pick the problems on which evaluation later scores the base model 0."""
    from dail import evaluate
    from dail.config import EvalConfig
    from dail.data import Sample, read_jsonl

    write_jsonl(tmp_path / "problems.jsonl", resolve_problems("arith-train")[:2])
    problems = str(tmp_path / "problems.jsonl")
    cfg = RunConfig(name="streams", out_dir=str(tmp_path / "runs"), model=tiny_model_dir, train_data=problems,
                    eval_data=[problems], methods=["base"], select=True, select_n=2, device="cpu", seed=3,
                    eval={"n": 2, "k": [1, 2], "batch_size": 4, "force_answer_tokens": 2,
                          "sampling": {"max_new_tokens": 8}})
    root = pipeline.run_dir(cfg).root
    pipeline.run(cfg)

    def drawn(directory: Path) -> dict:
        return {(s.problem_id, s.sample): (s.text, s.n_tokens, s.finish)
                for s in read_jsonl(directory / "samples.jsonl", Sample)}

    selection = drawn(root / "selected-samples")
    evaluation = drawn(root / "eval" / "base" / "problems")
    assert selection.keys() == evaluation.keys() == {(f"arith-train-{i:05d}", s) for i in range(2) for s in range(2)}
    assert all(selection[key] != evaluation[key] for key in selection), (selection, evaluation)

    # The control: selection's own settings drawn from evaluation's stream give evaluation's samples,
    # so the stream is the only thing that tells the two apart.
    own = load_config(EvalConfig, root / "selected-samples" / "config.toml")
    evaluate.run(own.model_copy(update={"out": str(tmp_path / "control")}))
    assert drawn(tmp_path / "control") == evaluation


def test_rl_methods_run_beside_the_others_with_their_compute(tmp_path, tiny_model_dir, one_thread):
    """grpo, nurl (grpo's run continued from its checkpoint with hinted re-rolls) and rlvr (another file) train,
    are evaluated like every method, and report the tokens they sampled and trained on."""
    write_jsonl(tmp_path / "train.jsonl", resolve_problems("arith-train")[:4])
    write_jsonl(tmp_path / "easy.jsonl", resolve_problems("arith-test")[:4])
    cfg = RunConfig(name="rl", out_dir=str(tmp_path / "runs"), model=tiny_model_dir, train_data=str(tmp_path / "train.jsonl"),
                    eval_data=[str(tmp_path / "easy.jsonl")], methods=["base", "grpo", "nurl", "rlvr"], device="cpu",
                    rlvr_data=str(tmp_path / "easy.jsonl"), rlvr_steps=3, nurl_from=2,
                    rl={"steps": 4, "problems_per_step": 2, "group_size": 2, "sampling": {"max_new_tokens": 4},
                        "lora": {"r": 2, "alpha": 4}},
                    hints={"mode": "partial", "attempts": 1, "sampling": {"max_new_tokens": 6}},
                    eval={"n": 2, "k": [1, 2], "batch_size": 4, "force_answer_tokens": 2, "sampling": {"max_new_tokens": 4}})
    result = pipeline.run(cfg)
    root = Path(result["run_dir"])
    plan = [s for s in pipeline.plan(cfg) if s.startswith(("rl:", "hints"))]
    assert plan == ["rl:grpo", "hints", "rl:nurl", "rl:rlvr"]
    events = [json.loads(x) for x in (root / "events.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in events if e["event"] == "start" and e["stage"] in plan] == plan  # the order they ran
    for method in ("grpo", "nurl", "rlvr"):
        assert (root / "adapter" / method / "adapter_config.json").is_file(), method
        assert (root / "eval" / method / "easy" / "metrics.json").is_file(), method
    assert (root / "adapter" / "grpo" / "checkpoints" / "step-2" / "provenance.json").is_file()  # nurl starts there
    nurl_log = [json.loads(x) for x in (root / "adapter" / "nurl" / "log.jsonl").read_text().splitlines()]
    assert [r["batch"] for r in nurl_log] == [3, 4]  # grpo's later batches, drawn by the hinted stage
    assert sorted(p.name for p in (root / "adapter" / "nurl" / "rollouts").glob("step-??????.jsonl")) == \
        ["step-000002.jsonl", "step-000003.jsonl"]
    grpo_log = [json.loads(x) for x in (root / "adapter" / "grpo" / "log.jsonl").read_text().splitlines()]
    used = result["compute"]
    assert used["grpo"]["sampled"] == grpo_log[-1]["sampled_tokens_seen"] > 0
    assert used["grpo"]["trained"] == grpo_log[-1]["tokens_seen"]
    # nurl: grpo's batches up to the switch, its own hinted stage, and every hint attempt
    from dail.data import read_jsonl
    from dail.rl.hints import Hint

    hint_tokens = sum(h.n_tokens for h in read_jsonl(root / "hints.jsonl", Hint))
    assert hint_tokens > 0
    assert used["nurl"]["sampled"] == \
        grpo_log[1]["sampled_tokens_seen"] + nurl_log[-1]["sampled_tokens_seen"] + hint_tokens
    assert used["nurl"]["trained"] == grpo_log[1]["tokens_seen"] + nurl_log[-1]["tokens_seen"]
    assert used["rlvr"]["sampled"] > 0 and used["base"]["sampled"] == 0
    rlvr_problems = {json.loads(x)["problem_id"] for p in (root / "adapter" / "rlvr" / "rollouts").glob("*.jsonl")
                     for x in p.read_text().splitlines()}
    assert rlvr_problems <= {p.id for p in resolve_problems("arith-test")[:4]}
    rlvr_log = [json.loads(x) for x in (root / "adapter" / "rlvr" / "log.jsonl").read_text().splitlines()]
    assert [r["batch"] for r in rlvr_log] == [1, 2, 3]  # rlvr_steps: its own number of batches

    assert (root / "plots" / "rl_training.png").is_file() and "RL training" in (root / "report.html").read_text()

    again = pipeline.run(cfg)  # finished: every stage skipped, the same table
    assert again["compute"] == used
    # the run ignores the RL settings (adding them to a finished run is allowed), each RL output does not
    with pytest.raises(ConfigError, match=r"lr: 1e-05 -> 0.001"):
        pipeline.run(cfg.model_copy(update={"rl": cfg.rl.model_copy(update={"lr": 1e-3})}))


def test_a_run_that_differs_in_rl_settings_only_reuses_the_hints(tmp_path):
    """share_sampled copies NuRL's hints into a run whose hint settings match, and only then."""
    base = dict(out_dir=str(tmp_path), model="testbed", train_data="testbed-train", eval_data=["testbed-val"],
                methods=["base", "grpo", "nurl"], hints={"mode": "partial", "attempts": 2})
    source = RunConfig(name="a", **base)
    root = pipeline.run_dir(source)
    root.root.mkdir(parents=True)
    for name in ("waypoints.jsonl", "hints.jsonl", "hints.config.toml"):
        (root.root / name).write_text(f"{name}\n")
    other_lr = RunConfig(name="b", **{**base, "rl": {"lr": 3e-4}})
    assert sorted(pipeline.share_sampled(source, other_lr)) == ["hints.config.toml", "hints.jsonl", "waypoints.jsonl"]
    assert (tmp_path / "b" / "hints.jsonl").read_text() == "hints.jsonl\n"
    other_hints = RunConfig(name="c", **{**base, "hints": {"mode": "partial", "attempts": 3}})
    assert pipeline.share_sampled(source, other_hints) == ["waypoints.jsonl"]
    without_nurl = RunConfig(name="d", **{**base, "methods": ["base", "grpo"]})
    assert pipeline.share_sampled(source, without_nurl) == ["waypoints.jsonl"]
