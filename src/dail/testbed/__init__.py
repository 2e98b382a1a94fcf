"""The test-bed: a task, a model trained from scratch on it, and splits, where each part of DAIL has something to do.

`task` defines the problems (two registers, a chain of labelled steps that set, copy, swap or apply
one of three unstated functions; didactic expert solutions; the hint; how each role writes);
`build` trains the tokenizer and model and writes the splits (`dail testbed build`); `probe`
measures the premise (`dail testbed probe`). A copy built with the default `BuildConfig` ships in
`SHIPPED`: the model is the alias `testbed` and the splits are `testbed-train`, `testbed-val`,
`testbed-test`, `testbed-easy` and `testbed-ood`, so `make demo` needs no build.
`SHIPPED/build.json` records the config, the environment, the code version and the sha256 of every
file that build wrote.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED", "split_files"]

SHIPPED = Path(__file__).parent / "shipped"


def split_files(root: Path) -> dict[str, Path]:
    """`testbed-NAME` -> `root/data/NAME.jsonl` for each split a build wrote under `root`."""
    data = root / "data"
    return {f"testbed-{p.stem}": p for p in sorted(data.glob("*.jsonl"))} if data.is_dir() else {}
