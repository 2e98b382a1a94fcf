"""`dail run` and `dail select`: a whole experiment as a sequence of resumable stages.

The run directory is the only state; its layout is `dail.rundir.RunDir`'s.

Each stage is skipped when its output is complete, and the stages that can be interrupted
(select, expand, train, eval) resume from what they wrote, so rerunning a finished run does nothing
and a killed run continues where it stopped. This module decides what to run and where the files
go; the stages themselves live in their own modules. With `launcher = "accelerate"` the model
stages run as `accelerate launch -m dail STAGE --config FILE` so they shard across processes.
It renders nothing: events go to the run's log and to an optional `on_event` callback (the CLI
draws them), and `run` returns the results table as data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .config import (ConfigError, EvalConfig, ExpandConfig, HintConfig, RLConfig, RunConfig, SelectConfig, TrainConfig,
                     check_same_settings, save_config, section_values, to_toml)
from .data import DataError, Problem, atomic_write_text, read_done_keys, read_problems, write_jsonl
from .distributed import Progress, output_lock
from .methods import EVAL_ROLE, EXPANSIONS, RL_TRAINED, SOLUTION_TRAINED, TRAINED
from .results import compute, four_traces, results_table
from .roles import Role
from .rundir import (AdapterDir, EvalDir, RunDir, RunLog, config_path, data_digest, data_revision, provenance_path,
                     selection_dir)
from .stage import check_inputs
from .trackers import log_results, require_installed

__all__ = ["run", "plan", "select", "run_dir", "share_sampled", "TRAINED", "RL_TRAINED", "EXPANSIONS", "OnEvent"]  # the tables: dail.methods

OnEvent = Callable[[str, str, dict[str, Any]], None]
"""on_event(stage, event, fields): 'start' / 'end' / 'skip' of a stage, 'done' of the run, 'selected' of select."""

def run_dir(cfg: RunConfig) -> RunDir:
    """The directory a run writes to."""
    return RunDir(Path(cfg.out_dir) / cfg.name)


def plan(cfg: RunConfig) -> list[str]:
    """Every stage a run goes through, in order, named as its events name them ('select', ..., 'report')."""
    return [*(["select"] if cfg.select else []), "waypoints",
            *(f"solutions:{m}" for m in SOLUTION_TRAINED if m in cfg.methods),
            *(f"expand:{t}" for t in _expansions(cfg, run_dir(cfg))), *(f"train:{m}" for m in cfg.methods if m in TRAINED),
            *(s for m in RL_TRAINED if m in cfg.methods for s in (["hints"] if m == "nurl" else []) + [f"rl:{m}"]),
            *(f"eval:{m}/{s.label}" for m in cfg.methods for s in cfg.eval_splits() if s.evaluates(m)), "report"]


def _launch(cfg: RunConfig, config_file: Path, stage: str, config: BaseModel) -> None:
    """Run one model stage through `accelerate launch` with its config file."""
    save_config(config, config_file)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(cfg.num_processes),
               "--num_machines", "1", "--dynamo_backend", "no"]
    if cfg.num_processes > 1:  # accelerate's torchrun launcher, on CPU-only hosts too (gloo)
        command.append("--multi_gpu")
    env = dict(os.environ)
    if cfg.device == "cpu":  # keep a CPU run on the CPU even on a GPU host; `--cpu` would start one process
        env["ACCELERATE_USE_CPU"] = "true"
    command += ["-m", "dail", stage, "--config", str(config_file)]
    try:
        subprocess.run(command, check=True, env=env)
    except subprocess.CalledProcessError as e:  # the processes printed their own error; the run says which stage
        raise ConfigError(f"{stage}: its launched processes failed (exit {e.returncode}); their error is above") from None


def _expansions(cfg: RunConfig, root: RunDir) -> dict[str, ExpandConfig]:
    """traces file -> the expansion that writes it, for every traces file the run's methods need."""
    wanted = {TRAINED[m][0] for m in cfg.methods if m in TRAINED} - {None}
    if "dail" in cfg.methods:
        wanted.add(RunDir.NEGATIVE)
    return {name: ExpandConfig(**{**section_values(cfg.expand), **EXPANSIONS[name], **_common(cfg)},
                               data=str(root.waypoints), out=str(root.traces(name))) for name in sorted(wanted)}


def share_sampled(source: RunConfig, target: RunConfig) -> list[str]:
    """Copy into `target`'s run directory the sampled outputs of `source` that `target` would sample again.

    Selection, waypoints and the controls' solution files when both runs select alike; each traces
    file whose expansion settings are the same in both (paths aside), and NuRL's hints likewise. A
    run that differs from another only in training settings then trains and evaluates without
    sampling a token twice.
    Copies, never links: the target may resume and append. Returns the names copied.
    """
    src, dst = run_dir(source), run_dir(target)
    same_select = all(getattr(source, k) == getattr(target, k) for k in
                      ("model", "seed", "train_data", "select", "select_n", "select_limit", "waypoints_mode",
                       "prompts", "dtype", "rft_per_problem")) \
        and source.eval.sampling == target.eval.sampling and source.expand.limit == target.expand.limit
    if not same_select or not src.waypoints.exists():
        return []
    names = [src.selected, src.selection_samples, src.waypoints,
             *(src.solutions(m) for m in SOLUTION_TRAINED if m in target.methods)]
    theirs, ours = _expansions(source, src), _expansions(target, dst)
    paths = {"data", "out"}
    names += [src.traces(n) for n, ex in ours.items()
              if n in theirs and theirs[n].model_dump(exclude=paths) == ex.model_dump(exclude=paths)]
    if "nurl" in source.methods and "nurl" in target.methods and \
            _hint_config(source, src).model_dump(exclude=paths) == _hint_config(target, dst).model_dump(exclude=paths):
        names.append(src.hints)
    copied = []
    dst.root.mkdir(parents=True, exist_ok=True)
    for path in names:
        for p in (path, config_path(path), provenance_path(path)) if path.suffix == ".jsonl" else (path,):
            if not p.exists() or (dst.root / p.name).exists():
                continue
            (shutil.copytree if p.is_dir() else shutil.copy2)(p, dst.root / p.name)
            copied.append(p.name)
    return copied


def _problems(spec: str) -> list[Problem]:
    from .datasets import resolve_problems

    return resolve_problems(spec)


def select(cfg: SelectConfig, on_event: OnEvent | None = None, *, fresh: bool = False) -> dict:
    """Keep the problems the base model fails in all of `n` samples (the training-set rule); `fresh`: sample anew."""
    from .data import Sample, read_jsonl
    from .evaluate import run as evaluate

    check_inputs(cfg, "file")
    out = Path(cfg.out)
    work = selection_dir(out)
    problems = _problems(cfg.data)[: cfg.limit]
    solved: set[str] = set()
    checkable = [p for p in problems if p.verifiable]
    if checkable:
        eval_cfg = EvalConfig(**cfg.model_dump(exclude={"data", "out", "limit"}), data=cfg.data, out=str(work),
                              k=[1], budgets=[cfg.sampling.max_new_tokens], limit=cfg.limit)
        evaluate(eval_cfg, stage="select", fresh=fresh)  # its own random streams, not evaluation's
        solved = {row.problem_id for row in read_jsonl(EvalDir(work).samples, Sample) if row.correct}
    # A problem without a checkable answer (a proof) cannot be selected by failure: it passes through.
    kept = [p for p in problems if p.id not in solved]
    write_jsonl(out, kept)
    summary = {"candidates": len(problems), "selected": len(kept), "unverifiable": len(problems) - len(checkable),
               "n": cfg.n, "out": str(out)}
    if on_event:
        on_event("select", "selected", summary)
    return summary


def _write_if_changed(path: Path, text: str) -> bool:
    # A rerun of a finished run must leave every file as it was.
    changed = not path.exists() or path.read_text(encoding="utf-8") != text
    if changed:
        atomic_write_text(path, text)
    return changed


def _expand_done(cfg: ExpandConfig, problems: list[Problem]) -> bool:
    from .expand import wanted_keys

    return set(wanted_keys(cfg, problems[: cfg.limit])) <= read_done_keys(cfg.out)


class _Stages:
    """Runs a run's stages in order: each one skipped when done, logged, in-process or launched."""

    def __init__(self, cfg: RunConfig, root: RunDir, on_event: OnEvent | None):
        self.cfg, self.root, self.log = cfg, root, RunLog(root.events)
        self.on_event = on_event or (lambda stage, event, fields: None)

    def event(self, stage: str, event: str, **fields: Any) -> None:
        self.log(stage, event, **fields)
        self.on_event(stage, event, fields)

    def __call__(self, name: str, done: bool, config: BaseModel | None, in_process: Callable) -> None:
        """Stage `name` ('expand:traces.jsonl', 'train:dail', ...): skipped when `done`, else run and timed."""
        if done:
            self.event(name, "skip")
            return
        t0 = time.time()
        self.event(name, "start")
        if config is None:
            in_process()
        elif self.cfg.launcher == "none":
            result = in_process(config)
            if result is not None:  # for the caller to draw; too big for the log
                self.on_event(name, "result", {"value": result})
        else:
            _launch(self.cfg, self.root.stage_config(name), name.split(":")[0], config)
        self.event(name, "end", seconds=round(time.time() - t0, 2))


# Run settings that change no row of any stage: where and how it runs, batch sizes of the sampling stages
# (the engine's rows do not depend on the batch), and which methods and splits exist (each has its own files).
# The RL methods' settings (rl, hints, rlvr_data, nurl_from) change only those methods' own outputs, so
# adding them to a finished run is allowed; each RL stage's saved config guards its outputs (`_rl_all`).
RUN_IGNORED = ("name", "out_dir", "launcher", "num_processes", "device", "methods", "eval_data", "report_to",
               "expand.batch_size", "eval.batch_size", "data_digests",  # data_digests: compared per file below
               "rl", "hints", "rlvr_data", "rlvr_steps", "nurl_from")


def _remove_run(root: RunDir) -> None:
    """`--fresh`: delete a run directory, refusing a directory that is not a run's (no config.toml)."""
    if not root.root.exists():
        return
    if not root.config.is_file():
        raise ConfigError(f"{root.root}: not a run directory (no {root.config.name}); --fresh deletes only a run's "
                          "own directory")
    shutil.rmtree(root.root)


def run(cfg: RunConfig, on_event: OnEvent | None = None, progress: Progress | None = None, *,
        fresh: bool = False) -> dict:
    """Run (or resume) a whole experiment; returns the run directory, the report's path and the results table.

    `on_event(stage, event, fields)` hears every event (the log gets all but 'result', a stage's
    returned summary); `progress(done, total, **fields)` is handed to the stages run in this process.
    One `dail run` per run directory at a time (`OutputInUse` otherwise). A run directory made with
    other settings (`RUN_IGNORED` aside) is refused with ConfigError naming each, unless `fresh`,
    which deletes it first.
    """
    check_inputs(cfg)  # before the lock: a run on a device this machine lacks leaves nothing behind
    root = run_dir(cfg)
    with output_lock(root.root):
        if fresh:
            _remove_run(root)
        return _run(cfg, root, on_event, progress)


def _check_data(cfg: RunConfig, root: RunDir, fresh: str) -> RunConfig:
    """`cfg` with the digest of every data file it names; a file the run used before must not have changed."""
    digests = {spec: data_digest(spec) for spec in dict.fromkeys([cfg.train_data, *(s.data for s in cfg.eval_splits())])}
    if root.config.exists():
        import tomllib

        before = tomllib.loads(root.config.read_text(encoding="utf-8")).get("data_digests", {})
        changed = [f"{spec}: {before[spec]} -> {d}" for spec, d in digests.items() if before.get(spec, d) != d]
        if changed:
            raise ConfigError(f"{root.root}: data changed since the run used it ({'; '.join(changed)}); "
                              f"its stages would mix the two. {fresh}")
    return cfg.model_copy(update={"data_digests": digests})


def _run(cfg: RunConfig, root: RunDir, on_event: OnEvent | None, progress: Progress | None) -> dict:
    root.root.mkdir(parents=True, exist_ok=True)
    fresh = "rerun with --fresh to delete the run directory first, or use another --name"
    check_same_settings(root.config, cfg, ignore=RUN_IGNORED, output=root.root, fresh=fresh)
    cfg = _check_data(cfg, root, fresh)
    require_installed(cfg.report_to)  # before hours of sampling, not at the first log
    _write_if_changed(root.config, to_toml(cfg))
    stage = _Stages(cfg, root, on_event)
    for spec in cfg.data_digests:  # the Hub commit each set was read at, in the run's event log
        if revision := data_revision(spec):
            stage.event("data", "revision", spec=spec, revision=revision)
    started = time.time()
    train_data = _select(cfg, root, stage, on_event)
    problems = _training_problems(cfg, root, stage, train_data)
    _expand_all(cfg, root, stage, problems, progress)
    _train_all(cfg, root, stage, progress)
    _rl_all(cfg, root, stage, progress)
    _eval_all(cfg, root, stage, progress)
    _report(root, stage)
    table, used = results_table(root, cfg), compute(root, cfg)
    seconds = round(time.time() - started, 1)
    stage.event("run", "done", seconds=seconds)
    text = json.dumps({"methods": table, "compute": used}, indent=2) + "\n"
    if not root.metrics.exists() or root.metrics.read_text(encoding="utf-8") != text:
        # Logged before metrics.json is written: a tracker that fails leaves the table new, so a rerun logs it.
        log_results(cfg.report_to, root.trackers, table, cfg)
        _write_if_changed(root.metrics, text)
    return {"run_dir": str(root.root), "report": str(root.report), "table": table, "compute": used, "seconds": seconds,
            "four_traces": four_traces(root)}


def _common(cfg: RunConfig) -> dict[str, Any]:
    """The settings every stage of a run shares."""
    return {"model": cfg.model, "seed": cfg.seed, "device": cfg.device, "dtype": cfg.dtype,
            "prompts": cfg.prompts.model_dump()}


def _select(cfg: RunConfig, root: RunDir, stage: _Stages, on_event: OnEvent | None) -> str:
    """Stage 1 (optional): keep the training problems the base model cannot solve; the training data's spec."""
    if not cfg.select:
        return cfg.train_data
    eval_keys = section_values(cfg.eval)
    sel = SelectConfig(**_common(cfg), data=cfg.train_data, out=str(root.selected), n=cfg.select_n,
                       limit=cfg.select_limit, **{k: eval_keys[k] for k in ("sampling", "batch_size") if k in eval_keys})
    stage("select", root.selected.exists(), sel, lambda c: select(c, on_event))
    if root.selected.stat().st_size == 0:
        raise DataError(root.selected, None, None, f"select kept no problem: the base model solved every "
                        f"candidate at least once in {cfg.select_n} samples; nothing to expand or train on")
    return str(root.selected)


def _training_problems(cfg: RunConfig, root: RunDir, stage: _Stages, train_data: str) -> list[Problem]:
    """Stage 2: the training problems with the negative reference's waypoints, and the controls' solution files."""
    def make_waypoints() -> None:
        from .waypoints import write_waypoints

        # Every method trains on the same problems: the ones expansion uses.
        write_waypoints(_problems(train_data)[: cfg.expand.limit], root.waypoints, mode=cfg.waypoints_mode)

    stage("waypoints", root.waypoints.exists(), None, make_waypoints)
    problems = read_problems(root.waypoints)
    for method in (m for m in SOLUTION_TRAINED if m in cfg.methods):
        stage(f"solutions:{method}", root.solutions(method).exists(), None,
              lambda m=method: write_jsonl(root.solutions(m), _control_rows(m, problems, root, cfg)))
    return problems


def _expand_all(cfg: RunConfig, root: RunDir, stage: _Stages, problems: list[Problem],
                progress: Progress | None) -> None:
    """Stage 3: mixed rollouts (dail, dail-nll), privileged-only ones (psd-nll, star), the negative reference's."""
    from .expand import run as expand

    for traces, ex in _expansions(cfg, root).items():
        stage(f"expand:{traces}", _expand_done(ex, problems), ex, lambda c: expand(c, progress=progress))


def _train_all(cfg: RunConfig, root: RunDir, stage: _Stages, progress: Progress | None) -> None:
    """Stage 4: one adapter per trained method, each for the same optimizer steps."""
    from .train import run as train

    for method in (m for m in cfg.methods if m in TRAINED):
        traces, objective = TRAINED[method]
        out = root.adapter(method)
        problems = root.solutions(method) if method in SOLUTION_TRAINED else root.waypoints
        tr = TrainConfig(**{**section_values(cfg.train), **_common(cfg), "resume": True}, objective=objective,
                         problems=str(problems), traces=str(root.traces(traces)) if traces else None, out=str(out),
                         report_to=cfg.report_to)
        stage(f"train:{method}", AdapterDir(out).done.exists(), tr, lambda c: train(c, progress=progress))


def _rl_all(cfg: RunConfig, root: RunDir, stage: _Stages, progress: Progress | None) -> None:
    """Stage 4b: the RL methods, each for the same rollout batches; nurl continues grpo's run with hints."""
    from .rl import run as rl
    from .rl.hints import make_hints

    switch = cfg.nurl_switch()
    runs = {"grpo": dict(data=str(root.waypoints), checkpoint_at=[switch] if "nurl" in cfg.methods else []),
            "rlvr": dict(data=cfg.rlvr_data, **({"steps": cfg.rlvr_steps} if cfg.rlvr_steps else {})),
            "nurl": dict(data=str(root.waypoints), adapter=str(AdapterDir(root.adapter("grpo")).checkpoint(switch)),
                         first_step=switch, steps=cfg.rl_steps() - switch, hints=str(root.hints))}
    for method in (m for m in RL_TRAINED if m in cfg.methods):
        if method == "nurl":
            hc = _hint_config(cfg, root)
            _same_as_before(config_path(root.hints), hc, root.hints)
            stage("hints", _hints_done(hc), hc, lambda c: make_hints(c, progress=progress))
        out = root.adapter(method)
        rc = RLConfig(**{**section_values(cfg.rl), **_common(cfg), "resume": True, **runs[method]}, out=str(out),
                      report_to=cfg.report_to)
        _same_as_before(AdapterDir(out).config, rc, out)
        stage(f"rl:{method}", AdapterDir(out).done.exists(), rc, lambda c: rl(c, progress=progress))


def _hint_config(cfg: RunConfig, root: RunDir) -> HintConfig:
    """The hints stage of a run with `nurl`: hints for the run's own (selected) training problems."""
    return HintConfig(**{**section_values(cfg.hints), **_common(cfg)}, data=str(root.waypoints), out=str(root.hints))


def _same_as_before(saved: Path, config: BaseModel, output: Path) -> None:
    """Refuse settings other than those an RL stage's existing output was made with (the run ignores them)."""
    from .rl.fit import RESUME_MAY_DIFFER

    check_same_settings(saved, config, ignore=(*RESUME_MAY_DIFFER, "data_digest", "batch_size"), output=output,
                        fresh="rerun with --fresh, or delete that output to make it again with these settings")


def _hints_done(cfg: HintConfig) -> bool:
    """Whether every (problem, attempt) of the hints stage is written."""
    problems = [p for p in _problems(cfg.data)[: cfg.limit] if p.verifiable]
    return {(p.id, a) for p in problems for a in range(cfg.attempts)} <= read_done_keys(cfg.out)


def _eval_all(cfg: RunConfig, root: RunDir, stage: _Stages, progress: Progress | None) -> None:
    """Stage 5: every method on every split that evaluates it."""
    from .evaluate import run as evaluate

    for method in cfg.methods:
        adapter = str(root.adapter(method)) if method in TRAINED or method in RL_TRAINED else None
        for split in (s for s in cfg.eval_splits() if s.evaluates(method)):
            out = root.eval_dir(method, split.label)
            ev = EvalConfig(**{**section_values(cfg.eval), **split.overrides(), **_common(cfg)}, adapter=adapter,
                            data=split.data, out=str(out), role=EVAL_ROLE.get(method, Role.LEARNER))
            stage(f"eval:{method}/{split.label}", EvalDir(out).metrics.exists(), ev,
                  lambda c: evaluate(c, progress=progress))


def _report(root: RunDir, stage: _Stages) -> None:
    """Stage 6: the report (cheap; rewritten whenever an input is newer than it)."""
    from .report import run as report

    metrics = root.metrics_files()
    stale = not root.report.exists() or any(m.stat().st_mtime > root.report.stat().st_mtime for m in metrics)
    stage("report", not stale, None, lambda: report([str(root.root)], str(root.root)))


def _control_rows(method: str, problems: list[Problem], root: RunDir, cfg: RunConfig) -> list[Problem]:
    """The problems file of a solution-trained control: full solutions (oracle-sft) or own correct samples (rft)."""
    if method == "oracle-sft":
        missing = next((p for p in problems if not p.full_solution), None)
        if missing is not None:
            raise DataError(cfg.train_data, None, "full_solution", f"problem {missing.id!r} has no full_solution: "
                                                                   "oracle-sft trains on it")
        return [p.model_copy(update={"solution": p.full_solution}) for p in problems]
    from .data import Sample, read_jsonl

    by_id = {p.id: p for p in _problems(cfg.train_data)}
    rows, seen, per_problem = [], set(), Counter()
    for s in read_jsonl(root.selection_rows, Sample):
        if s.correct and not s.forced and (s.problem_id, s.text) not in seen and per_problem[s.problem_id] < cfg.rft_per_problem:
            seen.add((s.problem_id, s.text))
            per_problem[s.problem_id] += 1
            rows.append(by_id[s.problem_id].model_copy(update={"id": f"{s.problem_id}#{s.sample}", "solution": s.text}))
    if not rows:
        raise DataError(root.selection_rows, None, "correct",
                        "rft: the base model solved no training problem in select's samples; nothing to train on")
    return rows
