"""dail: Distribution Aligned Imitation Learning for language models.

Stages (one module each): `waypoints`, `expand`, `train`, `evaluate`, `report`; shared pieces:
`data` (schemas, JSONL), `config` (typed configs), `models` (loading, LoRA), `prompts`, `engine`
(batched decoding), `objectives` (losses), `grading` and `metrics` (answers, pass@k).
Submodules are imported on use, so `import dail` stays light.
"""

__version__ = "0.1.0"
