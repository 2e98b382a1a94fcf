"""Typed configuration of every stage (pydantic), loaded from TOML and overridden by flags.

One config class per stage; every field carries its help text, and validation names the key and
the allowed range. Unknown keys are errors that name the key (a misspelt `tua` must not silently
become the default `tau`). The resolved config is saved beside every output (`save_config`).
This module reads no data and loads no model.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from .data import atomic_write_text
from .models import DEFAULT_MODEL

__all__ = [
    "ConfigError",
    "StrictConfig",
    "SamplingConfig",
    "PromptConfig",
    "LoraSettings",
    "ExpandConfig",
    "TrainConfig",
    "EvalConfig",
    "SelectConfig",
    "RunConfig",
    "ExpandSection",
    "TrainSection",
    "EvalSection",
    "section_values",
    "WaypointsConfig",
    "load_config",
    "save_config",
    "to_toml",
    "settings_changes",
    "check_same_settings",
]


class ConfigError(ValueError):
    """A configuration defect, naming the file and the key."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# The base of every config: unknown keys are errors, assignments are validated. Public for the
# configs that live beside their commands (dail.study, dail.testbed.build).
StrictConfig = _Config


class SamplingConfig(_Config):
    """The sampling transform T(logits; temperature, top_p, top_k) and the length limit."""

    temperature: float = Field(1.0, gt=0, description="Softmax temperature (> 0).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus mass in (0, 1]; 1 disables.")
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens; 0 disables.")
    max_new_tokens: int = Field(1024, ge=1, description="Length limit of a trace or sample.")


class ExpandSampling(SamplingConfig):
    """Expansion's proposal and fallback transform; defaults the authors': the top 20 tokens at temperature 1.

    A subclass rather than other defaults on the field, so a partial `[expand.sampling]` table keeps
    these defaults for the keys it leaves out.
    """

    temperature: float = Field(1.0, gt=0, description="Softmax temperature (> 0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus mass in (0, 1]; 1 disables.")
    top_k: int = Field(20, ge=0, description="Keep the k most likely tokens; 0 disables.")
    max_new_tokens: int = Field(2048, ge=1, description="Length limit of a trace.")


class EvalSampling(SamplingConfig):
    """Evaluation's (and selection's) transform; defaults the authors': temperature 0.6, top-p 0.95.

    A subclass for the same reason as ExpandSampling: a partial table keeps these defaults.
    """

    temperature: float = Field(0.6, gt=0, description="Softmax temperature (> 0).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus mass in (0, 1]; 1 disables.")


class PromptConfig(_Config):
    """Templates of the roles; `{problem}`, `{solution}`, `{waypoints}`, `{answer}` are filled in.

    Every default ends with the learner's instruction, so the roles differ only by what they are
    shown (and the privileged rules about using it). The wording is ours; the intent is the
    method's authors' (privileged: derive everything, never cite the reference; negative: a hint).
    """

    system: str | None = Field(None, description="System message for every role; None keeps the chat template's default.")
    learner: str = Field(
        "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
        description="The learner's (ordinary inference) prompt: the problem only.",
    )
    privileged: str = Field(
        "{problem}\n\nBelow are one or more reference solutions to this problem. They are private notes "
        "for you alone.\n\n{solution}\n\n"
        "Now solve the problem yourself, in your own words, as if you were meeting it for the first time:\n"
        "- Never mention, quote or allude to the reference solutions.\n"
        "- Work out every intermediate result yourself: no number or expression counts as known until "
        "you have derived it.\n"
        "- Do not state the final answer before your reasoning reaches it.\n"
        "- Length does not matter; leave no step out.\n\n"
        "Please reason step by step, and put your final answer within \\boxed{{}}.",
        description="The privileged student's prompt: problem + full expert solution(s).",
    )
    negative: str = Field(
        "{problem}\n\nHint: {waypoints}\n\n"
        "Please reason step by step, and put your final answer within \\boxed{{}}.",
        description="The negative reference's prompt: problem + waypoints only (by default the hint: final "
                    "answer and intermediate results, see `waypoints.mode`).",
    )
    rationalize: str = Field(
        "{problem}\n\nYou are told that the answer is {answer}.\n\n"
        "Now solve the problem yourself, in your own words, as if you were meeting it for the first time:\n"
        "- Never mention that you were told the answer.\n"
        "- Work out every intermediate result yourself.\n"
        "- Do not state the final answer before your reasoning reaches it.\n"
        "- Length does not matter; leave no step out.\n\n"
        "Please reason step by step, and put your final answer within \\boxed{{}}.",
        description="Role `rationalize` (STaR's rationalization, the authors' answer_only): problem + the final "
                    "answer only ({answer}: the row's answer, else the solution's last box), never the solution.",
    )
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="Token budget of the privileged prompt: longer solutions lose their last "
                                "'Solution N:' block, else their second half, until it fits; None = never cut.",
    )
    choices_header: str = Field("Options:", description="Heading of the lettered options of a multiple-choice problem.")
    choice_instruction: str = Field(
        "Answer with the letter of the correct option.",
        description="Appended to the problem text of a multiple-choice problem.",
    )

    @model_validator(mode="after")
    def _placeholders(self) -> PromptConfig:
        need = {"learner": ["{problem}"], "privileged": ["{problem}", "{solution}"],
                "negative": ["{problem}", "{waypoints}"], "rationalize": ["{problem}", "{answer}"]}
        for key, marks in need.items():
            for mark in marks:
                if mark not in getattr(self, key):
                    raise ValueError(f"prompts.{key} must contain {mark}")
        if any(mark in self.learner for mark in ("{solution}", "{waypoints}", "{answer}")):
            raise ValueError("prompts.learner must not contain {solution}, {waypoints} or {answer}: "
                             "the learner sees the problem only")
        if "{solution}" in self.rationalize:
            raise ValueError("prompts.rationalize must not contain {solution}: it shows the answer only")
        return self


class LoraSettings(_Config):
    """LoRA adapter of the learner (peft)."""

    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt; None = every attention and MLP projection of Llama/Qwen-style models."
    )


def check_device(device: str) -> str:
    """`device` if it is auto, cpu, cuda or cuda:N; else ValueError. Presence is `require_device`'s job."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N; got {device!r}")
    return device


def require_device(device: str) -> None:
    """ConfigError unless `device` exists on this machine; called before a model loads.

    Not a validator: a config written for a GPU machine still loads (and is checked) on a laptop.
    """
    if device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(device.partition(":")[2] or 0) >= count:
            raise ConfigError(f"key 'device': {device!r} asked for, but this machine has {count} CUDA device(s)")


class _ModelStage(_Config):
    model: str = Field(DEFAULT_MODEL, description="Hugging Face id, local directory, or 'smollm2-135m' (embedded).")
    dtype: Literal["auto", "float32", "bfloat16", "float16", "float64"] = Field(
        "auto", description="Weights dtype; auto = bf16 on a GPU that has it, float32 elsewhere."
    )
    device: str = Field("auto", description="cpu, cuda, cuda:N, or auto (cuda when present).")
    seed: int = Field(0, description="Seed of every random draw of the stage.")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)

    def resolved_device(self) -> str:
        """The device to run on (`auto` resolved)."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


class WaypointsConfig(_Config):
    """`dail waypoints`: partial solutions for the negative reference."""

    data: str = Field(..., description="Problems JSONL, or a bundled split name (arith-train, arith-test).")
    out: str = Field(..., description="Output JSONL: the problems with `waypoints` filled in.")
    mode: Literal["hint", "rule"] = Field(
        "hint", description="hint (the authors': final answer + intermediate results found by regex) or rule "
                            "(boxed answer + right-hand sides of key equations); a row's own waypoints win.")


class ExpandConfig(_ModelStage):
    """`dail expand`: mixed-policy rollouts of learner and privileged student."""

    data: str = Field(..., description="Problems JSONL (with solutions), or a bundled split name.")
    data_digest: str | None = Field(None, description="Set by the stage, not by you: a digest of the data its rows came "
                                                      "from, so that a resume over other data at the same path is refused.")
    out: str = Field(..., description="Traces JSONL (append-only; rerun resumes).")
    n: int = Field(4, ge=1, description="Traces per problem.")
    rule: Literal["threshold", "nucleus"] = Field(
        "threshold", description="Mixed rule: threshold (the authors': learner proposals kept when p_P >= tau) "
                                 "or nucleus (ablation: kept when the transformed q_P > tau).")
    tau: float = Field(0.8, ge=0, description="threshold: keep a learner proposal when p_P(token) >= tau (0: every token "
                                              "the learner's, >= 1: every token the privileged student's).")
    retries: int = Field(5, ge=1, le=15, description="threshold: learner proposals per token before the privileged fallback.")
    privileged_view: Literal["solution", "answer", "waypoints"] = Field(
        "solution", description="What the privileged prompt holds: the expert solution, only the final answer "
                                "(STaR's rationalization), or the negative reference's waypoints (with tau >= 1: "
                                "the negative reference's own rollouts, to look at).")
    keep: Literal["all-correct", "first-correct", "one-random"] = Field(
        "first-correct", description="Which traces training keeps: every correct one, the first correct per problem "
                                     "(sample order), or one seeded-random trace per problem without grading.")
    sampling: ExpandSampling = Field(default_factory=ExpandSampling,
                                     description="Proposal and fallback transform of the rollout.")
    batch_size: int = Field(16, ge=1, description="Traces decoded together (each costs two rows of the forward).")
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    limit: int | None = Field(None, ge=1, description="Use only the first N problems.")
    leak_patterns: list[str] = Field(
        default_factory=lambda: [r"(?i)\b(the|an|this) (expert|reference|given|provided) (solution|answer)",
                                 r"(?i)\bexpert solution\b", r"(?i)\bas (shown|given|stated) (above|in the solution)"],
        description="Regexes marking a trace that gives away the privileged context (rejected as 'leak').",
    )


class TrainConfig(_ModelStage):
    """`dail train`: LoRA fine-tuning of the learner on kept traces."""

    traces: str | None = Field(None, description="Traces JSONL from expand (not needed by sft-expert).")
    problems: str = Field(..., description="Problems JSONL (solutions, waypoints), or a bundled split name.")
    objective: Literal["contrastive", "contrastive-target", "nll", "sft-expert"] = Field(
        "contrastive", description="Training objective (docs/method.md, 'Training objectives')."
    )
    out: str = Field(..., description="Adapter output directory (checkpoints go under it).")
    epochs: float = Field(2, gt=0, description="Passes over the training rows.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    batch_size: int = Field(8, ge=1, description="Rows per optimizer step (effective, across processes and accumulation).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping norm; None disables.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR schedule after warm-up.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming up linearly.")
    warmup_steps: int | None = Field(None, ge=0, description="Warm-up steps; when set, wins over warmup_ratio (the authors': 5).")
    gamma: float = Field(0.1, ge=0, lt=1, description="contrastive: weight of the negative reference, in [0, 1) "
                                                      "(the authors' cheating_penalty, 0.1).")
    alpha: float = Field(1.0, ge=0, description="contrastive-target: strength of the contrast.")
    beta: float = Field(0.1, gt=0, le=1, description="contrastive-target: plausibility threshold.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    save_every: int = Field(50, ge=1, description="Checkpoint every N optimizer steps.")
    log_every: int = Field(1, ge=1, description="Log a JSONL line every N optimizer steps.")
    resume: bool = Field(False, description="Continue from the last checkpoint under `out`.")
    max_steps: int | None = Field(None, ge=1, description="Stop after N optimizer steps (overrides epochs).")
    kept_only: bool = Field(True, description="Train on traces the filters kept only.")


class EvalConfig(_ModelStage):
    """`dail eval`: sample, grade, pass@k and token efficiency."""

    adapter: str | None = Field(None, description="LoRA adapter directory; None evaluates the base model.")
    data: str = Field(..., description="Problems JSONL (with answers), or a bundled split name.")
    data_digest: str | None = Field(None, description="Set by the stage, not by you: a digest of the data its rows came "
                                                      "from, so that a resume over other data at the same path is refused.")
    out: str = Field(..., description="Output directory (samples.jsonl, metrics.json).")
    n: int = Field(16, ge=1, description="Samples per problem.")
    role: Literal["learner", "privileged"] = Field(
        "learner", description="The prompt evaluated: learner (the problem alone), or privileged (with the expert "
                               "solution in view: an upper bound, never a method's score).")
    k: list[int] | None = Field(None, description="The k of pass@k (each <= n); unset: the powers of two up to n.")
    sampling: EvalSampling = Field(default_factory=EvalSampling, description="The sampling transform and length limit.")
    presence_penalty: float = Field(
        0.0, ge=-2, le=2, description="vLLM's presence penalty: subtracted from the logit of every token the sample "
                                      "has already generated, before temperature, top-k and top-p (the authors: 1.5).")
    budgets: list[int] = Field(
        default_factory=list, description="Token budgets B (each >= 1) for pass@k at a budget: a sample is graded as if "
                                          "sampled with max_new_tokens = B; empty = powers of two up to max_new_tokens.")
    force_answer: bool = Field(
        True, description="Give a sample (or budget prefix) without an answer one continuation after `answer_cue`, "
                          "and grade that.")
    answer_cue: str = Field("\n\nFinal answer: \\boxed{", description="Text appended after a sample without an answer "
                                                                        "to force one (tokenised without special tokens).")
    force_answer_tokens: int = Field(100, ge=1, description="Length limit of a forced-answer continuation.")
    batch_size: int = Field(32, ge=1, description="Samples decoded together.")
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    limit: int | None = Field(None, ge=1, description="Use only the first N problems.")

    @model_validator(mode="before")
    @classmethod
    def _default_k(cls, data: Any) -> Any:
        # The default follows n, so `--n 2` alone is valid; a k the user gives is checked against n below.
        if isinstance(data, dict) and data.get("k") is None:
            n = data.get("n", 16)
            if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
                data = {**data, "k": [2**i for i in range(n.bit_length())]}
        return data

    @model_validator(mode="after")
    def _k_le_n(self) -> EvalConfig:
        bad = [k for k in self.k or [] if k < 1 or k > self.n]
        if bad:
            raise ValueError(f"k must be in [1, n={self.n}]; got {bad}")
        return self

    @field_validator("budgets")
    @classmethod
    def _budgets_positive(cls, v: list[int]) -> list[int]:
        bad = [b for b in v if b < 1]
        if bad:
            raise ValueError(f"each budget must be >= 1 token; got {bad}")
        return v

    @field_validator("answer_cue")
    @classmethod
    def _cue_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty: a forced answer needs a cue")
        return v


class SelectConfig(_ModelStage):
    """`dail select`: keep the problems the base model fails in all of n samples."""

    data: str = Field(..., description="Candidate problems JSONL, or a bundled split name.")
    out: str = Field(..., description="Selected problems JSONL.")
    n: int = Field(32, ge=1, description="Samples per problem; a problem is kept if none is correct.")
    sampling: EvalSampling = Field(default_factory=EvalSampling, description="The sampling transform and length limit.")
    batch_size: int = Field(32, ge=1, description="Samples decoded together.")
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    limit: int | None = Field(None, ge=1, description="Use only the first N candidates.")


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def _error_lines(err: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for e in err.errors():
        key = prefix + ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        elif e["type"] == "missing":
            lines.append(f"missing required key '{key}'")
        elif not e["loc"]:  # a whole-model check names its keys itself
            lines.append(msg if not prefix else f"[{prefix.rstrip('.')}] {msg}")
        else:
            lines.append(f"key '{key}': {msg}")
    return lines


def _format_error(err: ValidationError, source: str) -> str:
    return "\n".join(f"{source}: {line}" for line in _error_lines(err))


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a table")
    node[leaf] = value


def load_config(
    cls: type[ConfigT],
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    section: str | None = None,
) -> ConfigT:
    """Build a config from a TOML file (optionally one `[section]` of it) and dotted-key overrides.

    Overrides whose value is None are ignored, so CLI flags left unset keep the file's values.
    """
    tree: dict[str, Any] = {}
    source = "flags"
    if path is not None:
        source = str(path)
        try:
            tree = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
        if section is not None:
            tree = tree.get(section, {})
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    try:
        return cls.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


def to_toml(config: BaseModel) -> str:
    """Serialise a config as TOML (None values are left out: they mean 'default')."""
    return _toml_table(config.model_dump(mode="json"), prefix="")


def _toml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # only inside a list (an inline table); a dict value of a key is a [table]
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(key: str) -> str:
    # A bare key where TOML allows one; any other (a file path) quoted.
    return key if key and all(c.isalnum() or c in "_-" for c in key) and key.isascii() else _toml_value(key)


def _toml_table(tree: dict, prefix: str) -> str:
    scalars = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in tree.items() if v is not None and not isinstance(v, dict)]
    out = ("\n".join(scalars) + "\n") if scalars else ""
    for k, v in tree.items():
        if isinstance(v, dict):
            name = f"{prefix}{_toml_key(k)}"
            out += f"\n[{name}]\n" + _toml_table(v, prefix=f"{name}.")
    return out


def save_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config beside an output, atomically."""
    atomic_write_text(path, to_toml(config))


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def settings_changes(saved: str | Path, config: BaseModel, keys: tuple[str, ...] | None = None,
                     ignore: tuple[str, ...] = ()) -> list[str]:
    """`name: old -> new` for every setting where `config` differs from the config saved at `saved`.

    Names are dotted (`sampling.top_p`). Only the fields `keys` names (with what is under them) count
    when given; never those `ignore` names. The saved file is read as `config`'s class, so a field
    added since it was written compares as its default.
    """
    raw = tomllib.loads(Path(saved).read_text(encoding="utf-8"))
    try:
        raw = type(config).model_validate(raw).model_dump(mode="json")
    except ValidationError:
        pass  # written by another version: compare what it says
    old, new = _flat(raw), _flat(config.model_dump(mode="json"))

    def counts(name: str) -> bool:
        def under(names: tuple[str, ...]) -> bool:
            return any(name == n or name.startswith(n + ".") for n in names)

        return (keys is None or under(keys)) and not under(ignore)

    def show(v: Any) -> str:
        return "unset" if v is None else _toml_value(v)

    return [f"{k}: {show(old.get(k))} -> {show(new.get(k))}"
            for k in dict.fromkeys([*old, *new])
            if counts(k) and old.get(k) != new.get(k)]


def check_same_settings(saved: str | Path, config: BaseModel, keys: tuple[str, ...] | None = None, *,
                        ignore: tuple[str, ...] = (), output: str | Path, fresh: str) -> None:
    """Refuse to add to `output`, made under the config saved at `saved`, with other settings of `keys`.

    A resume must not mix rows of two settings: ConfigError lists each differing setting as
    `name: old -> new` and says how to start afresh (`fresh`). No saved config: nothing to compare.
    """
    if not Path(saved).exists():
        return
    changes = settings_changes(saved, config, keys, ignore)
    if changes:
        raise ConfigError(f"{output} was made with other settings ({saved}): {'; '.join(changes)}. "
                          f"A resume would mix the two; {fresh}")


def _check_section(cls: type[BaseModel], name: str, section: dict[str, Any], fill: dict[str, Any]) -> None:
    """Validate a [section] of a run config as the stage config it becomes, naming `section.key`."""
    try:
        cls.model_validate({**section, **fill})
    except ValidationError as e:
        raise ValueError("; ".join(_error_lines(e, prefix=f"{name}."))) from None


# Keys a run sets for every stage itself; a stage section may not repeat them.
_RUN_KEYS = {"model", "seed", "device", "dtype", "data", "out", "problems", "traces", "adapter", "objective",
             "prompts", "resume", "data_digest"}


def _section(cls: type[_Config], name: str) -> type[_Config]:
    """A typed `[section]` of a run config: the stage config's fields less those the run sets."""
    fields = {k: (f.annotation, f) for k, f in cls.model_fields.items() if k not in _RUN_KEYS}
    return create_model(name, __base__=_Config, __doc__=f"The [{name}] keys of a run: {cls.__name__} less the run's own.",
                        **fields)


ExpandSection = _section(ExpandConfig, "ExpandSection")
TrainSection = _section(TrainConfig, "TrainSection")
EvalSection = _section(EvalConfig, "EvalSection")


def section_values(section: BaseModel) -> dict[str, Any]:
    """The keys a run config's section set explicitly (the stage's defaults stand for the rest)."""
    return section.model_dump(exclude_unset=True)


class EvalSplit(_Config):
    """One evaluation split of a run with settings of its own (e.g. more samples on a fixed subset)."""

    data: str = Field(..., description="Problems JSONL or bundled split name.")
    name: str | None = Field(None, description="Its name in the run (eval directory, tables); default: the data's.")
    n: int | None = Field(None, ge=1, description="Samples per problem (default: the [eval] section's).")
    k: list[int] | None = Field(None, description="The k of pass@k (default: the [eval] section's, else powers of two).")
    limit: int | None = Field(None, ge=1, description="Use only the first N problems (default: the [eval] section's).")
    methods: list[str] | None = Field(None, description="Only these of the run's methods are evaluated here "
                                                        "(default: every one).")

    @property
    def label(self) -> str:
        """The split's name in the run."""
        from .rundir import split_name

        return self.name or split_name(self.data)

    def overrides(self) -> dict[str, Any]:
        """The EvalConfig keys this split sets."""
        return {k: v for k, v in {"n": self.n, "k": self.k, "limit": self.limit}.items() if v is not None}

    def evaluates(self, method: str) -> bool:
        """Whether `method` is evaluated on this split."""
        return self.methods is None or method in self.methods


class RunConfig(_Config):
    """`dail run`: a whole experiment into `runs/NAME/` (select, waypoints, expand, train, eval, report)."""

    name: str = Field(..., description="Run name: the output goes to OUT_DIR/NAME.")
    out_dir: str = Field("runs", description="Parent directory of runs.")
    model: str = Field(DEFAULT_MODEL, description="Base model of every role and method.")
    train_data: str = Field(..., description="Problems with expert solutions (JSONL or bundled split name).")
    eval_data: list[str | EvalSplit] = Field(..., min_length=1, description="Evaluation splits: JSONL paths or bundled "
                                             "split names, or tables {data, name, n, k, limit, methods} with settings of their "
                                             "own.")
    methods: list[Literal["base", "sft-expert", "star", "psd-nll", "dail-nll", "dail", "oracle-sft", "rft",
                          "oracle-prompt"]] = Field(
        default_factory=lambda: ["base", "sft-expert", "dail"],
        description="Methods to train and evaluate: base (no training), sft-expert (NLL on the expert solutions), "
                    "star (NLL on rationalizations: privileged-only traces from the final answer alone), psd-nll "
                    "(NLL on privileged-only traces from the full solution), dail-nll (NLL on the mixed traces), "
                    "dail (the contrastive objective on the mixed traces); controls: oracle-sft (NLL on each "
                    "problem's full_solution: the ceiling of imitation), rft (NLL on the base model's own correct "
                    "samples from selection: rejection-sampling fine-tuning), oracle-prompt (the base model "
                    "evaluated with the expert solution in its prompt: an upper bound, not a method).")
    rft_per_problem: int = Field(4, ge=1, description="rft: at most this many distinct correct samples per problem.")
    select: bool = Field(False, description="Keep only training problems the base model fails in all of select_n samples.")
    select_n: int = Field(32, ge=1, description="Samples per problem for `select`.")
    select_limit: int | None = Field(None, ge=1, description="Candidates `select` considers (the first N); None: all.")
    waypoints_mode: Literal["hint", "rule"] = Field(
        "hint", description="The negative reference's partial solution: hint (final answer + intermediate results, "
                            "the authors') or rule (boxed answer + right-hand sides of key equations).")
    seed: int = Field(0, description="Seed of every stage.")
    device: str = Field("auto", description="cpu, cuda, cuda:N, or auto.")
    dtype: Literal["auto", "float32", "bfloat16", "float16", "float64"] = Field("auto", description="Weights dtype.")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)
    launcher: Literal["none", "accelerate"] = Field("none", description="Run model stages in-process or via `accelerate launch`.")
    num_processes: int = Field(1, ge=1, description="Processes for launcher = accelerate.")
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    data_digests: dict[str, str] = Field(default_factory=dict, description="Set by the run, not by you: a digest of "
                                         "each data file's content, so that a rerun over other data at the same path "
                                         "is refused.")
    expand: ExpandSection = Field(default_factory=ExpandSection, description="ExpandConfig keys (n, tau, sampling, batch_size, limit, ...).")
    train: TrainSection = Field(default_factory=TrainSection, description="TrainConfig keys shared by every trained method (epochs, lr, lora, ...).")
    eval: EvalSection = Field(default_factory=EvalSection, description="EvalConfig keys (n, k, sampling, budgets, batch_size, limit, ...).")

    @field_validator("methods")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v) or not v:
            raise ValueError("must be a non-empty list without repeats")
        return v

    def eval_splits(self) -> list[EvalSplit]:
        """Every evaluation split as an EvalSplit (a plain name or path has no settings of its own)."""
        return [s if isinstance(s, EvalSplit) else EvalSplit(data=s) for s in self.eval_data]

    @model_validator(mode="after")
    def _unique_splits(self) -> RunConfig:
        labels = [s.label for s in self.eval_splits()]
        if len(set(labels)) != len(labels):
            raise ValueError(f"eval_data: two splits share the name {next(x for x in labels if labels.count(x) > 1)!r}; "
                             "give one a `name`")
        for split in self.eval_splits():
            stray = [m for m in split.methods or [] if m not in self.methods]
            if stray:
                raise ValueError(f"eval_data {split.label!r}: methods {stray} are not among the run's methods "
                                 f"{self.methods}")
        return self

    @model_validator(mode="after")
    def _rft_needs_select(self) -> RunConfig:
        if "rft" in self.methods and not self.select:
            raise ValueError("method rft trains on the samples of `select`: set select = true")
        return self

    @model_validator(mode="after")
    def _sections(self) -> RunConfig:
        run_keys = {"model": self.model, "seed": self.seed, "device": self.device, "dtype": self.dtype}
        # The sections' own fields are typed; this catches what only the whole stage config checks (k <= n).
        _check_section(ExpandConfig, "expand", section_values(self.expand), {**run_keys, "data": "-", "out": "-"})
        _check_section(TrainConfig, "train", section_values(self.train), {**run_keys, "problems": "-", "out": "-"})
        _check_section(EvalConfig, "eval", section_values(self.eval), {**run_keys, "data": "-", "out": "-"})
        return self
