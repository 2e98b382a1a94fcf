"""`dail testbed build`: the test-bed's model and splits, made from a seed on this machine.

What it makes (all deterministic given the `BuildConfig`, on one machine and thread count):

* a tokenizer trained with `tokenizers` (byte-level BPE; digits and words are pieces of their own,
  so `37` never merges with the `=` before it) with a chat template, so prompts render through the
  same code path as any instruction-tuned model;
* a Llama-architecture model trained from scratch with transformers on a corpus drawn afresh every
  step: *learner* documents (the problem, then every step written out) for short chains only, and
  *reference* documents (the problem with the expert solution, or with the hint, or with the final
  answer, as the privileged / negative / rationalize prompts render them, then every step written
  out) for chains of any length. So the model can solve easy problems alone and read a reference
  on hard ones, as an instruction-tuned LLM can: a privileged student exists;
* JSONL splits in the problem schema: `train` (hard, with expert solutions), `val` and `test`
  (hard, disjoint, same difficulty) and `easy` (short chains, the RL-on-easier-data stand-in);
* `build.json`: the config, the package version, the loss curve and every file's sha256.

The model directory is an ordinary Hugging Face directory: every stage loads it by its path, and
the shipped copy by the alias `testbed`.

This module runs the whole build and records it; the parts live beside it: the settings in
`testbed.config`, the documents and tokenizer in `testbed.corpus`, the splits in `testbed.splits`,
the training loop in `testbed.pretrain`. Their public names are importable from here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from dail.config import PromptConfig
from dail.data import atomic_write_text, write_jsonl
from dail.testbed.config import BuildConfig, Phase, phases
from dail.testbed.corpus import CHAT_TEMPLATE, build_tokenizer, document_text, draw_document, style
from dail.testbed.pretrain import new_model, pretrain
from dail.testbed.splits import SPLIT_NAMES, make_splits, split_tables
from dail.testbed.task import FUNCTIONS

__all__ = ["BuildConfig", "SPLIT_NAMES", "build", "build_tokenizer", "draw_document", "document_text", "make_splits",
           "new_model", "phases", "Phase", "split_tables", "style", "environment",
           "CHAT_TEMPLATE", "file_hashes"]

LOG = "pretrain_log.jsonl"  # {step, loss, lr, tokens, elapsed_s} per step


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (relative names, sorted), `build.json` and the timed log excluded."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in ("build.json", LOG):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def environment(threads: int) -> dict[str, str | int]:
    """What a reader needs to judge whether another machine would write the same weights: versions, CPU, commit."""
    import platform
    import subprocess
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True,
                                  timeout=10).stdout.strip()

        commit = (git("rev-parse", "HEAD") or "unknown") + ("+dirty" if git("status", "--porcelain", "--", ".") else "")
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"python": platform.python_version(), **{name: version(name) for name in ("torch", "transformers", "tokenizers")},
            "cpu": cpu, "threads": threads, "git_commit": commit}


def build(cfg: BuildConfig, out: str | os.PathLike, *, on_step: Callable[[dict], None] | None = None) -> Path:
    """Write the test-bed (model/, data/*.jsonl, build.json) to `out`; return `out`.

    Work goes to `.OUT.partial` beside `out` (a killed build resumes there when rerun with the same
    config) and is renamed to `out` when complete, so `out` is never half written.
    """
    from dail import __version__

    out = Path(out)
    work = out.parent / f".{out.name}.partial"
    settings = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    if work.exists() and (not (work / "settings.json").exists() or (work / "settings.json").read_text() != settings):
        shutil.rmtree(work)  # a build with other settings: nothing of it can be reused
    work.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(settings)
    prompts = PromptConfig()
    tokenizer = build_tokenizer(cfg, prompts)
    model, records = pretrain(cfg, tokenizer, prompts, work, on_step)
    final = work / "final"
    if final.exists():
        shutil.rmtree(final)
    for name, rows in make_splits(cfg).items():
        write_jsonl(final / "data" / f"{name}.jsonl", rows)
    model.save_pretrained(final / "model")
    tokenizer.save_pretrained(final / "model")
    info = {"config": cfg.model_dump(mode="json"), "dail_version": __version__,
            "environment": environment(cfg.threads),  # not hashed: the weights match only on these kernels and threads
            "tables": {f: list(t) for f, t in zip(FUNCTIONS, split_tables(cfg))},
            "parameters": sum(p.numel() for p in model.parameters()),
            "final_loss": records[-1]["loss"],  # no wall time: the files are identical build to build
            "loss_curve": [r["loss"] for r in records[:: max(1, len(records) // 200)]],
            "files": file_hashes(final)}
    (final / "build.json").write_text(json.dumps(info, indent=1) + "\n")
    # the loss curve to plot; holds wall times, so not hashed
    atomic_write_text(final / LOG, "".join(json.dumps(r) + "\n" for r in records))
    if out.exists():
        shutil.rmtree(out)
    os.replace(final, out)
    shutil.rmtree(work)
    return out
