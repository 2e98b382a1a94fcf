"""`dail run` and `dail select`: a whole experiment as a sequence of resumable stages.

The run directory is the only state (DESIGN.md layout):

    runs/NAME/config.toml  waypoints.jsonl  traces.jsonl  adapter/METHOD/  eval/METHOD/SPLIT/
              metrics.json  report.html  plots/*.png  log.jsonl

Each stage is skipped when its output is complete, and the stages that can be interrupted
(select, expand, train, eval) resume from what they wrote, so rerunning a finished run does nothing
and a killed run continues where it stopped. This module decides what to run and where the files
go; the stages themselves live in their own modules. With `launcher = "accelerate"` the model
stages run as `accelerate launch -m dail STAGE --config FILE` so they shard across processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from .config import EvalConfig, ExpandConfig, RunConfig, SelectConfig, TrainConfig, load_config, save_config, to_toml
from .data import JsonlAppender, Problem, atomic_write_text, read_done_keys, read_problems, write_jsonl

__all__ = ["run", "select", "run_dir", "split_name", "TRAINED"]

console = Console(stderr=True)

# method -> (traces it trains on, objective); "base" trains nothing.
TRAINED: dict[str, tuple[str | None, str]] = {
    "sft-expert": (None, "sft-expert"),
    "star": ("traces-star.jsonl", "nll"),
    "psd-nll": ("traces-psd.jsonl", "nll"),
    "dail-nll": ("traces.jsonl", "nll"),
    "dail": ("traces.jsonl", "contrastive"),
}

# traces file -> how its expansion differs from the run's [expand] settings.
#   traces.jsonl      the mixed rollout (DAIL)
#   traces-psd.jsonl  privileged self-distillation: every token the privileged student's (tau >= 1)
#   traces-star.jsonl STaR's rationalization: the privileged prompt holds only the final answer, every
#                     token the privileged student's, correct ones kept (Zelikman et al. 2022; the
#                     authors' answer_only option)
EXPANSIONS: dict[str, dict[str, Any]] = {
    "traces.jsonl": {},
    "traces-psd.jsonl": {"rule": "threshold", "tau": 1.0},
    "traces-star.jsonl": {"rule": "threshold", "tau": 1.0, "privileged_view": "answer"},
}


def run_dir(cfg: RunConfig) -> Path:
    """The directory a run writes to."""
    return Path(cfg.out_dir) / cfg.name


def split_name(spec: str) -> str:
    """A short name for an eval split: the bundled name, or the file's stem."""
    return Path(spec).stem if spec.endswith(".jsonl") else spec


class _Log:
    """Structured stage log of a run (`log.jsonl`), one line per event."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, event: str, **fields: Any) -> None:
        with JsonlAppender(self.path) as w:
            w.write({"time": round(time.time(), 3), "event": event, **fields})


def _stage(cfg: RunConfig, root: Path, label: str, config: BaseModel, in_process) -> None:
    """Run one model stage in this process, or through `accelerate launch` with its config file."""
    if cfg.launcher == "none":
        in_process(config)
        return
    path = root / "stages" / (label.replace(":", "-").replace("/", "-") + ".toml")
    save_config(config, path)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(cfg.num_processes),
               "--num_machines", "1", "--dynamo_backend", "no"]
    if cfg.num_processes > 1:  # accelerate's torchrun launcher, on CPU-only hosts too (gloo)
        command.append("--multi_gpu")
    env = dict(os.environ)
    if cfg.device == "cpu":  # keep a CPU run on the CPU even on a GPU host; `--cpu` would start one process
        env["ACCELERATE_USE_CPU"] = "true"
    command += ["-m", "dail", label.split(":")[0], "--config", str(path)]
    console.print(f"[dim]$ {' '.join(command)}[/]")
    subprocess.run(command, check=True, env=env)


def _problems(spec: str) -> list[Problem]:
    from .datasets import resolve_problems

    return resolve_problems(spec)


def select(cfg: SelectConfig) -> dict:
    """Keep the problems the base model fails in all of `n` samples (the paper's training-set rule)."""
    from .data import Sample, read_jsonl
    from .evaluate import run as evaluate

    out = Path(cfg.out)
    work = out.with_name(out.stem + "-samples")
    problems = _problems(cfg.data)[: cfg.limit]
    solved: set[str] = set()
    checkable = [p for p in problems if p.verifiable]
    if checkable:
        eval_cfg = EvalConfig(**cfg.model_dump(exclude={"data", "out", "limit"}), data=cfg.data, out=str(work),
                              k=[1], budgets=[cfg.sampling.max_new_tokens], limit=cfg.limit)
        evaluate(eval_cfg, stage="select")  # its own random streams, not evaluation's
        solved = {row.problem_id for row in read_jsonl(work / "samples.jsonl", Sample) if row.correct}
    # A problem without a checkable answer (a proof) cannot be selected by failure: it passes through.
    kept = [p for p in problems if p.id not in solved]
    write_jsonl(out, kept)
    summary = {"candidates": len(problems), "selected": len(kept), "unverifiable": len(problems) - len(checkable),
               "n": cfg.n}
    console.print(f"select: kept {len(kept)} of {len(problems)} problems: the base model fails all {cfg.n} samples "
                  f"of {len(kept) - summary['unverifiable']}, and {summary['unverifiable']} have no answer to check")
    return summary


def _write_if_changed(path: Path, text: str) -> None:
    # A rerun of a finished run must leave every file as it was.
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def _expand_done(cfg: ExpandConfig, problems: list[Problem]) -> bool:
    from .expand import wanted_keys

    return set(wanted_keys(cfg, problems[: cfg.limit])) <= read_done_keys(cfg.out)


def run(cfg: RunConfig) -> dict:
    """Run (or resume) a whole experiment; returns the path of the report and the metrics table."""
    root = run_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    saved = root / "config.toml"
    if saved.exists() and saved.read_text(encoding="utf-8") != to_toml(cfg):
        console.print(f"[yellow]warning:[/] {saved} differs from this config; stages already complete are not rerun")
    _write_if_changed(saved, to_toml(cfg))
    log = _Log(root / "log.jsonl")
    common = {"model": cfg.model, "seed": cfg.seed, "device": cfg.device, "dtype": cfg.dtype}
    prompts = cfg.prompts.model_dump()
    started = time.time()

    def stage(name: str, done: bool, config: BaseModel | None, in_process) -> None:
        if done:
            console.print(f"[dim]{name}: complete, skipped[/]")
            log("skip", stage=name)
            return
        console.rule(f"[bold]{name}")
        t0 = time.time()
        log("start", stage=name)
        if config is None:
            in_process()
        else:
            _stage(cfg, root, name, config, in_process)
        log("end", stage=name, seconds=round(time.time() - t0, 2))

    # 1. select (optional): training problems the base model cannot solve.
    train_data = cfg.train_data
    if cfg.select:
        sel = SelectConfig(**common, data=cfg.train_data, out=str(root / "selected.jsonl"), n=cfg.select_n,
                           prompts=prompts, limit=cfg.select_limit,
                           **{k: v for k, v in cfg.eval.items() if k in ("sampling", "batch_size")})
        stage("select", (root / "selected.jsonl").exists(), sel, select)
        train_data = str(root / "selected.jsonl")

    # 2. waypoints for the negative reference.
    waypoints_file = root / "waypoints.jsonl"

    def make_waypoints() -> None:
        from .waypoints import write_waypoints

        # Every method trains on the same problems: the ones expansion uses.
        write_waypoints(_problems(train_data)[: cfg.expand.get("limit")], waypoints_file, mode=cfg.waypoints_mode)

    stage("waypoints", waypoints_file.exists(), None, make_waypoints)
    problems = read_problems(waypoints_file)

    # 3. expansion: mixed rollouts (dail, dail-nll) and privileged-only rollouts (star).
    from .expand import run as expand

    wanted = {TRAINED[m][0] for m in cfg.methods if m in TRAINED} - {None}
    for traces in sorted(wanted):
        ex = ExpandConfig(**{**cfg.expand, **EXPANSIONS[traces], **common, "prompts": prompts},
                          data=str(waypoints_file), out=str(root / traces))
        stage(f"expand:{traces}", _expand_done(ex, problems), ex, expand)

    # 4. training, one adapter per trained method.
    from .train import run as train

    for method in cfg.methods:
        if method not in TRAINED:
            continue
        traces, objective = TRAINED[method]
        out = root / "adapter" / method
        tr = TrainConfig(**{**cfg.train, **common, "prompts": prompts, "resume": True}, objective=objective,
                         problems=str(waypoints_file), traces=str(root / traces) if traces else None, out=str(out))
        stage(f"train:{method}", (out / "adapter_config.json").exists(), tr, train)

    # 5. evaluation of every method on every split.
    from .evaluate import run as evaluate

    for method in cfg.methods:
        adapter = None if method == "base" else str(root / "adapter" / method)
        for spec in cfg.eval_data:
            out = root / "eval" / method / split_name(spec)
            ev = EvalConfig(**{**cfg.eval, **common, "prompts": prompts}, adapter=adapter, data=spec, out=str(out))
            stage(f"eval:{method}/{split_name(spec)}", (out / "metrics.json").exists(), ev, evaluate)

    # 6. report (cheap; rewritten whenever an input is newer than it).
    from .report import run as report

    metrics = sorted((root / "eval").glob("*/*/metrics.json"))
    html = root / "report.html"
    stale = not html.exists() or any(m.stat().st_mtime > html.stat().st_mtime for m in metrics)
    stage("report", not stale, None, lambda: report([str(root)], str(root)))

    table = _table(root, cfg)
    seconds = round(time.time() - started, 1)
    log("done", seconds=seconds)
    _write_if_changed(root / "metrics.json", json.dumps({"methods": table}, indent=2) + "\n")
    return {"run_dir": str(root), "report": str(html), "table": table, "seconds": seconds}


def _table(root: Path, cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """pass@k per method and split, read back from the eval directories, printed as a table."""
    rows: dict[str, dict[str, Any]] = {}
    table = Table(title=f"{cfg.name}: pass@k")
    table.add_column("method")
    table.add_column("split")
    ks: list[str] = []
    for method in cfg.methods:
        for spec in cfg.eval_data:
            path = root / "eval" / method / split_name(spec) / "metrics.json"
            if not path.exists():
                continue
            m = json.loads(path.read_text())
            pass_at = {str(k): v for k, v in m["pass_at_k"].items()}
            if not ks:
                ks = list(pass_at)
                for k in ks:
                    table.add_column(f"pass@{k}", justify="right")
                table.add_column("tokens", justify="right")
            rows.setdefault(method, {})[split_name(spec)] = {"pass_at_k": pass_at, "mean_tokens": m["mean_tokens"]}
            table.add_row(method, split_name(spec), *(f"{pass_at.get(k, float('nan')):.3f}" for k in ks),
                          f"{m['mean_tokens']:.0f}")
    Console().print(table)
    return rows


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A run config from TOML with dotted-key overrides."""
    return load_config(RunConfig, path, overrides)
