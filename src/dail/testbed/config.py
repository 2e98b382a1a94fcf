"""The test-bed build's settings: `BuildConfig` (task, splits, writing rates, model, pretraining) and the
pretraining phases it implies."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, model_validator

from dail.config import StrictConfig

__all__ = ["BuildConfig", "Phase", "phases"]


class BuildConfig(StrictConfig):
    """Sizes of the test-bed: task, splits, how each role writes, model and pretraining."""

    seed: int = Field(0, description="Seed of the splits, the corpus and the weights.")
    learner_steps: tuple[int, int] = Field((1, 16), description="Chain lengths of learner documents: they cover "
                                           "the hard lengths, so the learner prompt is no handicap on routine steps.")
    reference_steps: tuple[int, int] = Field((1, 16), description="Chain lengths of documents with a reference in the prompt.")
    doc_hidden: tuple[int, int] = Field((0, 3), description="Function steps per pretraining document, each "
                                        "document with its own random tables.")
    end_on_function: float = Field(0.0, ge=0, le=1, description="Share of pretraining documents whose function "
                                   "steps may fall on the last step, as they do in the hard splits. At 0 (the "
                                   "shipped build) no document ends on one and rollouts of such problems "
                                   "sometimes run past the last step.")
    swap: float = Field(0.1, ge=0, le=1, description="Share of pretraining steps that swap the registers "
                                                     "(the train/val/test splits have none; the ood split has them).")
    hard_steps: tuple[int, int] = Field((8, 14), description="Chain lengths of the train/val/test/ood splits.")
    hidden: tuple[int, int] = Field((2, 2), description="Function steps per problem of the train/val/test splits, "
                                    "each reaching the answer through copies alone (one set of tables for all of "
                                    "them). At most 2: the answer holds two registers. With one fact a base "
                                    "model's 16 guesses find it 87% of the time; with two, about 13%.")
    easy_steps: tuple[int, int] = Field((3, 8), description="Chain lengths of the easy split (no function steps).")
    ood_swap: float = Field(0.25, ge=0, le=1, description="Share of swap steps in the ood split (at least one per "
                                                          "problem, no function steps): an operation no training problem uses.")
    every: tuple[int, int] = Field((2, 4), description="The expert solution names the state after every k-th step, k in this range.")
    learner_early: float = Field(0.02, ge=0, le=1, description="Per line, the rate at which a learner document answers "
                                                               "early with the state so far (a wrong shortcut of its own).")
    privileged_jump: float = Field(0.1, ge=0, le=1, description="Per line with a named state two or more steps ahead, "
                                                                "the rate at which a privileged document jumps to it.")
    negative_early: float = Field(0.5, ge=0, le=1, description="Per line, the rate at which a negative document "
                                                               "answers early with the hint's answer.")
    negative_jump: float = Field(0.5, ge=0, le=1, description="Per line with a hint checkpoint two or more steps "
                                                              "ahead, the rate at which a negative document jumps to it.")
    reference_share: float = Field(0.4, ge=0, le=1, description="Share of documents with a reference in the prompt.")
    curriculum: float = Field(0.4, ge=0, le=1, description="Share of phase 1 over which the longest chain grows "
                                                          "from 3 steps to its full length (0: no curriculum).")
    split_sizes: dict[str, int] = Field(
        default_factory=lambda: {"train": 400, "val": 200, "test": 500, "easy": 200, "ood": 200},
        description="Problems per split.")
    vocab_size: int = Field(512, ge=300, description="BPE vocabulary size (special tokens and bytes included).")
    tokenizer_docs: int = Field(2000, ge=10, description="Documents the tokenizer is trained on.")
    hidden_size: int = Field(128, ge=16)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    intermediate_size: int = Field(512, ge=16)
    max_positions: int = Field(1024, ge=64, description="Context length of the model.")
    tie_embeddings: bool = Field(False, description="Tie input and output embeddings. Tied, '+' and '-' stayed "
                                                    "near-identical (cosine 0.99) through a whole build: as "
                                                    "targets they are 50/50, and the output gradient held them together.")
    steps: int = Field(1200, ge=1, description="Optimizer steps of phase 1.")
    batch_size: int = Field(32, ge=1, description="Documents per step.")
    lr: float = Field(1e-3, gt=0)
    warmup: int = Field(100, ge=0)
    phase2_steps: int = Field(400, ge=0, description="Steps of the second phase: a fresh AdamW from phase 1's "
                                                      "weights, long documents only, its own corpus stream.")
    phase2_lr: float = Field(5e-4, gt=0, description="Peak learning rate of phase 2 (50 warm-up steps, cosine to 10%).")
    phase2_reference_share: float = Field(0.5, ge=0, le=1, description="Share of reference documents in phase 2.")
    phase2_steps_range: tuple[int, int] = Field((6, 16), description="Chain lengths of phase 2's documents (both "
                                                "kinds): long chains are where per-line accuracy is lost.")
    threads: int = Field(2, ge=1, description="torch threads (the weights depend on it only through rounding).")

    @model_validator(mode="after")
    def _facts_fit(self) -> BuildConfig:
        if not 1 <= self.hidden[0] <= self.hidden[1] <= 2:
            raise ValueError(f"hidden must lie in 1..2 (low <= high), got {list(self.hidden)}: the answer holds two "
                             "registers, so at most two independent facts can reach it")
        return self


@dataclass(frozen=True)
class Phase:
    """One phase of pretraining: its own optimizer, schedule and corpus stream."""

    number: int
    steps: int
    lr: float
    warmup: int
    curriculum: float
    reference_share: float
    corpus: str  # the corpus stream's seed string
    lengths: tuple[int, int] | None = None  # None: the config's, per kind of document


def phases(cfg: BuildConfig) -> list[Phase]:
    """Phase 1 (curriculum, then every length), phase 2 (a fresh optimizer, long documents, more references)."""
    out = [Phase(1, cfg.steps, cfg.lr, cfg.warmup, cfg.curriculum, cfg.reference_share, f"{cfg.seed}:corpus")]
    if cfg.phase2_steps:
        out.append(Phase(2, cfg.phase2_steps, cfg.phase2_lr, min(50, cfg.phase2_steps), 0.0,
                         cfg.phase2_reference_share, f"{cfg.seed}:corpus:2", cfg.phase2_steps_range))
    return out
