"""The roles of the method, the one vocabulary every module names them by (no torch here).

A member equals its string (`Role.LEARNER == "learner"`), so configs, prompt templates, rows and
dictionaries keyed by the strings keep working; code names a role by its member.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Role"]


class Role(StrEnum):
    """A role of the method (docs/method.md, "The three roles"); its value is its name in configs.

    A rollout group holds two rows, learner and privileged: `row` is the role's row there (and the
    source bit of an engine tag), `letter` its letter in `Trace.source`, `draw` the draw of its
    sample at a step (`dail.sampling`'s counter layout).
    """

    LEARNER = "learner"
    PRIVILEGED = "privileged"  # the privileged student: sees the full expert solution
    NEGATIVE = "negative"  # the negative reference: sees the waypoints only; scores traces, never samples
    RATIONALIZE = "rationalize"  # not a role of the method: STaR's privileged view (the final answer only)
    HINT = "hint"  # not a role of the method: NuRL's hint writer (the problem and its final answer)

    @property
    def row(self) -> int:
        """The row of the role in a rollout group: learner 0, privileged 1 (rationalize takes the privileged row)."""
        if self in (Role.NEGATIVE, Role.HINT):
            raise ValueError(f"the {self.value} role has no row in a rollout")
        return 0 if self is Role.LEARNER else 1

    @property
    def letter(self) -> str:
        """The letter of the role's tokens in `Trace.source`: "L" or "P"."""
        return "LP"[self.row]

    @property
    def draw(self) -> int:
        """The draw of the role's sample at a step: the learner's first proposal (0), or PRIVILEGED_DRAW."""
        from .sampling import PRIVILEGED_DRAW

        return 0 if self.row == 0 else PRIVILEGED_DRAW
