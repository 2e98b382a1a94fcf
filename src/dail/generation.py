"""What a decode produced per group, and the bookkeeping that assembles it from the engine's host reads.

What it owns. `Generation`: one finished group -- its tokens, the tag `choose` set on each (the
provenance mask: which role's row decided the token and how many learner proposals were rejected
before it, `dail.sampling.tag_source`), the raw log-prob of each token under every row of the group
(learner and privileged in the mixed rollout) and why it ended. `Tally`: which request each batch
group decodes, and the folding of each window the engine reads back (`Workspace.read_window`) into
those requests, yielding each one as it hits EOS or the token limit. Plain Python, no torch.

What it does not do: choose or tag tokens, or hold the thresholds that decide them (the choose
rules of `dail.sampling`); record them on the device (`dail.decode`); read the device or decide
when to (`dail.engine`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["Generation", "Tally"]


@dataclass
class Generation:
    """One finished group: its tokens, their tags (source and rejections), and raw log-probs under each row."""

    index: int  # position of the group in the request list
    token_ids: list[int] = field(default_factory=list)
    source: list[int] = field(default_factory=list)  # choose's tag per token (`dail.sampling.tag_source`)
    logprobs: list[list[float]] = field(default_factory=list)  # [R][T]: log_softmax(raw logits)[token]
    finish: str = "length"  # "eos" | "length"


class Tally:
    """The requests of one decode still running, and which batch group decodes each (`slots`)."""

    def __init__(self, groups: int, rows_per_group: int, max_new_tokens: int, eos: frozenset[int]):
        self.R, self.max_new_tokens, self.eos = rows_per_group, max_new_tokens, eos  # eos: empty when not stopping
        self.running = {i: Generation(i, logprobs=[[] for _ in range(rows_per_group)]) for i in range(groups)}
        self.slots: list[int | None] = list(range(groups))  # request index of each batch group; None: ended

    @property
    def done(self) -> bool:
        """Whether every request has finished."""
        return not self.running

    def read(self, window: list[list[float]], recorded: int, window_start: int) -> Iterator[Generation]:
        """Append a window of `recorded` steps from step `window_start` on (rows as `Workspace.read_window`
        gives them) to the running requests; yield each request that ends in it, as it ends."""
        R = self.R
        for j, record in enumerate(window):
            if self.slots[j] is None:  # a padding group, or one that ended in an earlier window
                continue
            gen = self.running[self.slots[j]]
            for c in range(recorded):
                token = int(record[c])
                gen.token_ids.append(token)
                gen.source.append(int(record[recorded + c]))
                for r in range(R):
                    gen.logprobs[r].append(record[(2 + r) * recorded + c])
                hit = token in self.eos
                if hit or window_start + c + 1 == self.max_new_tokens:
                    # The group ran on unread to the end of its window; its surplus tokens are dropped.
                    gen.finish = "eos" if hit else "length"
                    yield self.running.pop(self.slots[j])
                    self.slots[j] = None
                    break
