"""dail: Distribution Aligned Imitation Learning for language models.

Stages (one module each): `waypoints`, `expand`, `train`, `evaluate`, `report`, run in order by
`pipeline`; shared pieces: `data` (schemas, JSONL), `config` (typed configs), `rundir` (the run
directory's names and log), `models` (loading, LoRA), `prompts`, `sampling` (randomness, transforms,
rollout rules), `engine` (batched decoding), `distributed` (shards and the sharded output), `rows`
and `checkpoint` (training data and state), `objectives` (losses), `grading` and `metrics` (answers,
pass@k), `viewer` (the trace page); `cli` and `ui` are the command line. Submodules are imported on
use, so `import dail` stays light.
"""

__version__ = "0.1.0"
