"""Typed configuration of every stage (pydantic), loaded from TOML and overridden by flags.

One config class per stage; every field carries its help text, and validation names the key and
the allowed range. Unknown keys are errors that name the key (a misspelt `tua` must not silently
become the default `tau`). The resolved config is saved beside every output (`save_config`).
This module reads no data and loads no model.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data import atomic_write_text
from .models import DEFAULT_MODEL

__all__ = [
    "ConfigError",
    "SamplingConfig",
    "PromptConfig",
    "LoraSettings",
    "ExpandConfig",
    "TrainConfig",
    "EvalConfig",
    "SelectConfig",
    "RunConfig",
    "METHODS",
    "WaypointsConfig",
    "load_config",
    "save_config",
    "to_toml",
]


class ConfigError(ValueError):
    """A configuration defect, naming the file and the key."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class SamplingConfig(_Config):
    """The sampling transform T(logits; temperature, top_p, top_k) and the length limit."""

    temperature: float = Field(1.0, gt=0, description="Softmax temperature (> 0).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus mass in (0, 1]; 1 disables.")
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens; 0 disables.")
    max_new_tokens: int = Field(1024, ge=1, description="Length limit of a trace or sample.")


class PromptConfig(_Config):
    """Templates of the three roles; `{problem}`, `{solution}`, `{waypoints}` are filled in."""

    system: str | None = Field(None, description="System message for every role; None keeps the chat template's default.")
    learner: str = Field(
        "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
        description="The learner's (ordinary inference) prompt: the problem only.",
    )
    privileged: str = Field(
        "{problem}\n\nHere is an expert solution to this problem:\n\n{solution}\n\n"
        "Now write your own complete, detailed step-by-step reasoning for the problem, filling in "
        "every step the expert skips. Do not mention the expert solution. Put your final answer "
        "within \\boxed{{}}.",
        description="The privileged student's prompt: problem + full expert solution.",
    )
    negative: str = Field(
        "{problem}\n\nHere are the key intermediate results of a solution:\n\n{waypoints}\n\n"
        "Now write your own complete, detailed step-by-step reasoning for the problem. Do not "
        "mention these results. Put your final answer within \\boxed{{}}.",
        description="The negative reference's prompt: problem + waypoints only.",
    )
    choices_header: str = Field("Options:", description="Heading of the lettered options of a multiple-choice problem.")
    choice_instruction: str = Field(
        "Answer with the letter of the correct option.",
        description="Appended to the problem text of a multiple-choice problem.",
    )

    @model_validator(mode="after")
    def _placeholders(self) -> PromptConfig:
        need = {"learner": ["{problem}"], "privileged": ["{problem}", "{solution}"],
                "negative": ["{problem}", "{waypoints}"]}
        for key, marks in need.items():
            for mark in marks:
                if mark not in getattr(self, key):
                    raise ValueError(f"prompts.{key} must contain {mark}")
        if "{solution}" in self.learner or "{waypoints}" in self.learner:
            raise ValueError("prompts.learner must not contain {solution} or {waypoints}: the learner sees the problem only")
        return self


class LoraSettings(_Config):
    """LoRA adapter of the learner (peft)."""

    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt; None = every attention and MLP projection of Llama/Qwen-style models."
    )


class _ModelStage(_Config):
    model: str = Field(DEFAULT_MODEL, description="Hugging Face id, local directory, or 'smollm2-135m' (embedded).")
    dtype: Literal["auto", "float32", "bfloat16", "float16", "float64"] = Field(
        "auto", description="Weights dtype; auto = bf16 on a GPU that has it, float32 elsewhere."
    )
    device: str = Field("auto", description="cpu, cuda, cuda:N, or auto (cuda when present).")
    seed: int = Field(0, description="Seed of every random draw of the stage.")

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


class ExpandConfig(_ModelStage):
    """`dail expand`: mixed-policy rollouts of learner and privileged student."""

    data: str = Field(..., description="Problems JSONL (with solutions), or a bundled split name.")
    out: str = Field(..., description="Traces JSONL (append-only; rerun resumes).")
    n: int = Field(4, ge=1, description="Traces per problem.")
    tau: float = Field(0.0, ge=0, description="Accept the learner's token when q_P(token) > tau; tau >= 1 = privileged only.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
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
        "contrastive", description="Training objective (DESIGN.md, Objectives)."
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
    gamma: float = Field(0.5, ge=0, lt=1, description="contrastive: weight of the negative reference, in [0, 1).")
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
    out: str = Field(..., description="Output directory (samples.jsonl, metrics.json).")
    n: int = Field(16, ge=1, description="Samples per problem.")
    k: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16], description="The k of pass@k (each <= n).")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.6, top_p=0.95))
    budgets: list[int] = Field(default_factory=list, description="Token budgets for pass@k at a budget; empty = powers of two up to max_new_tokens.")
    batch_size: int = Field(32, ge=1, description="Samples decoded together.")
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    limit: int | None = Field(None, ge=1, description="Use only the first N problems.")

    @model_validator(mode="after")
    def _k_le_n(self) -> EvalConfig:
        bad = [k for k in self.k if k < 1 or k > self.n]
        if bad:
            raise ValueError(f"k must be in [1, n={self.n}]; got {bad}")
        return self


class SelectConfig(_ModelStage):
    """`dail select`: keep the problems the base model fails in all of n samples."""

    data: str = Field(..., description="Candidate problems JSONL, or a bundled split name.")
    out: str = Field(..., description="Selected problems JSONL.")
    n: int = Field(32, ge=1, description="Samples per problem; a problem is kept if none is correct.")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.6, top_p=0.95))
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
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_table(tree: dict, prefix: str) -> str:
    scalars = [f"{k} = {_toml_value(v)}" for k, v in tree.items() if v is not None and not isinstance(v, dict)]
    out = ("\n".join(scalars) + "\n") if scalars else ""
    for k, v in tree.items():
        if isinstance(v, dict):
            name = f"{prefix}{k}"
            out += f"\n[{name}]\n" + _toml_table(v, prefix=f"{name}.")
    return out


def save_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config beside an output, atomically."""
    atomic_write_text(path, to_toml(config))


METHODS = ("base", "sft-expert", "star", "dail-nll", "dail")


def _check_section(cls: type[BaseModel], name: str, section: dict[str, Any], fill: dict[str, Any]) -> None:
    """Validate a [section] of a run config as the stage config it becomes, naming `section.key`."""
    clash = sorted(set(section) & set(fill))
    if clash:
        raise ValueError(f"{name}.{clash[0]} is set by the run itself; set it at the top level or leave it out")
    try:
        cls.model_validate({**section, **fill})
    except ValidationError as e:
        raise ValueError("; ".join(_error_lines(e, prefix=f"{name}."))) from None


class RunConfig(_Config):
    """`dail run`: a whole experiment into `runs/NAME/` (select, waypoints, expand, train, eval, report)."""

    name: str = Field(..., description="Run name: the output goes to OUT_DIR/NAME.")
    out_dir: str = Field("runs", description="Parent directory of runs.")
    model: str = Field(DEFAULT_MODEL, description="Base model of every role and method.")
    train_data: str = Field(..., description="Problems with expert solutions (JSONL or bundled split name).")
    eval_data: list[str] = Field(..., min_length=1, description="Evaluation splits (JSONL paths or bundled split names).")
    methods: list[Literal["base", "sft-expert", "star", "dail-nll", "dail"]] = Field(
        default_factory=lambda: ["base", "sft-expert", "dail"], description="Methods to train and evaluate."
    )
    select: bool = Field(False, description="Keep only training problems the base model fails in all of select_n samples.")
    select_n: int = Field(32, ge=1, description="Samples per problem for `select`.")
    star_tau: float = Field(2.0, gt=1, description="tau of the STaR baseline's expansion (> 1: privileged tokens only).")
    seed: int = Field(0, description="Seed of every stage.")
    device: str = Field("auto", description="cpu, cuda, cuda:N, or auto.")
    dtype: Literal["auto", "float32", "bfloat16", "float16", "float64"] = Field("auto", description="Weights dtype.")
    launcher: Literal["none", "accelerate"] = Field("none", description="Run model stages in-process or via `accelerate launch`.")
    num_processes: int = Field(1, ge=1, description="Processes for launcher = accelerate.")
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    expand: dict[str, Any] = Field(default_factory=dict, description="ExpandConfig keys (n, tau, sampling, batch_size, limit, ...).")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig keys shared by every trained method (epochs, lr, lora, ...).")
    eval: dict[str, Any] = Field(default_factory=dict, description="EvalConfig keys (n, k, sampling, budgets, batch_size, limit, ...).")

    @field_validator("methods")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v) or not v:
            raise ValueError("must be a non-empty list without repeats")
        return v

    @model_validator(mode="after")
    def _sections(self) -> RunConfig:
        run_keys = {"model": self.model, "seed": self.seed, "device": self.device, "dtype": self.dtype}
        _check_section(ExpandConfig, "expand", self.expand, {**run_keys, "data": "-", "out": "-"})
        _check_section(TrainConfig, "train", self.train, {**run_keys, "problems": "-", "out": "-"})
        _check_section(EvalConfig, "eval", self.eval, {**run_keys, "data": "-", "out": "-"})
        return self
