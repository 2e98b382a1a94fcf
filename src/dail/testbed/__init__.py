"""The test-bed: a task, a model trained from scratch on it, and splits, where DAIL's premise can be tested in minutes.

`task` defines the problems (two registers, a chain of labelled steps that set, copy or apply the unstated F, didactic expert
solutions that skip steps); `build` trains the tokenizer and model and writes the splits
(`dail testbed build`). A copy built with the default `BuildConfig` ships in `SHIPPED`: the model
is the alias `testbed` and the splits are `testbed-train`, `testbed-val`, `testbed-test` and
`testbed-easy`, so `make demo` needs no build. `SHIPPED/build.json` records the config, the code
version and the sha256 of every file that build wrote.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED", "split_files"]

SHIPPED = Path(__file__).parent / "shipped"


def split_files(root: Path) -> dict[str, Path]:
    """`testbed-NAME` -> `root/data/NAME.jsonl` for each split a build wrote under `root`."""
    data = root / "data"
    return {f"testbed-{p.stem}": p for p in sorted(data.glob("*.jsonl"))} if data.is_dir() else {}
