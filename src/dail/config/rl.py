"""The config of `dail rl`: online GRPO with LoRA, and NuRL's hinted re-rolls of groups that all fail."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .stages import DATA_SPEC, PromptConfig, SamplingConfig, ModelStage, AdapterStage

__all__ = ["RLSampling", "RLConfig", "HintConfig"]


class RLSampling(SamplingConfig):
    """Rollout sampling: the policy's own distribution (temperature 1, no truncation), as GRPO assumes."""

    temperature: float = Field(1.0, gt=0, description="Softmax temperature (> 0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus mass in (0, 1]; 1 disables.")
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens; 0 disables.")
    max_new_tokens: int = Field(1024, ge=1, description="Length limit of a rollout.")


class RLConfig(AdapterStage):
    """`dail rl`: online GRPO with a LoRA adapter; rollouts on the engine, rewards from grading."""

    data: str = Field(..., description=f"Training problems JSONL (with answers), {DATA_SPEC}.")
    data_digest: str | None = Field(None, description="Set by the stage, not by you: a digest of the data the rollouts "
                                                      "came from, checked on resume.")
    adapter: str | None = Field(None, description="Start from this LoRA adapter (trained further) instead of a fresh one.")
    steps: int = Field(100, ge=1, description="Rollout batches; each gives `updates_per_batch` optimizer steps.")
    problems_per_step: int = Field(8, ge=1, description="Problems in a rollout batch (a seeded shuffle per epoch).")
    group_size: int = Field(8, ge=2, description="Rollouts per problem (G): the group whose rewards are normalised.")
    updates_per_batch: int = Field(1, ge=1, description="Optimizer steps per rollout batch (1: on-policy, ratio 1).")
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clip range of the probability ratio.")
    kl_coef: float = Field(0.0, ge=0, description="Weight of the k3 KL to the base (adapter disabled); 0 skips it.")
    scale_rewards: bool = Field(True, description="Divide advantages by the group's standard deviation (False: Dr. GRPO).")
    sampling: RLSampling = Field(default_factory=RLSampling, description="The rollout transform and length limit.")
    decode_batch: int = Field(64, ge=1, description="Rollouts decoded together.")
    lr: float = Field(1e-5, gt=0, description="Peak learning rate (AdamW).")
    schedule: Literal["cosine", "linear", "constant"] = Field("constant", description="LR schedule after warm-up.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps spent warming up linearly.")
    save_every: int = Field(10, ge=1, description="Checkpoint every N rollout batches.")
    checkpoint_at: list[int] = Field(default_factory=list, description="Also checkpoint after these rollout batches "
                                                                       "(a later stage starts from one).")
    first_step: int = Field(0, ge=0, description="The index of the first rollout batch: a stage that continues "
                                                 "another's run draws the problems and streams of its later batches.")
    hints: str | None = Field(None, description="NuRL: a hints JSONL (`dail hints`); a group whose rollouts all "
                                                "fail is rolled again with its problem's hint. None: plain GRPO.")
    hint_template: str = Field("{problem}\n\nHint: {hint}", description="NuRL: the problem text of a hinted "
                                                                        "rollout's learner prompt.")

    @model_validator(mode="after")
    def _plain_sampling(self) -> RLConfig:
        # The surrogate's ratio and the rollouts' recorded log-probs are of the raw distribution: a
        # truncated or tempered sampler would make the first update off-policy without saying so.
        s = self.sampling
        if (s.temperature, s.top_p, s.top_k) != (1.0, 1.0, 0):
            raise ValueError("sampling: GRPO samples the policy itself (temperature 1, top_p 1, top_k 0)")
        return self

    @field_validator("hint_template")
    @classmethod
    def _fields_of_the_hint(cls, v: str) -> str:
        import string

        names = {name for _, name, _, _ in string.Formatter().parse(v) if name is not None}
        if names != {"problem", "hint"}:
            raise ValueError(f"hint_template: must hold {{problem}} and {{hint}} and no other field, not {sorted(names)}")
        return v


class HintConfig(ModelStage):
    """`dail hints`: NuRL's self-hints, written offline by the model from each problem and its final answer."""

    data: str = Field(..., description=f"Problems JSONL (with answers), {DATA_SPEC}.")
    data_digest: str | None = Field(None, description="Set by the stage, not by you: a digest of the data.")
    out: str = Field(..., description="Hints JSONL (append-only; a rerun resumes).")
    mode: Literal["abstract", "partial"] = Field(
        "abstract", description="abstract: the model's answer to the `hint` prompt (NuRL's self-hint); partial: the "
                                "first `partial_lines` lines of its answer to the `rationalize` prompt (partial steps, "
                                "for a model that follows no instruction, such as the test-bed's).")
    partial_lines: int = Field(2, ge=1, description="partial: lines of the rationalization a hint keeps.")
    attempts: int = Field(2, ge=1, description="Hints drawn per problem; the first that does not leak the answer is used.")
    sampling: RLSampling = Field(default_factory=lambda: RLSampling(max_new_tokens=256),
                                 description="The hint's sampling and length limit.")
    batch_size: int = Field(32, ge=1, description="Hints decoded together.")
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    limit: int | None = Field(None, ge=1, description="Use only the first N problems.")
