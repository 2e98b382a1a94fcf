"""Problem sets from the Hugging Face Hub, named by a short name or `hub:owner/name[:config][@split]`.

An import fetches one revision of a dataset repository into the hub cache (`huggingface_hub`, so
`HF_TOKEN`, `HF_HUB_CACHE` and the offline switches behave as everywhere else), reads its files
with the `datasets` library and maps every row to a `dail.data.Problem`. The repository's commit
travels with the problems (`Imported.revision`) into the run's event log; the digest a resumed run
checks is of the rows themselves, so a commit that changes them is refused and one that leaves them
alone (a dataset card) is not.

The known sets (`KNOWN`) map as their authors' pipeline reads them: the answer of a training
solution is its last `\\boxed{}` (nested braces kept whole, where the authors' regex stops at the
first `}`), proofs carry no answer (never graded, kept by expansion without an answer filter),
the verl-style evaluation copies give the user turn of `prompt` and `reward_model.ground_truth`,
and GPQA's four options are shuffled by a seed stored in each row so every method sees one order.
A set the project does not know maps by a query on its spec:
`hub:owner/name@test?problem=question&answer=final_answer&type=integer`.

This module reads; it never writes into a run directory (`dail data import --out` writes a file).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from dail.data import DataError, Problem
from dail.grading import KINDS, last_boxed
from dail.seeding import rng

__all__ = ["KNOWN", "HubSet", "Imported", "import_set", "is_hub_spec", "parse_spec"]

PREFIX = "hub:"
# The authors keep training problems from contests of the evaluation years out of training.
HELD_OUT_YEARS = ("2024", "2025")
_GITHUB_RAW = "https://raw.githubusercontent.com"
# The instruction the verl copies append to every problem; our prompts carry their own.
_VERL_INSTRUCTION = re.compile(r"\s*Let's think step by step and output the final answer within \\boxed\{\}\.?\s*$")


@dataclass(frozen=True)
class HubSet:
    """One dataset repository and how its rows become problems."""

    repo: str
    layout: str  # "fields" (named columns), "verl" (chat prompt + reward_model) or "gpqa"
    config: str | None = None
    split: str | None = None
    files: str | None = None  # a glob inside the repository; None: what `datasets` finds there
    fields: dict[str, str] = field(default_factory=dict)
    answer_type: str | None = None
    proof: bool = False
    drop_years: bool = False
    required: tuple[str, ...] = ()  # columns named in the spec's query: a misspelt one is an error, not None
    gated: bool = False
    url: str | None = None  # a file outside the Hub (read by `datasets` from the URL; `repo` names its home)
    size: str = ""
    purpose: str = ""


def _e1(repo: str, proof: bool, purpose: str) -> HubSet:
    return HubSet(repo, "fields", split="train", proof=proof, drop_years=True, answer_type=None if proof else "math",
                  fields={"id": "problem_id", "problem": "problem", "solution": "solution",
                          **({} if proof else {"answer": "boxed:solution"})}, purpose=purpose)


KNOWN: dict[str, HubSet] = {
    "e1-verifiable": _e1("emendes3/e1-verifiable", False, "training: expert solutions with a boxed answer"),
    "e1-proof": _e1("emendes3/e1-proof", True, "training: expert proofs (no answer; never graded)"),
    "aime-2024": HubSet("emendes3/aime_2024", "verl", answer_type="integer", size="30",
                        purpose="evaluation (the authors' copy)"),
    "aime-2025": HubSet("emendes3/aime_2025", "verl", answer_type="integer", size="30",
                        purpose="evaluation (the authors' copy)"),
    "beyond-aime": HubSet("emendes3/beyond_aime", "verl", answer_type="integer", size="100",
                          purpose="evaluation (the authors' copy)"),
    "imo-answerbench": HubSet("emendes3/imo_answer", "verl", answer_type="math", size="400",
                              purpose="evaluation (the authors' copy of IMO-AnswerBench)"),
    "aime-2024-h4": HubSet("HuggingFaceH4/aime_2024", "fields", split="train", answer_type="integer", size="30",
                           fields={"id": "id", "problem": "problem", "answer": "answer", "solution": "solution"},
                           purpose="evaluation (upstream original)"),
    "aime-2025-matharena": HubSet("MathArena/aime_2025", "fields", split="train", answer_type="integer", size="30",
                                  fields={"id": "problem_idx", "problem": "problem", "answer": "answer"},
                                  purpose="evaluation (upstream original)"),
    "beyond-aime-seed": HubSet("ByteDance-Seed/BeyondAIME", "fields", split="test", answer_type="integer", size="100",
                               fields={"problem": "problem", "answer": "answer"}, purpose="evaluation (upstream original)"),
    "imo-answerbench-gdm": HubSet("google-deepmind/superhuman", "fields", answer_type="math", size="400",
                                  url=f"{_GITHUB_RAW}/google-deepmind/superhuman/main/imobench/answerbench.csv",
                                  fields={"id": "Problem ID", "problem": "Problem", "answer": "Short Answer"},
                                  purpose="evaluation (upstream original: a CSV on GitHub, not a Hub dataset)"),
    "gpqa-diamond": HubSet("Idavidrein/gpqa", "gpqa", files="gpqa_diamond.csv", answer_type="choice", gated=True,
                           size="198", purpose="out of domain (multiple choice, gated)"),
}
FIELD_KEYS = ("id", "problem", "solution", "answer", "type")


@dataclass(frozen=True)
class Imported:
    """The problems of one import, the commit they came from and what the mapping set aside."""

    problems: list[Problem]
    repo: str
    revision: str
    dropped: dict[str, int]


def is_hub_spec(spec: str | os.PathLike) -> bool:
    """Whether a data argument names a hub set (a known short name or `hub:...`) rather than a file."""
    text = str(spec)
    return text.startswith(PREFIX) or text.split("?", 1)[0] in KNOWN


def parse_spec(spec: str) -> HubSet:
    """The set a spec names: a known short name, or `hub:owner/name[:config][@split][?field=column&...]`."""
    head, _, query = spec.partition("?")
    overrides = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(overrides) - set(FIELD_KEYS))
    if unknown:
        raise DataError(spec, None, unknown[0], f"unknown mapping key; expected some of {', '.join(FIELD_KEYS)}")
    if overrides.get("type") not in (None, *KINDS):
        raise DataError(spec, None, "type", f"{overrides['type']!r} is not an answer type ({', '.join(KINDS)})")
    if head in KNOWN:
        base = KNOWN[head]
    elif head.startswith(PREFIX):
        m = re.fullmatch(r"([\w.-]+/[\w.-]+)(?::([\w.-]+))?(?:@([\w.-]+))?", head[len(PREFIX):])
        if not m:
            raise DataError(spec, None, None, "not a hub spec; expected hub:owner/name[:config][@split][?field=column&...]")
        base = HubSet(m[1], "fields", config=m[2], split=m[3], fields={k: k for k in ("id", "problem", "solution", "answer")})
    else:
        raise DataError(spec, None, None, f"not a known set ({', '.join(KNOWN)}) nor hub:owner/name")
    if not overrides:
        return base
    fields = {**base.fields, **{k: v for k, v in overrides.items() if k != "type"}}
    named = tuple(v for k, v in overrides.items() if k != "type")
    return replace(base, fields=fields, answer_type=overrides.get("type", base.answer_type), required=named)


@functools.lru_cache(maxsize=32)
def import_set(spec: str, *, seed: int = 0) -> Imported:
    """Fetch (or find in the cache) the revision of the set `spec` names and map its rows to problems.

    Once per process and spec: a stage reads the problems and digests them, and both must see one
    revision even if the Hub moves in between (`import_set.cache_clear()` forgets).
    """
    hub = parse_spec(spec)
    if hub.url:
        rows, revision = _read_url(spec, hub)
    else:
        snapshot = _snapshot(spec, hub)
        rows, revision = _read_rows(spec, hub, snapshot), snapshot.name
    problems, dropped = _map_rows(spec, hub, rows, seed)
    if not problems:
        raise DataError(spec, None, None, f"no problem left after mapping {len(rows)} rows ({dropped or 'none dropped'})")
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise DataError(spec, p.meta["index"] + 1, "id", f"duplicate id {p.id!r}; name a unique column with ?id=")
        seen.add(p.id)
    return Imported(problems, hub.repo, revision, dropped)


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _snapshot(spec: str, hub: HubSet) -> Path:
    """The local folder of the repository's revision (its name is the commit hash)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = [hub.files, "README.md"] if hub.files else None
    try:
        return Path(snapshot_download(hub.repo, repo_type="dataset", allow_patterns=patterns,
                                      local_files_only=_offline()))
    except GatedRepoError:
        raise DataError(spec, None, None, f"{hub.repo} is gated: accept its terms on huggingface.co, then run "
                        "`huggingface-cli login` or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise DataError(spec, None, None, f"{hub.repo}: no such dataset on the Hub (or it is private: "
                        "`huggingface-cli login` or HF_TOKEN)") from None
    except LocalEntryNotFoundError:
        raise DataError(spec, None, None, f"{hub.repo} is not in the hub cache, and the Hub is unreachable or "
                        "switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); on a machine with network, "
                        f"`dail data import {spec}` fills the cache") from None
    except OSError as e:  # connection errors of every kind
        raise DataError(spec, None, None, f"{hub.repo}: could not reach the Hub ({type(e).__name__}: {e})") from None


def _read_url(spec: str, hub: HubSet) -> tuple[list[dict[str, Any]], str]:
    """The rows of a file outside the Hub (through `datasets`' download cache), and a digest of them as its revision."""
    import hashlib
    import json

    import datasets

    datasets.disable_progress_bars()
    try:
        rows = list(datasets.load_dataset("csv", data_files=hub.url, split="train"))
    except (OSError, ValueError) as e:  # offline and not cached, unreachable, or not a CSV
        raise DataError(spec, None, None, f"{hub.url}: could not read it ({type(e).__name__}: {e}); on a machine "
                        f"with network, `dail data import {spec}` fills the cache") from None
    # A raw file has no commit to name: the content stands for the revision.
    text = json.dumps(rows, sort_keys=True, default=str).encode()
    return rows, "content-" + hashlib.blake2b(text, digest_size=12).hexdigest()


def _read_rows(spec: str, hub: HubSet, snapshot: Path) -> list[dict[str, Any]]:
    """The rows of the set's split, read by `datasets` from the snapshot's files."""
    try:
        return _load_split(spec, hub, snapshot)
    except ValueError as e:  # a config or split `datasets` does not find, a file it cannot parse
        raise DataError(spec, None, None, f"{hub.repo}@{snapshot.name}: {e}") from None


def _load_split(spec: str, hub: HubSet, snapshot: Path) -> list[dict[str, Any]]:
    import datasets

    datasets.disable_progress_bars()
    if hub.files:
        paths = sorted(str(p) for p in snapshot.glob(hub.files))
        if not paths:
            raise DataError(spec, None, None, f"{hub.repo}@{snapshot.name}: no file matches {hub.files!r}")
        builder = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json"}[Path(paths[0]).suffix]
        return list(datasets.load_dataset(builder, data_files=paths, split="train"))
    splits = datasets.load_dataset(str(snapshot), name=hub.config)
    if hub.split is None and len(splits) != 1:
        raise DataError(spec, None, None, f"{hub.repo} has splits {', '.join(splits)}; name one with @SPLIT")
    name = hub.split or next(iter(splits))
    if name not in splits:
        raise DataError(spec, None, None, f"{hub.repo} has no split {name!r} (it has {', '.join(splits)})")
    return list(splits[name])


def _map_rows(spec: str, hub: HubSet, rows: list[dict[str, Any]], seed: int) -> tuple[list[Problem], dict[str, int]]:
    """Problems from raw rows, and a count per reason of the rows left out."""
    to_problem: Callable[[int, dict[str, Any]], Problem | str] = {
        "fields": lambda i, r: _from_fields(hub, spec, i, r),
        "verl": lambda i, r: _from_verl(hub, spec, i, r),
        "gpqa": lambda i, r: _from_gpqa(hub, spec, i, r, seed),
    }[hub.layout]
    problems: list[Problem] = []
    dropped: dict[str, int] = {}
    for i, row in enumerate(rows):
        out = to_problem(i, row)
        if isinstance(out, str):
            dropped[out] = dropped.get(out, 0) + 1
        else:
            problems.append(out)
    return problems, dropped


def _column(spec: str, row: dict[str, Any], name: str, line: int) -> Any:
    if name not in row:
        raise DataError(spec, line, name, f"no such column (the set has {', '.join(row)})")
    return row[name]


def _text(value: Any) -> str | None:
    return None if value is None else str(value).strip()


def _meta(hub: HubSet, index: int, **extra: Any) -> dict[str, Any]:
    kind = {"answer_type": hub.answer_type} if hub.answer_type else {}
    return {"hub": hub.repo, "index": index, **kind, **extra}


def _from_fields(hub: HubSet, spec: str, i: int, row: dict[str, Any]) -> Problem | str:
    f, line = hub.fields, i + 1

    def optional(name: str | None) -> str | None:
        # A column the spec's query names must exist (a misspelling is an error); a default may be absent.
        return _text(_column(spec, row, name, line)) if name and (name in row or name in hub.required) else None

    ident = optional(f.get("id"))
    if hub.drop_years and ident and any(year in ident for year in HELD_OUT_YEARS):
        return "held_out_year"
    solution = optional(f.get("solution"))
    answer_from = f.get("answer")
    if answer_from and answer_from.startswith("boxed:"):
        answer = last_boxed(_text(_column(spec, row, answer_from[len("boxed:"):], line)) or "")
        if answer is None:
            return "no_boxed_answer"
    else:
        answer = optional(answer_from)
    problem = _text(_column(spec, row, f["problem"], line))
    if not problem:
        return "empty_problem"
    meta = _meta(hub, i, **({"proof": True} if hub.proof else {}))
    return Problem(id=ident or f"{hub.repo.split('/')[-1]}-{i}", problem=problem, solution=solution,
                   answer=None if hub.proof else answer, source=hub.repo, meta=meta)


def _from_verl(hub: HubSet, spec: str, i: int, row: dict[str, Any]) -> Problem | str:
    line = i + 1
    turns = _column(spec, row, "prompt", line)
    user = [t["content"] for t in turns if t.get("role") == "user"]
    if not user:
        raise DataError(spec, line, "prompt", "no user turn in the chat prompt")
    problem = _VERL_INSTRUCTION.sub("", user[-1] or "").strip()
    if not problem:
        return "empty_problem"
    answer = _text((_column(spec, row, "reward_model", line) or {}).get("ground_truth"))
    index = (row.get("extra_info") or {}).get("index", i)
    return Problem(id=f"{hub.repo.split('/')[-1]}-{index}", problem=problem, answer=answer, source=hub.repo,
                   meta=_meta(hub, i))


def _from_gpqa(hub: HubSet, spec: str, i: int, row: dict[str, Any], seed: int) -> Problem | str:
    line = i + 1
    options = [_text(_column(spec, row, c, line)) for c in
               ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")]
    # A row's order depends on the seed and the row alone, so every method (and every rerun) sees the same one.
    order = list(range(4))
    rng(seed, "gpqa", i).shuffle(order)
    choices = [options[j] or "" for j in order]
    answer = "ABCD"[order.index(0)]
    ident = _text(row.get("Record ID")) or f"gpqa-diamond-{i}"
    question = _text(_column(spec, row, "Question", line))
    if not question:
        return "empty_problem"
    return Problem(id=ident, problem=question, choices=choices, answer=answer,
                   solution=_text(row.get("Explanation")), source=hub.repo,
                   meta=_meta(hub, i, shuffle_seed=seed, order=order))
