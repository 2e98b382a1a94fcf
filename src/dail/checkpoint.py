"""The training output directory: checkpoints, the final adapter, and what resuming needs of them.

    OUT/adapter_config.json  adapter_model.safetensors   the final adapter (peft), config written last
        log.jsonl                                        one line per logged step
        config.toml                                      the resolved TrainConfig
        checkpoints/step-N/                              adapter (peft), optimizer.pt, scheduler.pt, state.json

Every save is atomic: a checkpoint is written in a temp dir (`checkpoints/.step-N.*`) renamed into
place, the final adapter file by file with `adapter_config.json` -- the "done" mark -- last; a killed
save leaves only a temp dir, removed when the run starts again. `state.json` holds the step, epoch,
position in the epoch, tokens, elapsed seconds and the training plan the checkpoint belongs to; a
checkpoint of another plan is refused on resume. On resume `log.jsonl` is cut back to the checkpoint's
step, so the lines of redone steps are rewritten, not duplicated.

Deliberately not here: when to save (the loop, `train`), and the random state: the data order is a
function of (seed, epoch) and dropout is reseeded at every step, so nothing else needs restoring.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError
from .data import atomic_write_text
from .rundir import AdapterDir, CheckpointDir

__all__ = ["checkpoints", "latest", "load", "prepare_out", "remove_run", "reset_to", "save", "save_adapter",
           "truncate_log"]

_STEP_DIR = re.compile(r"step-(\d+)")


def checkpoints(out: Path) -> dict[int, Path]:
    """The checkpoints under `out`, by step."""
    root = AdapterDir(out).checkpoints
    if not root.is_dir():
        return {}
    return {int(m.group(1)): p for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))}


def latest(out: Path) -> Path | None:
    """The checkpoint of the highest step under `out`, if any."""
    ckpts = checkpoints(out)
    return ckpts[max(ckpts)] if ckpts else None


def prepare_out(out: Path, resume: bool) -> Path | None:
    """Check `out` against `resume` (a run there is refused unless resumed); the checkpoint to resume from."""
    if not resume:
        held = [p.name for p in (AdapterDir(out).done, AdapterDir(out).log) if p.exists()]
        held += ["checkpoints/"] if checkpoints(out) else []
        if held:
            raise ConfigError(f"out: {out} already holds a training run ({', '.join(held)}); "
                              "resume it (--resume) or choose another directory")
    return latest(out)


def reset_to(out: Path, step: int) -> None:
    """Bring `out` back to `step` before a run goes on from it (main process): drop killed saves, cut the log."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in AdapterDir(out).checkpoints.glob(".step-*"):  # temp dirs of a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    truncate_log(AdapterDir(out).log, step)


def save(out: Path, step: int, state: dict[str, Any], *, model, optimizer, scheduler) -> None:
    """`out/checkpoints/step-N/`: written in a temp dir, renamed into place (main process only)."""
    root = AdapterDir(out).checkpoints
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step}."))
    try:
        model.save_pretrained(tmp)  # adapter_config.json + adapter_model.safetensors
        inside = CheckpointDir(tmp)
        torch.save(optimizer.state_dict(), inside.optimizer)
        torch.save(scheduler.state_dict(), inside.scheduler)
        inside.state.write_text(json.dumps(state, indent=1))
        final = AdapterDir(out).checkpoint(step)
        if final.exists():  # written before by a run that was resumed from an earlier step
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(path: Path, plan: dict[str, Any], *, model, optimizer, scheduler, device) -> dict[str, Any]:
    """Restore adapter, optimizer and schedule from a checkpoint of the same plan; its state.json."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    inside = CheckpointDir(path)
    state = json.loads(inside.state.read_text())
    differ = {k: (state["plan"].get(k), v) for k, v in plan.items() if state["plan"].get(k) != v}
    if differ:
        what = ", ".join(f"{k} {a!r} there, {b!r} now" for k, (a, b) in differ.items())
        raise ConfigError(f"cannot resume from {path}: it belongs to another training plan ({what})")
    weights = load_file(inside.weights, device=str(device))
    result = set_peft_model_state_dict(model, weights)
    if result.unexpected_keys:
        raise ConfigError(f"cannot resume from {path}: unexpected adapter tensors {result.unexpected_keys[:3]}")
    optimizer.load_state_dict(torch.load(inside.optimizer, weights_only=True))
    scheduler.load_state_dict(torch.load(inside.scheduler, weights_only=True))
    return state


def save_adapter(model, out: Path) -> None:
    """The final adapter in `out/`, each file renamed into place, adapter_config.json (the 'done' mark) last."""
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".adapter."))
    try:
        model.save_pretrained(tmp)
        done = AdapterDir(out).done.name
        for f in sorted(tmp.iterdir(), key=lambda p: p.name == done):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def truncate_log(path: Path, last_step: int) -> None:
    """Keep the log lines of steps up to `last_step`: later ones belong to steps about to be redone."""
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.endswith("\n") and json.loads(line).get("step", 0) <= last_step]
    atomic_write_text(path, "".join(keep))


def remove_run(out: Path) -> None:
    """Delete a training run's own files in `out`, nothing else (rank 0, under its lock; every rank waits)."""
    from . import distributed as dist

    adapter = AdapterDir(out)
    # Only where a training run left its marks (config.toml alone is too common a name to tell), and only
    # the run's named files: anything else the user keeps in `out` stays.
    if dist.is_main() and any(p.exists() for p in (adapter.done, adapter.log, adapter.checkpoints, adapter.rollouts)):
        with dist.output_lock(out):
            for path in adapter.own_files():
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    dist.barrier()
