"""The config of each stage: sampling, prompts, LoRA, expand, train, eval, select, waypoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..roles import Role
from .base import DEFAULT_MODEL, _Config, check_device

__all__ = ["SamplingConfig", "ExpandSampling", "EvalSampling", "PromptConfig", "LoraSettings", "WaypointsConfig",
           "ExpandConfig", "TrainConfig", "EvalConfig", "SelectConfig"]


# What a data argument may name, wherever one is taken (`dail.datasets.resolve_problems`).
DATA_SPEC = "a bundled split name (arith-test, testbed-test, ...), or a Hub set (aime-2025, hub:owner/name)"

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
    hint: str = Field(
        "{problem}\n\nThe final answer to this problem is {answer}.\n\n"
        "Write a hint for a student who has not seen the answer: the one idea or fact that unlocks the problem, "
        "in two or three sentences. Do not state the answer, any number it depends on, or the steps of a solution.",
        description="Role `hint` (NuRL's self-hint, `dail hints`): problem + final answer -> an abstract hint "
                    "that must not contain the answer.",
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
        need = {Role.LEARNER: ["{problem}"], Role.PRIVILEGED: ["{problem}", "{solution}"],
                Role.NEGATIVE: ["{problem}", "{waypoints}"], Role.RATIONALIZE: ["{problem}", "{answer}"],
                Role.HINT: ["{problem}", "{answer}"]}
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


class ModelStage(_Config):
    """What every stage that loads a model shares: which model, its dtype, the device, the seed."""

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

    data: str = Field(..., description=f"Problems JSONL, {DATA_SPEC}.")
    out: str = Field(..., description="Output JSONL: the problems with `waypoints` filled in.")
    mode: Literal["hint", "rule"] = Field(
        "hint", description="hint (the authors': final answer + intermediate results found by regex) or rule "
                            "(boxed answer + right-hand sides of key equations); a row's own waypoints win.")


class ExpandConfig(ModelStage):
    """`dail expand`: mixed-policy rollouts of learner and privileged student."""

    data: str = Field(..., description=f"Problems JSONL (with solutions), {DATA_SPEC}.")
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


class AdapterStage(ModelStage):
    """What every stage that trains a LoRA adapter shares: the optimizer, its schedule, the adapter, saving and logging."""

    out: str = Field(..., description="Adapter output directory (checkpoints go under it).")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping norm; None disables.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR schedule after warm-up.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming up linearly.")
    warmup_steps: int | None = Field(None, ge=0, description="Warm-up steps; when set, wins over warmup_ratio (the authors': 5).")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    save_every: int = Field(50, ge=1, description="Checkpoint every N optimizer steps.")
    log_every: int = Field(1, ge=1, description="Log a JSONL line every N optimizer steps.")
    report_to: list[str] = Field(
        default_factory=list, description="Experiment trackers that get each logged step, by accelerate's names "
                                          "(tensorboard, wandb, mlflow, ...; all: every one installed); empty: none.")
    logging_dir: str | None = Field(None, description="Where trackers that write files (TensorBoard) write; "
                                                      "None: OUT/trackers.")
    resume: bool = Field(False, description="Continue from the last checkpoint under `out`.")

    @field_validator("report_to")
    @classmethod
    def _trackers(cls, v: list[str]) -> list[str]:
        from ..trackers import check_names

        return check_names(v)


class TrainConfig(AdapterStage):
    """`dail train`: LoRA fine-tuning of the learner on kept traces."""

    traces: str | None = Field(None, description="Traces JSONL from expand (not needed by sft-expert).")
    problems: str = Field(..., description=f"Problems JSONL (solutions, waypoints), {DATA_SPEC}.")
    objective: Literal["contrastive", "contrastive-target", "nll", "sft-expert"] = Field(
        "contrastive", description="Training objective (docs/method.md, 'Training objectives')."
    )
    epochs: float = Field(2, gt=0, description="Passes over the training rows.")
    batch_size: int = Field(8, ge=1, description="Rows per optimizer step (effective, across processes and accumulation).")
    gamma: float = Field(0.1, ge=0, lt=1, description="contrastive: weight of the negative reference, in [0, 1) "
                                                      "(the authors' cheating_penalty, 0.1).")
    alpha: float = Field(1.0, ge=0, description="contrastive-target: strength of the contrast.")
    beta: float = Field(0.1, gt=0, le=1, description="contrastive-target: plausibility threshold.")
    max_steps: int | None = Field(None, ge=1, description="Stop after N optimizer steps (overrides epochs).")
    kept_only: bool = Field(True, description="Train on traces the filters kept only.")


class EvalConfig(ModelStage):
    """`dail eval`: sample, grade, pass@k and token efficiency."""

    adapter: str | None = Field(None, description="LoRA adapter directory; None evaluates the base model.")
    data: str = Field(..., description=f"Problems JSONL (with answers), {DATA_SPEC}.")
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


class SelectConfig(ModelStage):
    """`dail select`: keep the problems the base model fails in all of n samples."""

    data: str = Field(..., description=f"Candidate problems JSONL, {DATA_SPEC}.")
    out: str = Field(..., description="Selected problems JSONL.")
    n: int = Field(32, ge=1, description="Samples per problem; a problem is kept if none is correct.")
    sampling: EvalSampling = Field(default_factory=EvalSampling, description="The sampling transform and length limit.")
    batch_size: int = Field(32, ge=1, description="Samples decoded together.")
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    limit: int | None = Field(None, ge=1, description="Use only the first N candidates.")
