"""Problem/trace schemas and JSONL I/O: every defect is one error naming file, line and field."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dail.cli import app
from dail.data import DataError, JsonlAppender, Problem, Trace, read_done_keys, read_problems, read_traces, write_jsonl

GOOD = {"id": "p1", "problem": "What is 2+3?", "solution": "2 + 3 = 5. \\boxed{5}", "answer": "5"}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "lines, line, field, words",
    [
        ([json.dumps(GOOD), '{"id": "p2", "problem": '], 2, None, "invalid JSON"),
        ([json.dumps({"id": "p1"})], 1, "problem", "missing"),
        ([json.dumps({**GOOD, "answer": ["5"]})], 1, "answer", "expected string, got array"),
        ([json.dumps({**GOOD, "problem": 7})], 1, "problem", "expected string, got integer"),
        ([json.dumps(GOOD), json.dumps({**GOOD, "problem": "other"})], 2, "id", "duplicate"),
        ([json.dumps({**GOOD, "problem": "   "})], 1, "problem", "empty"),
        ([json.dumps({**GOOD, "soluton": "x"})], 1, "soluton", "unknown field"),
        ([json.dumps(GOOD), "[1, 2]"], 2, None, "expected a JSON object"),
        ([json.dumps({**GOOD, "choices": "A"})], 1, "choices", "expected list"),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path, lines, line, field, words):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError) as info:
        read_problems(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert words in str(err)
    assert str(err).startswith(f"{path}:{line}: ")


def test_blank_lines_are_skipped_and_integer_answers_become_text(tmp_path):
    path = write_lines(tmp_path / "ok.jsonl", [json.dumps({**GOOD, "answer": 5}), "", json.dumps({**GOOD, "id": "p2"})])
    problems = read_problems(path)
    assert [p.id for p in problems] == ["p1", "p2"]
    assert problems[0].answer == "5" and problems[0].verifiable


def test_problems_round_trip(tmp_path):
    rows = [Problem(**GOOD), Problem(id="q", problem="Pick", choices=["a", "b"], answer="B", meta={"k": [1]})]
    write_jsonl(tmp_path / "p.jsonl", rows)
    assert read_problems(tmp_path / "p.jsonl") == rows


def _trace(**kw):
    base = dict(problem_id="p1", sample=0, seed=0, text="ab", token_ids=[5, 6], source="LP",
                logprob_learner=[-0.1, -2.0], logprob_privileged=[-0.3, -0.2], finish="eos")
    return {**base, **kw}


def test_trace_lengths_must_agree(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(_trace()), json.dumps(_trace(sample=1, source="L"))])
    with pytest.raises(DataError, match=r"t.jsonl:2: .*source has 1 entries for 2 tokens"):
        read_traces(path)
    path = write_lines(tmp_path / "t2.jsonl", [json.dumps(_trace(source="LX"))])
    with pytest.raises(DataError, match="only the letters L and P"):
        read_traces(path)


def test_read_traces_kept_only(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(_trace()), json.dumps(_trace(sample=1, kept=False, reject_reason="leak"))])
    assert len(read_traces(path)) == 1
    assert len(read_traces(path, kept_only=False)) == 2


def test_appender_survives_a_torn_tail(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlAppender(path) as w:
        w.write(Trace(**_trace()))
        w.write(Trace(**_trace(sample=1)))
    # A kill in the middle of a write leaves half a line.
    with path.open("a") as f:
        f.write('{"problem_id": "p1", "sam')
    assert read_done_keys(path) == {("p1", 0), ("p1", 1)}
    with JsonlAppender(path) as w:
        w.write(Trace(**_trace(sample=2)))
    assert [t.sample for t in read_traces(path)] == [0, 1, 2]


def test_cli_validate_summary_and_errors(tmp_path):
    runner = CliRunner()
    good = write_lines(tmp_path / "good.jsonl", [json.dumps(GOOD), json.dumps({"id": "p2", "problem": "No answer"})])
    result = runner.invoke(app, ["data", "validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "rows" in result.output and "50%" in result.output
    bad = write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), json.dumps(GOOD)])
    result = runner.invoke(app, ["data", "validate", str(bad)])
    assert result.exit_code == 1
    assert "bad.jsonl:2" in result.output and "duplicate" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["data", "validate", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 1 and "file not found" in result.output


@pytest.mark.parametrize(
    "content, line, field, words",
    [
        (b"", None, None, "empty file"),
        (b"\n  \n", None, None, "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", 1, None, "not UTF-8"),
        (json.dumps(GOOD).encode() + b"\n" + b"\x00\x01\x02\n", 2, None, "NUL bytes"),
        (b'{"id": "p1", "problem": "x", "id": "p2"}\n', 1, "id", "duplicate key"),
        (json.dumps({**GOOD, "choices": ["1", "2"], "answer": "C"}).encode() + b"\n", 1, "choices", "outside the 2 choices"),
    ],
)
def test_bad_files_are_one_error(tmp_path, content, line, field, words):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_problems(path)
    assert (info.value.line, info.value.field) == (line, field)
    assert words in str(info.value) and str(info.value).startswith(str(path))


def test_a_directory_is_not_a_problems_file(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_problems(tmp_path)


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n")
    assert [p.id for p in read_problems(path)] == ["p1"]


def test_choice_answers_within_the_choices_pass():
    assert Problem(id="q", problem="Pick", choices=["a", "b"], answer="b").answer == "b"
    assert Problem(id="q", problem="Pick", choices=["a", "b"], answer="two").answer == "two"  # not a letter


@pytest.mark.parametrize("kind, make, words", [
    ("file", lambda t: t, "is a directory"),
    ("file", lambda t: (t / "f").touch() or t / "f" / "out.jsonl", "is a file, not a directory"),
    ("dir", lambda t: (t / "f").touch() or t / "f", "is a file, expected an output directory"),
    ("file", lambda t: "/proc/dail-no-such/out.jsonl", "cannot create it"),
])
def test_check_output_refuses_unwritable_paths(tmp_path, kind, make, words):
    from dail.data import check_output

    with pytest.raises(DataError, match=words):
        check_output(make(tmp_path), kind)
    before = sorted(tmp_path.iterdir())
    check_output(tmp_path / "new" / "deeper" / "out.jsonl", "file")
    assert sorted(tmp_path.iterdir()) == before  # the probe leaves nothing behind
