"""Row schemas (problems, traces, eval samples) and JSONL read/write.

Every file a stage reads goes through `read_jsonl`, which turns any defect of a row -- bad JSON,
a duplicate key, a missing or unknown field, a wrong type, a duplicate id, an empty problem -- or
of the file -- binary, not UTF-8, a directory, empty -- into one `DataError` naming the file, the
line and the field (a UTF-8 BOM is accepted). Writers are either append-only
(`JsonlAppender`, flushed per row, for long runs that must survive a kill) or atomic
(`write_jsonl`, temp file + rename, for final outputs). This module knows nothing of models.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

__all__ = [
    "DataError",
    "Row",
    "Problem",
    "Trace",
    "Rollout",
    "Sample",
    "read_jsonl",
    "read_problems",
    "read_traces",
    "write_jsonl",
    "atomic_write_text",
    "JsonlAppender",
    "validate_file",
    "check_output",
]


class DataError(ValueError):
    """A defect in a data file, located by file, line and field."""

    def __init__(self, path: str | os.PathLike, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


class Row(BaseModel):
    """A JSONL row schema: strict types, unknown keys refused."""

    # Unknown keys are an error: a typo such as "soluton" would otherwise silently drop data.
    model_config = ConfigDict(extra="forbid", strict=True)


# The grading rules a row may declare in `meta.answer_type` (`dail.grading` implements them).
ANSWER_TYPES: tuple[str, ...] = ("integer", "math", "choice")


class Problem(Row):
    """One problem with its expert solution; `answer` makes it verifiable."""

    id: str = Field(description="Unique id within the file.")
    problem: str = Field(description="The problem statement shown to every role.")
    solution: str | None = Field(None, description="Expert (didactic) solution; needed by expand.")
    full_solution: str | None = Field(None, description="A complete step-by-step solution in the model's own format, "
                                      "where one exists (a test-bed): what the oracle-sft control trains on.")
    answer: str | None = Field(None, description="Reference final answer; makes the problem verifiable.")
    choices: list[str] | None = Field(None, description="Options of a multiple-choice problem (graded by letter).")
    waypoints: str | None = Field(None, description="Hand-written partial solution; wins over extraction.")
    source: str | None = Field(None, description="Where the problem comes from.")
    meta: dict[str, Any] = Field(default_factory=dict, description="Free-form extra data (kept, never shown).")

    @field_validator("id", "problem")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("answer", mode="before")
    @classmethod
    def _answer_as_text(cls, v: Any) -> Any:
        # Integer answers are natural in JSON; store every answer as text.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("choices")
    @classmethod
    def _answer_among_choices(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # A multiple-choice answer is a letter (A, B, ...); one past the choices can never be graded correct.
        answer = (info.data.get("answer") or "").strip().upper()
        if v is not None and len(answer) == 1 and "A" <= answer <= "Z" and ord(answer) - ord("A") >= len(v):
            raise ValueError(f"answer {answer!r} is outside the {len(v)} choices (A-{chr(ord('A') + len(v) - 1)})")
        return v

    @field_validator("meta")
    @classmethod
    def _known_answer_type(cls, v: dict[str, Any]) -> dict[str, Any]:
        # Caught on reading, with file and line: at grading time it would stop a run midway.
        declared = v.get("answer_type")
        if declared is not None and declared not in ANSWER_TYPES:
            raise ValueError(f"answer_type {declared!r} is not one of {', '.join(ANSWER_TYPES)}")
        return v

    @property
    def verifiable(self) -> bool:
        """Whether a sampled answer can be checked against this row."""
        return self.answer is not None and self.answer.strip() != ""


class Trace(Row):
    """One expansion trace (mixed-policy rollout) with its filter verdict."""

    problem_id: str
    sample: int
    seed: int
    text: str
    token_ids: list[int]
    source: str = Field(description="One character per token: L (learner) or P (privileged).")
    logprob_learner: list[float]
    logprob_privileged: list[float]
    finish: Literal["eos", "length"]
    answer: str | None = None
    kept: bool = True
    reject_reason: str | None = None

    @field_validator("source")
    @classmethod
    def _source_letters(cls, v: str) -> str:
        if set(v) - {"L", "P"}:
            raise ValueError("must contain only the letters L and P")
        return v

    def model_post_init(self, __context: Any) -> None:
        n = len(self.token_ids)
        for name in ("source", "logprob_learner", "logprob_privileged"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} tokens")


class Sample(Row):
    """One evaluation sample, graded; with its verdicts at the token budgets that cut it."""

    class AtBudget(Row):
        """The verdict on a sample's first B tokens (plus a forced answer when they hold none)."""

        answer: str | None
        correct: bool
        forced: bool = Field(False, description="The answer comes from a forced continuation of the prefix.")

    problem_id: str
    sample: int
    seed: int
    text: str = Field(description="The sampled completion (without a forced continuation).")
    n_tokens: int = Field(description="Tokens of the sampled completion.")
    finish: Literal["eos", "length"]
    answer: str | None = Field(description="The graded answer: the sample's own, else its forced answer's.")
    correct: bool
    answer_token: int | None = Field(None, description="Index of the token where the sample's own answer ends.")
    forced: bool = Field(False, description="The sample had no answer and `answer` comes from a forced continuation.")
    forced_text: str | None = Field(None, description="The forced continuation (after the cue, which is not stored).")
    forced_tokens: int = Field(0, description="Tokens of the forced continuation.")
    budgets: dict[str, AtBudget] = Field(
        default_factory=dict, description="Verdict at each budget B < n_tokens (keyed by str(B)); a sample that "
                                          "ended within B is judged by its own verdict.")


class Rollout(Row):
    """One rollout of a GRPO step (`dail rl`): its tokens, their log-probs when sampled, the reward grading gave."""

    problem_id: str
    sample: int = Field(description="g: the rollout's index in its problem's group.")
    step: int = Field(description="The rollout batch (0-based) it belongs to.")
    hinted: bool = Field(False, description="Sampled with the problem's hint in the prompt (NuRL's re-roll).")
    token_ids: list[int]
    logprobs: list[float] = Field(description="Log-prob of each token under the policy that sampled it.")
    finish: Literal["eos", "length"]
    answer: str | None
    reward: float = Field(description="1.0 when the answer grades as correct, else 0.0.")

    def model_post_init(self, __context: Any) -> None:
        if len(self.logprobs) != len(self.token_ids):
            raise ValueError(f"logprobs has {len(self.logprobs)} entries for {len(self.token_ids)} tokens")


RowT = TypeVar("RowT", bound=BaseModel)


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def _explain(err: ValidationError, raw: dict) -> tuple[str, str]:
    """First error of a pydantic failure as (field, message) in a user's words."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "<row>"
    top = e["loc"][0] if e["loc"] else None
    kind = e["type"]
    if kind == "missing":
        return loc, "missing (required)"
    if kind == "extra_forbidden":
        return loc, "unknown field (put extra data under 'meta')"
    if kind.endswith("_type") and top in raw:
        value = raw
        for p in e["loc"]:
            value = value[p] if isinstance(value, (dict, list)) else value
        expected = kind.removesuffix("_type").replace("_", " ")
        return loc, f"expected {expected}, got {_type_name(value)}"
    msg = e["msg"].removeprefix("Value error, ")
    return loc, msg


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    # json.loads keeps the last of two equal keys; in a hand-edited row that hides a typo.
    obj: dict = {}
    for k, v in pairs:
        if k in obj:
            raise _DuplicateKey(k)
        obj[k] = v
    return obj


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; DataError on bad JSON."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "file not found")
    if path.is_dir():
        raise DataError(path, None, None, "is a directory, expected a JSONL file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, None, None, f"cannot read ({e.strerror or e})") from None
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a BOM (Windows editors) is accepted
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(path, line, None, f"not UTF-8 text (byte 0x{raw[e.start]:02x}); is it a binary file?") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError(path, line, None, "contains NUL bytes; is it a binary file?")
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKey as e:
            raise DataError(path, lineno, e.key, "duplicate key in the JSON object") from None
        except json.JSONDecodeError as e:
            raise DataError(path, lineno, None, f"invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(path, lineno, None, f"expected a JSON object, got {_type_name(obj)}")
        yield lineno, obj


def read_jsonl(path: str | os.PathLike, schema: type[RowT], *, key: str | None = None) -> list[RowT]:
    """Read and validate every row; the first defect raises DataError. `key` must be unique."""
    rows: list[RowT] = []
    seen: dict[Any, int] = {}
    for lineno, obj in iter_jsonl(path):
        try:
            row = schema.model_validate(obj)
        except ValidationError as e:
            field, msg = _explain(e, obj)
            raise DataError(path, lineno, field, msg) from None
        if key is not None:
            k = getattr(row, key)
            if k in seen:
                raise DataError(path, lineno, key, f"duplicate value {k!r} (first on line {seen[k]})")
            seen[k] = lineno
        rows.append(row)
    if not rows:
        raise DataError(path, None, None, "empty file (no rows)")
    return rows


def read_problems(path: str | os.PathLike) -> list[Problem]:
    """Problems from a JSONL file, ids unique."""
    return read_jsonl(path, Problem, key="id")


def read_traces(path: str | os.PathLike, *, kept_only: bool = True) -> list[Trace]:
    """Traces from an expansion file; by default only those the filters kept. A (problem_id, sample)
    written twice (two runs appending at once, or mixed outputs) is a DataError naming the keys."""
    rows = read_jsonl(path, Trace)
    first: dict[tuple[str, int], int] = {}
    twice = []
    for i, t in enumerate(rows, start=1):
        key = (t.problem_id, t.sample)
        if key in first:
            twice.append(f"({t.problem_id!r}, {t.sample}) in rows {first[key]} and {i}")
        first.setdefault(key, i)
    if twice:
        raise DataError(path, None, "problem_id, sample",
                        f"{len(twice)} duplicate key(s): {'; '.join(twice[:5])}{'; ...' if len(twice) > 5 else ''}; "
                        "each trace must appear once (rerun expand with --fresh to rewrite the file)")
    return [t for t in rows if t.kept] if kept_only else rows


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file so a reader never sees it half-written (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dump(row: BaseModel | dict) -> str:
    obj = row.model_dump(mode="json", exclude_none=False) if isinstance(row, BaseModel) else row
    return json.dumps(obj, ensure_ascii=False)


def write_jsonl(path: str | os.PathLike, rows: Iterable[BaseModel | dict]) -> None:
    """Write a complete JSONL file atomically."""
    atomic_write_text(path, "".join(_dump(r) + "\n" for r in rows))


class JsonlAppender:
    """Append-only JSONL writer, flushed and fsynced per row so a kill loses at most one row.

    A torn last line left by a kill is cut off when the file is opened again, so resumed runs
    append after the last complete row.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_torn_tail(self.path)
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, row: BaseModel | dict) -> None:
        """Append one row and make it durable."""
        self._f.write(_dump(row) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def truncate_torn_tail(path: Path) -> None:
    """Cut a last line that a kill left without its newline, so the next append starts a clean row."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    with path.open("r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)


def read_done_keys(path: str | os.PathLike, fields: tuple[str, ...] = ("problem_id", "sample")) -> set[tuple]:
    """Keys of the complete rows of an append-only file (for resuming); a torn tail is ignored."""
    path = Path(path)
    done: set[tuple] = set()
    if not path.exists():
        return done
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn by a kill: JsonlAppender cuts it off before appending
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            done.add(tuple(obj.get(k) for k in fields))
    return done


def check_output(path: str | os.PathLike, kind: Literal["file", "dir"] = "file") -> None:
    """DataError unless `path` can be written as a `kind`; run before the work, so it fails fast.

    Nothing is left behind: a probe directory made to prove the parent writable is removed again.
    """
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise DataError(path, None, None, "is a directory, expected an output file")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise DataError(path, None, None, "is a file, expected an output directory")
    base = path if kind == "dir" else path.parent
    while not base.exists():
        if base == base.parent:
            break
        base = base.parent
    if not base.is_dir():
        raise DataError(path, None, None, f"cannot create it: {base} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(dir=base, prefix=".dail-probe-"))
    except OSError as e:
        raise DataError(path, None, None, f"cannot create it under {base} ({e.strerror or e})") from None


def validate_file(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a problems file; summary of rows, fields present and verifiable share."""
    problems = read_problems(path)
    fields = ["solution", "answer", "choices", "waypoints", "source"]
    present = {f: sum(getattr(p, f) is not None for p in problems) for f in fields}
    present["meta"] = sum(bool(p.meta) for p in problems)
    n = len(problems)
    verifiable = sum(p.verifiable for p in problems)
    return {
        "path": str(path),
        "rows": n,
        "fields_present": present,
        "verifiable": verifiable,
        "verifiable_share": verifiable / n if n else 0.0,
        "multiple_choice": sum(p.choices is not None for p in problems),
    }
