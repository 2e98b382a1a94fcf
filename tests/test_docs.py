"""The layout the docs describe is the package's: every module listed once, no module missing or gone."""

from __future__ import annotations

import re
from pathlib import Path

import dail

ROOT = Path(dail.__file__).parent
REPO = ROOT.parent.parent


def _modules() -> set[str]:
    """The package's own modules and subpackages at the top level, as the docs name them."""
    names = {p.name for p in ROOT.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    return names | {p.name + "/" for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}


def test_the_readme_architecture_lists_every_module_and_no_other():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Architecture", 1)[1].split("```", 2)[1]
    listed = re.findall(r"^  (\S+\.py|\S+/)\s", block, flags=re.M)
    assert sorted(listed) == sorted(set(listed)), "a module is listed twice"
    assert set(listed) == _modules()


def test_the_layout_doc_lists_every_module_and_no_other():
    text = (REPO / "docs" / "layout.md").read_text(encoding="utf-8")
    table = text.split("## `src/dail/`", 1)[1].split("\n## ", 1)[0]
    listed = {m for m in re.findall(r"^\| `([^`]+)` \|", table, flags=re.M) if m not in ("__init__.py", "__main__.py")}
    subpackages = {m + "/" for m in re.findall(r"^## `src/dail/(\w+)/`", text, flags=re.M)}
    assert listed | subpackages == _modules()


def test_readme_tables_are_the_committed_study_json():
    """The README's study tables are what `dail study --readme` writes from docs/testbed/study/study.json."""
    import json

    from dail.study import fill_readme

    text = (REPO / "README.md").read_text(encoding="utf-8")
    summary = json.loads((REPO / "docs" / "testbed" / "study" / "study.json").read_text(encoding="utf-8"))
    assert fill_readme(text, summary) == text


def test_every_readme_table_slot_is_one_the_study_fills():
    """`dail study --readme` fills each slot from study.json; a slot naming no split of the study would fail there."""
    from dail.config import load_config
    from dail.study import StudyConfig

    cfg = load_config(StudyConfig, REPO / "configs" / "testbed-study.toml")
    splits = {s.label for s in cfg.run_config(cfg.seeds[0]).eval_splits()}
    slots = re.findall(r"<!-- study:([\w-]+) -->", (REPO / "README.md").read_text(encoding="utf-8"))
    assert slots and set(slots) <= splits | {"comparisons", "compute"}
    assert {"comparisons", "compute", "testbed-test"} <= set(slots)
