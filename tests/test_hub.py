"""Hub sets: each known set's published format, mapped through the real code path from a hub cache
written here (made-up rows), with the network off; errors for gated, missing and unknown sets."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dail.data import DataError, Problem, read_problems
from dail.datasets import resolve_problems
from dail.datasets.hub import KNOWN, import_set, is_hub_spec, parse_spec
from dail.grading import last_boxed, problem_kind
from dail.rundir import data_digest, data_revision

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache and datasets cache under tmp, offline, and no socket may connect."""
    import datasets.config
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read once at import: set where it is read
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a test reached for the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    import_set.cache_clear()  # each test publishes its own snapshots
    yield cache
    import_set.cache_clear()


def publish(cache: Path, repo: str, files: dict[str, object], sha: str = SHA) -> Path:
    """Write `files` as the cached snapshot `sha` of dataset `repo`, the layout huggingface_hub keeps."""
    root = cache / f"datasets--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(sha)
    snap = root / "snapshots" / sha
    for name, content in files.items():
        path = snap / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(content), path)
        elif name.endswith(".jsonl"):
            path.write_text("".join(json.dumps(r) + "\n" for r in content))
        else:
            path.write_text(content)
    return snap


def verl_row(index: int, question: str, truth: str) -> dict:
    """One row of the authors' verl-style evaluation copies."""
    return {"data_source": "x", "ability": "math", "extra_info": {"index": index, "split": "test"},
            "prompt": [{"role": "user", "content": question + " Let's think step by step and output the final "
                                                              "answer within \\boxed{}."}],
            "reward_model": {"ground_truth": truth, "style": "rule"}}


def test_the_verl_copies_give_the_user_turn_without_its_instruction_and_the_ground_truth(hub_cache):
    publish(hub_cache, "emendes3/aime_2025", {"test.parquet": [verl_row(7, "Find $x$ if $x+1=3$.", "2"),
                                                               verl_row(9, "Compute $2^{10}$.", "1024")]})
    got = import_set("aime-2025")
    assert got.revision == SHA and got.repo == "emendes3/aime_2025" and got.dropped == {}
    assert [(p.id, p.problem, p.answer) for p in got.problems] == [
        ("aime_2025-7", "Find $x$ if $x+1=3$.", "2"), ("aime_2025-9", "Compute $2^{10}$.", "1024")]
    assert all(problem_kind(p) == "integer" for p in got.problems)


def test_imo_answerbench_is_graded_as_math_even_where_an_answer_looks_like_an_integer(hub_cache):
    publish(hub_cache, "emendes3/imo_answer", {"test.parquet": [verl_row(0, "Find n.", "3"),
                                                                verl_row(1, "Find f.", "f(x)=x^2")]})
    problems = import_set("imo-answerbench").problems
    assert [problem_kind(p) for p in problems] == ["math", "math"]


def test_e1_answers_are_the_last_box_with_nested_braces_and_eval_years_are_held_out(hub_cache):
    rows = [
        {"problem_id": "hmmt-2019-3", "problem": "P1", "solution": "First \\boxed{1}, then \\boxed{\\frac{1}{2}}."},
        {"problem_id": "aime-2024-I-5", "problem": "P2", "solution": "\\boxed{5}"},   # an evaluation year
        {"problem_id": "usamo-2010-1", "problem": "P3", "solution": "no box here"},
        {"problem_id": "putnam-2001-2", "problem": "P4", "solution": "so \\boxed{\\{1, 2\\}}"},
    ]
    publish(hub_cache, "emendes3/e1-verifiable", {"train.jsonl": rows})
    got = import_set("e1-verifiable")
    assert [(p.id, p.answer) for p in got.problems] == [("hmmt-2019-3", "\\frac{1}{2}"), ("putnam-2001-2", "\\{1, 2\\}")]
    assert got.dropped == {"held_out_year": 1, "no_boxed_answer": 1}
    assert got.problems[0].solution == rows[0]["solution"] and problem_kind(got.problems[0]) == "math"


def test_proofs_carry_no_answer_and_are_never_graded(hub_cache):
    publish(hub_cache, "emendes3/e1-proof", {"train.jsonl": [
        {"problem_id": "imo-2001-1", "problem": "Prove it.", "solution": "Suppose not. ... \\boxed{QED}"}]})
    (p,) = import_set("e1-proof").problems
    assert p.answer is None and not p.verifiable and p.meta["proof"] is True and problem_kind(p) is None


def test_gpqa_shuffles_choices_by_a_recorded_seed_and_the_letter_names_the_correct_option(hub_cache):
    header = "Record ID,Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3,Explanation\n"
    body = "".join(f"rec{i},Q{i}?,right{i},wrong{i}a,wrong{i}b,wrong{i}c,because {i}\n" for i in range(12))
    publish(hub_cache, "Idavidrein/gpqa", {"gpqa_diamond.csv": header + body, "gpqa_main.csv": header})
    first = import_set("gpqa-diamond").problems
    assert len(first) == 12
    for i, p in enumerate(first):
        assert p.id == f"rec{i}" and p.problem == f"Q{i}?" and sorted(p.choices) == sorted(
            [f"right{i}", f"wrong{i}a", f"wrong{i}b", f"wrong{i}c"])
        assert p.choices["ABCD".index(p.answer)] == f"right{i}"
        assert p.meta["shuffle_seed"] == 0 and [p.choices[k] for k in range(4)] == [
            [f"right{i}", f"wrong{i}a", f"wrong{i}b", f"wrong{i}c"][j] for j in p.meta["order"]]
        assert problem_kind(p) == "choice"
    assert len({p.answer for p in first}) > 1  # the correct option does not always sit first
    assert [p.choices for p in import_set("gpqa-diamond").problems] == [p.choices for p in first]


def test_a_set_the_project_does_not_know_maps_by_the_query_of_its_spec(hub_cache):
    publish(hub_cache, "someone/puzzles", {"data/test.jsonl": [{"question": "Q?", "final": "12", "key": "a"}],
                                           "data/train.jsonl": [{"question": "T?", "final": "1", "key": "b"}]})
    spec = "hub:someone/puzzles@test?id=key&problem=question&answer=final&type=math"
    (p,) = resolve_problems(spec)
    assert (p.id, p.problem, p.answer, problem_kind(p)) == ("a", "Q?", "12", "math")
    with pytest.raises(DataError, match="has splits .*; name one with @SPLIT"):
        import_set("hub:someone/puzzles")
    with pytest.raises(DataError, match="field 'prompt': unknown mapping key"):
        parse_spec("hub:someone/puzzles@test?prompt=question")
    with pytest.raises(DataError, match="@test:1: field 'problem': no such column"):
        import_set("hub:someone/puzzles@test")


def test_a_run_resolves_a_hub_name_like_a_file_its_digest_is_the_content_and_the_commit_is_recorded(hub_cache, tmp_path):
    publish(hub_cache, "MathArena/aime_2025", {"train.jsonl": [{"problem_idx": 1, "problem": "P", "answer": 70}]})
    assert is_hub_spec("aime-2025-matharena") and not is_hub_spec("testbed-test")
    (p,) = resolve_problems("aime-2025-matharena")
    assert (p.id, p.answer) == ("1", "70")
    digest = data_digest("aime-2025-matharena")
    assert digest.startswith("hub:MathArena/aime_2025:") and data_revision("aime-2025-matharena") == f"MathArena/aime_2025@{SHA}"
    publish(hub_cache, "MathArena/aime_2025", {"train.jsonl": [{"problem_idx": 1, "problem": "P", "answer": 70}],
                                               "README.md": "card edited"}, sha="e" * 40)
    import_set.cache_clear()
    assert data_digest("aime-2025-matharena") == digest  # a commit that leaves the rows alone blocks no resume
    publish(hub_cache, "MathArena/aime_2025", {"train.jsonl": [{"problem_idx": 1, "problem": "P", "answer": 71}]},
            sha="f" * 40)
    import_set.cache_clear()  # a new process: the new revision and its content
    assert data_revision("aime-2025-matharena") == f"MathArena/aime_2025@{'f' * 40}"
    assert data_digest("aime-2025-matharena") != digest  # the content moved, so a resume would refuse


def test_a_set_missing_from_the_cache_offline_is_one_clear_error():
    with pytest.raises(DataError, match="not in the hub cache.*HF_HUB_OFFLINE.*dail data import beyond-aime"):
        import_set("beyond-aime")
    with pytest.raises(DataError, match="neither a bundled split.*hub set.*nor a file"):
        resolve_problems("no-such-set")


def test_a_gated_set_without_a_token_names_the_login(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        from types import SimpleNamespace

        raise GatedRepoError("403 gated", response=SimpleNamespace(headers={}, request=None, status_code=403))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(DataError, match="gated.*huggingface-cli login.*HF_TOKEN"):
        import_set("gpqa-diamond")


def test_data_import_writes_the_problems_and_fails_in_one_line(hub_cache, tmp_path):
    from dail.cli import app

    publish(hub_cache, "emendes3/beyond_aime", {"test.parquet": [verl_row(3, "Q", "5")]})
    out = tmp_path / "beyond.jsonl"
    res = CliRunner().invoke(app, ["data", "import", "beyond-aime", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert SHA in res.output and [p.id for p in read_problems(out)] == ["beyond_aime-3"]
    res = CliRunner().invoke(app, ["data", "import", "aime-2024"])
    assert res.exit_code == 1 and "Traceback" not in res.output and "not in the hub cache" in res.output


def test_every_known_set_is_described_for_the_readme_table():
    for name, hub in KNOWN.items():
        assert hub.purpose and "/" in hub.repo, name
        assert hub.answer_type in (None, "integer", "math", "choice")


def test_last_boxed_reads_boxes_only_and_keeps_nested_braces():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert last_boxed("The answer is 5.") is None
    assert last_boxed("\\boxed{unclosed") is None


def test_a_declared_answer_type_must_be_a_known_one(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "x", "problem": "q", "answer": "3", "meta": {"answer_type": "number"}}) + "\n")
    with pytest.raises(DataError, match=r"p.jsonl:1: field 'meta': .*answer_type 'number' is not one of"):
        read_problems(path)
    assert problem_kind(Problem(id="y", problem="q", answer="3")) == "integer"


def test_a_misspelt_column_a_duplicate_id_and_a_bad_config_are_one_clear_error(hub_cache):
    publish(hub_cache, "someone/dups", {"test.jsonl": [{"problem": "A", "answer": "1", "id": "same"},
                                                       {"problem": "B", "answer": "2", "id": "same"},
                                                       {"problem": "", "answer": "3", "id": "other"}]})
    with pytest.raises(DataError, match="finall:1: field 'finall': no such column"):
        import_set("hub:someone/dups@test?answer=finall")
    with pytest.raises(DataError, match="@test:2: field 'id': duplicate id 'same'"):
        import_set("hub:someone/dups@test")
    got = import_set("hub:someone/dups@test?id=answer")
    assert [p.id for p in got.problems] == ["1", "2"] and got.dropped == {"empty_problem": 1}
    with pytest.raises(DataError, match="someone/dups@"):
        import_set("hub:someone/dups:no-such-config@test")


def test_imo_answerbench_from_its_published_csv(tmp_path, monkeypatch):
    import dataclasses

    from dail.datasets import hub

    csv = tmp_path / "answerbench.csv"
    csv.write_text('Problem ID,Problem,Short Answer,Category\n'
                   'imo-bench-algebra-001,"Find all $f$, with commas, in one cell.",$f(x)=x$,Algebra\n'
                   'imo-bench-nt-002,Find $n$.,3,Number theory\n')
    # The same reading path as the published URL, pointed at a local copy.
    monkeypatch.setitem(hub.KNOWN, "imo-answerbench-gdm", dataclasses.replace(hub.KNOWN["imo-answerbench-gdm"],
                                                                              url=str(csv)))
    got = import_set("imo-answerbench-gdm")
    assert [(p.id, p.problem, p.answer, problem_kind(p)) for p in got.problems] == [
        ("imo-bench-algebra-001", "Find all $f$, with commas, in one cell.", "$f(x)=x$", "math"),
        ("imo-bench-nt-002", "Find $n$.", "3", "math")]
    assert got.revision.startswith("content-") and got.repo == "google-deepmind/superhuman"


def test_a_file_outside_the_hub_missing_offline_is_one_clear_error():
    with pytest.raises(DataError, match="answerbench.csv: could not read it.*dail data import imo-answerbench-gdm"):
        import_set("imo-answerbench-gdm")
