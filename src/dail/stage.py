"""The one shape of a stage that samples: problems in, one row per (problem, sample) out.

Expansion (`dail.expand`) and evaluation (`dail.evaluate`) are both this: a list of wanted
(problem, sample) keys, a model loaded only when some are left, prompts rendered and checked
against the model's context, then rows written through `dail.distributed.ShardedJsonl` (sharded
over ranks, locked against a second writer, resumable, in canonical order, with progress). The
order of the preamble lives here once:

1. `fresh` deletes the output and its sidecars; a second writer is refused before a model loads;
2. a resume must agree with the saved config on the settings that make a row (`row_keys`), and rows
   to add to must have a provenance record (`dail.provenance.require`), both before a model loads;
3. with work left: load the model, record what made the output (`dail.provenance`) and refuse to
   add rows made by another model, render each pending problem's prompts once, drop the problems
   whose prompt does not fit the context (never sampled, so never a row);
4. open the sink; rank 0 saves the config and the provenance; the stage's `sample` fills the sink.

A stage says what differs -- its prompts, its token budget, how a row is made -- in a `Sampled`.
Before any of it every stage (these two, `dail.train`, `dail.pipeline`) calls `check_inputs`: the
checks the CLI makes before a command's work live there, so a caller of `run(cfg)` gets them too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from . import distributed as dist
from .config import check_same_settings, require_device, save_config
from .data import check_output

__all__ = ["Sampled", "Loaded", "check_inputs", "run_sampled"]


def check_inputs(cfg: BaseModel, kind: Literal["file", "dir"] | None = None) -> None:
    """Refuse, before any work, a config whose device this machine lacks or whose `out` is no writable `kind`."""
    if hasattr(cfg, "device"):
        require_device(cfg.device)
    if kind is not None:
        check_output(cfg.out, kind)


@dataclass
class Loaded:
    """The model a stage samples with, its tokenizer, and each pending problem's rendered prompt(s)."""

    model: Any
    tokenizer: Any
    prompts: dict[str, Any]


@dataclass
class Sampled:
    """A sampling stage's declaration: where its rows go and what differs from the other stages."""

    cfg: BaseModel                     # the resolved config, saved beside the output
    out: Path                          # the rows file (JSONL)
    config: Path                       # where the config is saved
    provenance: Path                   # where what made the output is recorded
    row_keys: tuple[str, ...]          # settings a resume must share with the saved config
    fresh_hint: str                    # how to start over, for a refused resume
    wanted: list[tuple[str, int]]      # every (problem_id, sample), in canonical order
    what: str                          # what the rows are, for messages ("traces", "samples")
    load: Callable[[], tuple[Any, Any]]                  # -> (model, tokenizer)
    prompts: Callable[[Any, list[str]], dict[str, Any]]  # (tokenizer, pending ids) -> id -> prompt(s)
    new_tokens: Callable[[Any], int]                     # tokenizer -> tokens a row may add to its prompt
    sample: Callable[[dist.ShardedJsonl, Loaded], None]  # fill the sink's todo
    removes: tuple[Path, ...] = ()     # what `fresh` deletes besides the output, config and provenance
    in_order: Any = None               # ShardedJsonl's in_order (first-correct keeping)
    shown: Path | None = None          # the output as the user named it, for messages (default: out)
    check: Callable[[list[str]], None] | None = None  # given the too-long ids before any row is written
    too_long: list[str] = field(default_factory=list)  # filled by run_sampled: ids never sampled


def run_sampled(stage: Sampled, progress: dist.Progress | None = None, *, fresh: bool = False) -> Sampled:
    """Run one sampling stage in the order above; returns `stage` with `wanted` and `too_long` as sampled."""
    from . import provenance
    from .models import context_length, too_long_ids

    out, shown = stage.out, stage.shown or stage.out
    if fresh:
        dist.remove_output(out, stage.config, stage.provenance, *stage.removes)
    dist.check_free(out)  # a second writer stops here, before a model loads (ShardedJsonl holds the lock)
    if dist.has_rows(out):  # a resume: the rows there must have been made with these settings
        check_same_settings(stage.config, stage.cfg, stage.row_keys, output=shown, fresh=stage.fresh_hint)
    dist.barrier()  # every rank has checked the old config before rank 0 replaces it
    done = dist.done_keys(out)
    pending = list(dict.fromkeys(pid for pid, s in stage.wanted if (pid, s) not in done))  # each problem once
    earlier = None  # what made the rows of an earlier run, when this one adds to them
    if pending and done:
        earlier = provenance.require(stage.provenance, shown, stage.what, stage.fresh_hint)
    loaded, made_by = None, None
    if pending:  # nothing loads when the output is complete
        model, tokenizer = stage.load()
        made_by = provenance.record(stage.cfg.model, model, tokenizer, stage.cfg.prompts)
        if earlier is not None:  # only the same model and tokenizer may add to those rows
            provenance.check_same_model(shown, earlier, made_by, stage.what, stage.fresh_hint)
        loaded = Loaded(model, tokenizer, stage.prompts(tokenizer, pending))
        stage.too_long = too_long_ids(loaded.prompts, stage.new_tokens(tokenizer), context_length(model, tokenizer))
        stage.wanted = [k for k in stage.wanted if k[0] not in set(stage.too_long)]
        if stage.check is not None:
            stage.check(stage.too_long)
    with dist.ShardedJsonl(out, stage.wanted, progress, in_order=stage.in_order) as sink:
        if dist.is_main():  # once the output is this process's: a refused second writer leaves it as it was
            save_config(stage.cfg, stage.config)
            if made_by is not None:
                provenance.write(stage.provenance, made_by)
        if sink.todo:
            stage.sample(sink, loaded)
    return stage
