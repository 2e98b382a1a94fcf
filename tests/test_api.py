"""The Python API refuses what the command line refuses: each stage's `run(cfg)`, given the bad inputs
of the CLI's tests, raises the error the CLI turns into its one line, with that line's text. The CLI
prints each refusal once: once per command, and once per launch rather than once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from dail import evaluate, expand, pipeline, provenance
from dail.cli import app
from dail.config import (ConfigError, EvalConfig, ExpandConfig, RunConfig, SelectConfig, TrainConfig, save_config,
                         to_toml)
from dail.data import DataError, Sample, write_jsonl
from dail.distributed import OutputInUse
from dail.models import AdapterError
from dail.provenance import ProvenanceError
from dail.rundir import EvalDir, config_path, data_digest, provenance_path, selection_dir

from conftest import hand_trace

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(cfg: TrainConfig):
    from dail.train import run

    return run(cfg)


STAGES: dict[str, Callable] = {"expand": expand.run, "eval": evaluate.run, "train": _train, "select": pipeline.select,
                               "run": pipeline.run}

# What a model other than the tiny one would record: stages must refuse its traces, samples and adapters.
FOREIGN = {"model": {"spec": "another-model", "fingerprint": "f" * 32},
           "tokenizer": {"vocab_size": 7, "hash": "f" * 32}, "prompts": None}


@pytest.fixture
def configs(tmp_path, tiny_model_dir) -> dict[str, BaseModel]:
    """A good config of every stage on two bundled problems and the tiny model; nothing written yet."""
    from dail.datasets import resolve_problems

    data = str(tmp_path / "problems.jsonl")
    write_jsonl(data, resolve_problems("arith-train")[:2])
    model, small = tiny_model_dir, {"max_new_tokens": 2}
    return {
        "expand": ExpandConfig(model=model, data=data, out=str(tmp_path / "traces.jsonl"), n=1, device="cpu",
                               sampling=small),
        "eval": EvalConfig(model=model, data=data, out=str(tmp_path / "eval"), n=1, k=[1], device="cpu", sampling=small,
                           force_answer=False),
        "train": TrainConfig(model=model, traces=str(tmp_path / "traces.jsonl"), problems=data,
                             out=str(tmp_path / "adapter"), objective="nll", max_steps=1, lora={"r": 2}, device="cpu"),
        "select": SelectConfig(model=model, data=data, out=str(tmp_path / "selected.jsonl"), n=1, device="cpu",
                               sampling=small),
        "run": RunConfig(name="r", model=model, out_dir=str(tmp_path / "runs"), train_data=data, eval_data=[data],
                         device="cpu"),
    }


# --------------------------------------------------------------------------------------------------
# the bad inputs: each makes a stage's good config bad (writing what it needs) and returns it


def _earlier_rows(stage: str, cfg: BaseModel, record: dict | None = None, **changes) -> None:
    """One row of an earlier run of `cfg` (with `changes` to its settings) in its output, its config, and `record`."""
    saved = cfg.model_copy(update={"data_digest": data_digest(cfg.data), **changes})
    pid = json.loads(Path(cfg.data).read_text().splitlines()[0])["id"]
    if stage == "expand":
        rows, config, sidecar = Path(cfg.out), config_path(cfg.out), provenance_path(cfg.out)
        row = hand_trace(pid, [10, 11])
    else:
        out = EvalDir(Path(cfg.out))
        rows, config, sidecar = out.samples, out.config, provenance_path(out.root)
        row = Sample(problem_id=pid, sample=0, seed=cfg.seed, text="x", n_tokens=1, finish="eos", answer=None,
                     correct=False)
    rows.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(rows, [row])
    save_config(saved, config)
    if record is not None:
        provenance.write(sidecar, record)


def _traces(cfg: TrainConfig, record: dict | None) -> None:
    """Traces of every problem for `cfg` to train on, with `record` beside them."""
    pids = [json.loads(line)["id"] for line in Path(cfg.problems).read_text().splitlines()]
    write_jsonl(cfg.traces, [hand_trace(pid, [10, 11, 12]) for pid in pids])
    if record is not None:
        provenance.write(provenance_path(cfg.traces), record)


def _adapter(cfg: EvalConfig, record: dict | None) -> EvalConfig:
    """`cfg` evaluating an adapter directory that peft would take, with `record` as its provenance."""
    adapter = Path(cfg.out).parent / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))
    if record is not None:
        provenance.write(provenance_path(adapter), record)
    return cfg.model_copy(update={"adapter": str(adapter)})


def _device(stage: str, cfg: BaseModel, tmp: Path, hold) -> BaseModel:
    return cfg.model_copy(update={"device": "cuda:99"})  # more than any machine here has


def _out_kind(stage: str, cfg: BaseModel, tmp: Path, hold) -> BaseModel:
    wrong = tmp / "wrong"
    if stage in ("expand", "select"):
        wrong.mkdir()  # a folder where the output file goes
    else:
        wrong.write_text("x\n")  # a file where the output folder goes
    return cfg.model_copy(update={"out": str(wrong)})


def _no_data(stage: str, cfg: BaseModel, tmp: Path, hold) -> BaseModel:
    return cfg.model_copy(update={"traces" if stage == "train" else "data": str(tmp / "missing.jsonl")})


def _in_use(stage: str, cfg: BaseModel, tmp: Path, hold) -> BaseModel:
    """Another process holding the lock that a second writer of the stage's output meets."""
    hold({"expand": lambda: Path(cfg.out), "eval": lambda: EvalDir(Path(cfg.out)).samples,
          "train": lambda: Path(cfg.out), "select": lambda: EvalDir(selection_dir(cfg.out)).samples,
          "run": lambda: pipeline.run_dir(cfg).root}[stage]())
    return cfg


def _other_settings(stage: str, cfg: BaseModel, tmp: Path, hold) -> BaseModel:
    if stage == "run":
        root = pipeline.run_dir(cfg)
        root.root.mkdir(parents=True)
        root.config.write_text(to_toml(cfg.model_copy(update={"seed": cfg.seed + 1})))
    else:
        _earlier_rows(stage, cfg, seed=cfg.seed + 1)
    return cfg


def _record(record: dict | None):
    """Rows of an earlier run (expand, eval) or traces to train on, with `record` as their provenance."""
    def make(stage: str, cfg: BaseModel, tmp: Path, hold) -> BaseModel:
        if stage == "train":
            _traces(cfg, record)
        else:
            _earlier_rows(stage, cfg, record=record)
        return cfg

    return make


def _adapter_record(record: dict | None):
    return lambda stage, cfg, tmp, hold: _adapter(cfg, record)


# name -> (the stages it applies to, the error both paths give, what makes it)
BAD = {
    "device": (["expand", "eval", "train", "select", "run"], ConfigError, _device),
    "out-kind": (["expand", "eval", "train", "select"], DataError, _out_kind),
    "no-data": (["expand", "eval", "train", "select"], DataError, _no_data),
    "in-use": (["expand", "eval", "train", "select", "run"], OutputInUse, _in_use),
    "other-settings": (["expand", "eval", "run"], ConfigError, _other_settings),
    "no-record": (["expand", "eval", "train"], ProvenanceError, _record(None)),
    "foreign-record": (["expand", "eval", "train"], ProvenanceError, _record(FOREIGN)),
    "adapter-no-record": (["eval"], AdapterError, _adapter_record(None)),
    "adapter-foreign": (["eval"], AdapterError, _adapter_record(FOREIGN)),
}
CASES = [(stage, bad) for bad, (stages, _, _) in BAD.items() for stage in stages]


def _cli(stage: str, cfg: BaseModel, tmp: Path, *flags: str) -> str:
    """The output of `dail STAGE --config FILE` on `cfg` (saved as that file), which must fail."""
    path = tmp / f"{stage}-cli.toml"
    save_config(cfg, path)
    result = CliRunner().invoke(app, [stage, "--config", str(path), *flags])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("stage, bad", CASES, ids=[f"{s}-{b}" for s, b in CASES])
def test_the_api_refuses_what_the_cli_refuses_with_its_line_printed_once(stage, bad, configs, tmp_path, holder):
    _, error, make = BAD[bad]
    cfg = make(stage, configs[stage], tmp_path, holder)
    output = _cli(stage, cfg, tmp_path)
    with pytest.raises(error) as err:
        STAGES[stage](cfg)
    assert output.count(f"error: {err.value}\n") == 1, output  # the CLI's one line, and only once


def test_fresh_is_the_way_past_rows_without_a_record(configs, tmp_path):
    for stage in ("expand", "eval"):
        cfg = configs[stage]
        _earlier_rows(stage, cfg)
        assert "--fresh" in _cli(stage, cfg, tmp_path)
        path = tmp_path / f"{stage}-cli.toml"
        result = CliRunner().invoke(app, [stage, "--config", str(path), "--fresh"])
        assert result.exit_code == 0, result.output
        sidecar = provenance_path(cfg.out if stage == "expand" else EvalDir(Path(cfg.out)).root)
        assert provenance.read(sidecar)["model"]["spec"] == cfg.model


# --------------------------------------------------------------------------------------------------
# once per launch


def test_only_the_first_process_of_a_machine_prints_a_refusal(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('data = "d"\nout = "o"\ntua = 1\n')
    monkeypatch.setenv("LOCAL_RANK", "1")  # another process of a launch: it refuses too, and says nothing
    result = CliRunner().invoke(app, ["expand", "--config", str(path)])
    assert result.exit_code == 1 and result.output == ""
    monkeypatch.setenv("LOCAL_RANK", "0")
    result = CliRunner().invoke(app, ["expand", "--config", str(path)])
    assert result.exit_code == 1 and result.output.count("unknown key 'tua'") == 1


def test_a_refusal_of_two_launched_processes_is_one_line(configs, tmp_path):
    cfg = configs["expand"]
    _earlier_rows("expand", cfg, seed=cfg.seed + 1)  # every rank refuses the resume, before any model loads
    save_config(cfg, tmp_path / "expand.toml")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore",
               ACCELERATE_CONFIG_FILE=str(tmp_path / "no-accelerate-config.yaml"))
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    env.pop("LOCAL_RANK", None)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
              "-m", "dail", "expand", "--config", str(tmp_path / "expand.toml")]
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "seed: 1 -> 0" in lines[0], done.stdout[-2000:] + done.stderr[-2000:]
