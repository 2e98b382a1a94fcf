"""The methods and controls of a run: what each trains on, with which objective or stage, under which prompt.

`dail.pipeline` runs them; `dail.results` and `dail.study` read their outputs back by these tables.
"""

from __future__ import annotations

from typing import Any

from .roles import Role
from .rundir import RunDir

__all__ = ["TRAINED", "SOLUTION_TRAINED", "RL_TRAINED", "EVAL_ROLE", "EXPANSIONS"]

# method -> (traces it trains on, objective); "base" trains nothing.
TRAINED: dict[str, tuple[str | None, str]] = {
    "sft-expert": (None, "sft-expert"),
    "star": (RunDir.STAR, "nll"),
    "psd-nll": (RunDir.PSD, "nll"),
    "dail-nll": (RunDir.MIXED, "nll"),
    "dail": (RunDir.MIXED, "contrastive"),
    "oracle-sft": (None, "sft-expert"),  # on solutions-oracle-sft.jsonl: each problem's full_solution
    "rft": (None, "sft-expert"),  # on solutions-rft.jsonl: the base model's correct samples from select
}
SOLUTION_TRAINED = ("oracle-sft", "rft")  # trained on a problems file of their own (RunDir.solutions)
RL_TRAINED = ("grpo", "nurl", "rlvr")  # trained by `dail rl` on rollouts of their own (nurl: grpo's, then hinted)
EVAL_ROLE = {"oracle-prompt": Role.PRIVILEGED}  # evaluated without training, under another prompt

# traces file -> how its expansion differs from the run's [expand] settings.
#   traces.jsonl      the mixed rollout (DAIL)
#   traces-psd.jsonl  privileged self-distillation: every token the privileged student's (tau >= 1)
#   traces-star.jsonl STaR's rationalization: the privileged prompt holds only the final answer, every
#                     token the privileged student's, correct ones kept (Zelikman et al. 2022; the
#                     authors' answer_only option)
EXPANSIONS: dict[str, dict[str, Any]] = {
    RunDir.MIXED: {},
    RunDir.PSD: {"rule": "threshold", "tau": 1.0},
    RunDir.STAR: {"rule": "threshold", "tau": 1.0, "privileged_view": "answer"},
    # to look at, not to train on: the negative reference's own rollouts of the first problem
    RunDir.NEGATIVE: {"rule": "threshold", "tau": 1.0, "privileged_view": "waypoints", "limit": 1,
                              "keep": "all-correct"},
}
