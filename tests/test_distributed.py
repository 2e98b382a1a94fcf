"""Tests for dail.distributed: the interleaved shard, part files (resume, merge, a missing part), and
`accelerate launch` of expand and eval on 2 CPU processes writing what one process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dail import distributed as dist
from dail.data import JsonlAppender, write_jsonl


def test_alone_without_a_launcher():
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    assert dist.shard(list("abcde")) == list("abcde")
    assert dist.device_for("cpu") == "cpu" and dist.device_for("cuda:3") == "cuda:3"
    dist.barrier()
    assert dist.gather({"x": 1}) == [{"x": 1}]


def test_a_launch_that_the_process_group_does_not_match_is_refused(monkeypatch):
    # torchrun said 2 processes, but this one joined alone: it would redo the whole job and write
    # the same files as the other one.
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="launched as 2 processes .* process group has 1"):
        dist.check_launch(1)
    dist.check_launch(2)
    monkeypatch.delenv("WORLD_SIZE")
    dist.check_launch(1)


def test_use_cpu_follows_cuda_and_the_launchers_flag(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert not dist.use_cpu()
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    assert dist.use_cpu()
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert dist.use_cpu()


def test_shard_is_interleaved(monkeypatch):
    monkeypatch.setattr(dist.ranks, "world_size", lambda: 3)
    shards = []
    for r in range(3):
        monkeypatch.setattr(dist.ranks, "rank", lambda r=r: r)
        shards.append(dist.shard(list(range(8))))
    assert shards == [[0, 3, 6], [1, 4, 7], [2, 5]]


def row(pid: str, s: int) -> dict:
    return {"problem_id": pid, "sample": s, "x": 0.1 + s}


def test_parts_resume_and_merge_in_canonical_order(tmp_path):
    out = tmp_path / "traces.jsonl"
    order = [(p, s) for p in ("a", "b", "c") for s in range(2)]
    assert dist.part_path(out, 1, 2).name == "traces.jsonl.part-1-of-2"
    assert dist.write_path(out) == out  # alone, nothing about: the file itself
    write_jsonl(out, [row("a", 0)])  # an earlier single-process run: a prefix of the order
    part0, part1 = dist.part_path(out, 0, 2), dist.part_path(out, 1, 2)
    with JsonlAppender(part0) as w:
        w.write(row("a", 1))
        w.write(row("c", 0))
    part0.open("a").write('{"problem_id": "c", "sa')  # killed mid-row
    with JsonlAppender(part1) as w:
        w.write(row("b", 0))
    assert dist.find_parts(out) == [part0, part1]
    assert dist.write_path(out) == dist.part_path(out, 0, 1)  # parts about: never append to out
    assert dist.done_keys(out) == {("a", 0), ("a", 1), ("c", 0), ("b", 0)}
    with JsonlAppender(part0) as w:  # the resumed rank appends after its last complete row
        w.write(row("c", 1))
    with JsonlAppender(part1) as w:
        w.write(row("b", 1))
        w.write(row("a", 0))  # a duplicate of out's row is dropped by the merge
    assert dist.merge_parts(out, order, world=2) == 5
    assert dist.find_parts(out) == []
    assert out.read_text() == "".join(json.dumps(row(p, s)) + "\n" for p, s in order)
    assert dist.merge_parts(out, order) == 0  # nothing left to merge


def test_merge_with_a_missing_part_names_it_and_keeps_the_others(tmp_path):
    out = tmp_path / "samples.jsonl"
    with JsonlAppender(dist.part_path(out, 0, 3)) as w:
        w.write(row("a", 0))
    dist.part_path(out, 2, 3).touch()
    with pytest.raises(FileNotFoundError, match=r"samples\.jsonl\.part-1-of-3"):
        dist.merge_parts(out, [("a", 0)], world=3)
    assert not out.exists() and len(dist.find_parts(out)) == 2



def test_merge_keeps_the_first_part_of_a_duplicate_and_puts_strays_last_in_part_order(tmp_path):
    """The contract merge_parts implements: parts are read in `find_parts` order -- by (world, rank):
    part-0-of-1 (a launch of 1), then part-0-of-2, part-1-of-2 -- and a key already seen (in `out`,
    or in a part read earlier) is skipped, so of a key in several parts the FIRST part's row wins.
    Rows with a key in `order` go in canonical order; rows with any other key (strays) go after
    all of them, in the order found: part order, then line order within a part."""
    out = tmp_path / "traces.jsonl"
    order = [(p, s) for p in ("a", "b") for s in range(2)]
    first, rank0, rank1 = dist.part_path(out, 0, 1), dist.part_path(out, 0, 2), dist.part_path(out, 1, 2)

    def tagged(pid: str, s: int, where: str) -> dict:
        return {**row(pid, s), "from": where}

    write_jsonl(first, [tagged("b", 1, "0-of-1"), tagged("z", 0, "0-of-1")])
    write_jsonl(rank0, [tagged("z", 1, "0-of-2"), tagged("b", 1, "0-of-2"), tagged("a", 1, "0-of-2"),
                        tagged("y", 0, "0-of-2")])
    write_jsonl(rank1, [tagged("x", 0, "1-of-2"), tagged("a", 1, "1-of-2"), tagged("a", 0, "1-of-2"),
                        tagged("z", 0, "1-of-2")])
    assert dist.find_parts(out) == [first, rank0, rank1]
    assert dist.merge_parts(out, order) == 7
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["problem_id"], r["sample"], r["from"]) for r in got] == [
        ("a", 0, "1-of-2"),
        ("a", 1, "0-of-2"),  # in rank 0's and rank 1's parts: the earlier part, rank 0's, wins
        ("b", 1, "0-of-1"),  # in part-0-of-1 and part-0-of-2: part-0-of-1 sorts first and wins
        ("z", 0, "0-of-1"),  # strays, after every canonical row, in the order found:
        ("z", 1, "0-of-2"),  # part-0-of-1's, then part-0-of-2's (line order: z 1 before y 0),
        ("y", 0, "0-of-2"),
        ("x", 0, "1-of-2"),  # then part-1-of-2's (its z 0 is a duplicate of part-0-of-1's: dropped)
    ]
    assert dist.find_parts(out) == []


# ---------------------------------------------------------------------------------------------
# accelerate launch, 2 CPU processes, against one process

SIZES = ["--n", "2", "--max-new-tokens", "12", "--seed", "3", "--device", "cpu", "--batch-size", "4"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               HF_HOME=str(tmp_path / "hf"), ACCELERATE_CONFIG_FILE=str(tmp_path / "no-accelerate-config.yaml"),
               PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    return env


def _dail(args: list[str], env: dict[str, str], processes: int = 0) -> None:
    # --multi_gpu is accelerate's torchrun launcher; dail joins its CPU process group with gloo
    # (`--cpu` would start one process, whatever --num_processes says).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), "--multi_gpu",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              "0", "-m", "dail"] if processes else [sys.executable, "-m", "dail"]
    done = subprocess.run(launch + args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> str:
    from dail.datasets import resolve_problems

    path = tmp_path_factory.mktemp("problems") / "problems.jsonl"
    write_jsonl(path, resolve_problems("arith-train")[:3])
    return str(path)


def test_expand_and_eval_on_two_processes_write_the_bytes_of_one(tmp_path, tiny_model_dir, problems):
    env = _env(tmp_path)
    common = ["--model", tiny_model_dir, "--data", problems, *SIZES]
    for name in ("one", "two"):
        launch = 2 if name == "two" else 0
        _dail(["expand", *common, "--out", str(tmp_path / name / "traces.jsonl")], env, launch)
        # No forced answers here: a 100-token continuation of a random float32 model decoded beside other
        # rows can flip a near-tie token by matmul rounding (seen once in ~100 tokens); the 12-token
        # samples are the bytes under test. Forced answers are held to their reference in test_evaluate.
        _dail(["eval", *common, "--k", "1,2", "--no-force-answer", "--out", str(tmp_path / name / "eval")], env, launch)
    for rel in ("eval/samples.jsonl", "eval/metrics.json"):
        one, two = (tmp_path / "one" / rel).read_bytes(), (tmp_path / "two" / rel).read_bytes()
        # metrics.json records the config, whose `out` names the run's own directory
        assert one.replace(b"/one/", b"/two/") == two, rel
    # Traces: the same rows, tokens and sources; log-probs to float32 rounding, since the two ranks
    # batch other sequences together and matmul rounding depends on the batch.
    rows = {name: [json.loads(line) for line in (tmp_path / name / "traces.jsonl").read_text().splitlines()]
            for name in ("one", "two")}
    for one, two in zip(rows["one"], rows["two"], strict=True):
        for key in ("logprob_learner", "logprob_privileged"):
            assert one.pop(key) == pytest.approx(two.pop(key), abs=1e-5)
        assert one == two
    assert len((tmp_path / "one" / "traces.jsonl").read_text().splitlines()) == 6
    # no parts left behind; one log line and one config, from rank 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["eval", "events.jsonl", "traces.config.toml",
                                                                     "traces.jsonl", "traces.provenance.json"]
    assert len((tmp_path / "two" / "events.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "two" / "eval").iterdir()) == [
        "config.toml", "metrics.json", "provenance.json", "samples.jsonl"]
