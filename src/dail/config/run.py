"""`dail run`'s config: its stage sections, its evaluation splits, its methods."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from .base import DEFAULT_MODEL, _Config, check_device
from .files import _error_lines
from .rl import HintConfig, RLConfig
from .stages import EvalConfig, ExpandConfig, PromptConfig, TrainConfig

__all__ = ["RunConfig", "EvalSplit", "ExpandSection", "TrainSection", "EvalSection", "RLSection", "HintSection",
           "section_values"]


def _check_section(cls: type[BaseModel], name: str, section: dict[str, Any], fill: dict[str, Any]) -> None:
    """Validate a [section] of a run config as the stage config it becomes, naming `section.key`."""
    try:
        cls.model_validate({**section, **fill})
    except ValidationError as e:
        raise ValueError("; ".join(_error_lines(e, prefix=f"{name}."))) from None


# Keys a run sets for every stage itself; a stage section may not repeat them. logging_dir stays at its
# default, beside each adapter: one shared directory would mix the methods' steps in one tracker run.
_RUN_KEYS = {"model", "seed", "device", "dtype", "data", "out", "problems", "traces", "adapter", "objective",
             "prompts", "resume", "data_digest", "report_to", "logging_dir", "hints", "first_step", "checkpoint_at"}


def _section(cls: type[_Config], name: str) -> type[_Config]:
    """A typed `[section]` of a run config: the stage config's fields less those the run sets."""
    fields = {k: (f.annotation, f) for k, f in cls.model_fields.items() if k not in _RUN_KEYS}
    return create_model(name, __base__=_Config, __doc__=f"The [{name}] keys of a run: {cls.__name__} less the run's own.",
                        **fields)


ExpandSection = _section(ExpandConfig, "ExpandSection")
TrainSection = _section(TrainConfig, "TrainSection")
EvalSection = _section(EvalConfig, "EvalSection")
RLSection = _section(RLConfig, "RLSection")
HintSection = _section(HintConfig, "HintSection")


def section_values(section: BaseModel) -> dict[str, Any]:
    """The keys a run config's section set explicitly (the stage's defaults stand for the rest)."""
    return section.model_dump(exclude_unset=True)


class EvalSplit(_Config):
    """One evaluation split of a run with settings of its own (e.g. more samples on a fixed subset)."""

    data: str = Field(..., description="Problems JSONL, bundled split name, or Hub set (aime-2025, hub:owner/name).")
    name: str | None = Field(None, description="Its name in the run (eval directory, tables); default: the data's.")
    n: int | None = Field(None, ge=1, description="Samples per problem (default: the [eval] section's).")
    k: list[int] | None = Field(None, description="The k of pass@k (default: the [eval] section's, else powers of two).")
    limit: int | None = Field(None, ge=1, description="Use only the first N problems (default: the [eval] section's).")
    methods: list[str] | None = Field(None, description="Only these of the run's methods are evaluated here "
                                                        "(default: every one).")

    @property
    def label(self) -> str:
        """The split's name in the run."""
        from ..rundir import split_name

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
    train_data: str = Field(..., description="Problems with expert solutions (JSONL, bundled split name, or Hub set).")
    eval_data: list[str | EvalSplit] = Field(..., min_length=1, description="Evaluation splits: JSONL paths or bundled "
                                             "split names, or tables {data, name, n, k, limit, methods} with settings of their "
                                             "own.")
    methods: list[Literal["base", "sft-expert", "star", "psd-nll", "dail-nll", "dail", "oracle-sft", "rft",
                          "oracle-prompt", "grpo", "nurl", "rlvr"]] = Field(
        default_factory=lambda: ["base", "sft-expert", "dail"],
        description="Methods to train and evaluate: base (no training), sft-expert (NLL on the expert solutions), "
                    "star (NLL on rationalizations: privileged-only traces from the final answer alone), psd-nll "
                    "(NLL on privileged-only traces from the full solution), dail-nll (NLL on the mixed traces), "
                    "dail (the contrastive objective on the mixed traces); controls: oracle-sft (NLL on each "
                    "problem's full_solution: the ceiling of imitation), rft (NLL on the base model's own correct "
                    "samples from selection: rejection-sampling fine-tuning), oracle-prompt (the base model "
                    "evaluated with the expert solution in its prompt: an upper bound, not a method); reinforcement "
                    "learning: grpo (online GRPO on the training problems), nurl (GRPO, then after nurl_from batches "
                    "with NuRL's hinted re-rolls of all-fail groups; needs grpo), rlvr (GRPO on rlvr_data, an "
                    "easier set).")
    rlvr_data: str | None = Field(None, description="rlvr: its training problems (with answers), an easier set than "
                                                    "train_data (the paper's DeepScaleR; on the test-bed: testbed-easy).")
    rlvr_steps: int | None = Field(None, ge=1, description="rlvr: its rollout batches; default rl.steps. A batch of "
                                                          "easier problems samples shorter answers, so matching "
                                                          "another method's compute may take more batches.")
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
    report_to: list[str] = Field(
        default_factory=list, description="Experiment trackers, by accelerate's names (tensorboard, wandb, ...): every "
                                          "trained method's steps, and the run's pass@k once its evaluations are in.")
    data_digests: dict[str, str] = Field(default_factory=dict, description="Set by the run, not by you: a digest of "
                                         "each data file's content, so that a rerun over other data at the same path "
                                         "is refused.")
    expand: ExpandSection = Field(default_factory=ExpandSection, description="ExpandConfig keys (n, tau, sampling, batch_size, limit, ...).")
    train: TrainSection = Field(default_factory=TrainSection, description="TrainConfig keys shared by every trained method (epochs, lr, lora, ...).")
    eval: EvalSection = Field(default_factory=EvalSection, description="EvalConfig keys (n, k, sampling, budgets, batch_size, limit, ...).")
    rl: RLSection = Field(default_factory=RLSection, description="RLConfig keys shared by grpo, nurl and rlvr (steps, "
                                                                 "group_size, lr, lora, ...).")
    nurl_from: int | None = Field(None, ge=1, description="nurl: the rollout batch its hinted stage starts after "
                                                          "(grpo's checkpoint there); default: half of rl.steps.")
    hints: HintSection = Field(default_factory=HintSection, description="HintConfig keys of nurl's hints (mode, "
                                                                         "attempts, sampling, ...).")

    @field_validator("report_to")
    @classmethod
    def _trackers(cls, v: list[str]) -> list[str]:
        from ..trackers import check_names

        return check_names(v)

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
    def _rl_methods(self) -> RunConfig:
        if "rlvr" in self.methods and self.rlvr_data is None:
            raise ValueError("method rlvr trains on rlvr_data: name its (easier) problems")
        if "nurl" in self.methods and "grpo" not in self.methods:
            raise ValueError("method nurl continues grpo's run after nurl_from rollout batches: add grpo to methods")
        if "nurl" in self.methods and not 1 <= self.nurl_switch() < self.rl_steps():
            raise ValueError(f"nurl_from: {self.nurl_switch()} must be at least 1 and below rl.steps "
                             f"({self.rl_steps()}): nurl needs a grpo stage before its hinted one")
        return self

    def rl_steps(self) -> int:
        """The rollout batches of each RL method."""
        return self.rl.steps if "steps" in self.rl.model_fields_set else RLConfig.model_fields["steps"].default

    def nurl_switch(self) -> int:
        """The rollout batch after which nurl's hinted stage takes over from grpo."""
        return self.nurl_from if self.nurl_from is not None else self.rl_steps() // 2

    @model_validator(mode="after")
    def _sections(self) -> RunConfig:
        run_keys = {"model": self.model, "seed": self.seed, "device": self.device, "dtype": self.dtype}
        # The sections' own fields are typed; this catches what only the whole stage config checks (k <= n).
        _check_section(ExpandConfig, "expand", section_values(self.expand), {**run_keys, "data": "-", "out": "-"})
        _check_section(TrainConfig, "train", section_values(self.train), {**run_keys, "problems": "-", "out": "-"})
        _check_section(EvalConfig, "eval", section_values(self.eval), {**run_keys, "data": "-", "out": "-"})
        _check_section(RLConfig, "rl", section_values(self.rl), {**run_keys, "data": "-", "out": "-"})
        _check_section(HintConfig, "hints", section_values(self.hints), {**run_keys, "data": "-", "out": "-"})
        return self
