"""How a seed becomes randomness: every derived random stream of the package is made here.

Three ways live here, each for its kind of consumer:

* `rng(*parts)`: a `random.Random` seeded by the text of `parts` joined with `:` (`random` hashes a
  string seed with SHA-512: stable across runs, platforms and Python versions). Streams named apart
  are independent and each is reproducible from its name alone, so drawing more from one never moves
  another: the test-bed's tokenizer, corpus, tables and splits, each arith problem, and the option
  order of an imported multiple-choice row.
* `torch_generator(seed)`: a CPU `torch.Generator` for torch's own samplers (`randperm` of the step
  plan), which take a generator and leave the global one alone.
* `seed_torch(seed)` and `step_seed(seed, step, rank)`: torch's global generator, which weight
  initialisation and dropout draw from. A training step reseeds it from a digest of (seed, step,
  rank), so a resumed run draws what an uninterrupted one did and no two processes draw alike.

The fourth way is not here: the sampler's counter-based stream (`dail.sampling.row_key`, splitmix64
in int64 tensor arithmetic). It is part of the sampler's spec: a token's uniform is a pure function of
(seed, problem, sample, stage, step, draw), computed on the device inside captured graphs with no
generator state, so that tokens do not depend on batching or process count. It stays beside the code
it defines.

Every value made here is fixed for good: shipped files and recorded runs are reproduced from them.
torch is imported only inside the functions that need it (`dail --help` imports no torch).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

__all__ = ["rng", "seed_torch", "step_seed", "torch_generator"]


def rng(*parts: object) -> random.Random:
    """A `random.Random` seeded by the text of `parts` joined with ':' (`rng(0, "corpus")` seeds with "0:corpus")."""
    # Always a string seed: an int seed would take another path in `random` and give other draws.
    return random.Random(":".join(map(str, parts)))


def torch_generator(seed: int) -> Any:
    """A CPU `torch.Generator` seeded with `seed`."""
    import torch

    return torch.Generator().manual_seed(seed)


def seed_torch(seed: int) -> None:
    """Seed torch's global generator (weight initialisation, dropout) with `seed`."""
    import torch

    torch.manual_seed(seed)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The global torch seed of optimizer step `step` on process `rank`: 63 bits of a blake2b digest."""
    digest = hashlib.blake2b(f"{seed}:{step}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
