"""The one crash-safe JSONL store, and the repeated-id rule each of its two clients states."""

from __future__ import annotations

import json

import pytest

from langchain_dod.jsonl_store import JsonlError, JsonlWriter, append_jsonl, read_jsonl, read_records, repair_tail


def _write(path, *lines: str) -> None:
    path.write_text("".join(lines), encoding="utf-8")


def test_a_repeated_id_keeps_the_record_the_caller_names(tmp_path):
    path = tmp_path / "r.jsonl"
    _write(path, '{"id": "a", "v": 1}\n', '{"id": 7, "v": 1}\n', '{"id": "a", "v": 2}\n')
    assert read_records(path, keep="first")["a"]["v"] == 1
    assert read_records(path, keep="last")["a"]["v"] == 2
    assert set(read_records(path, keep="last")) == {"a", "7"}  # ids are keys as strings, as both writers stored them
    with pytest.raises(TypeError):
        read_records(path)  # type: ignore[call-arg]  # no silent default: each client states its rule
    with pytest.raises(ValueError, match="keep must be"):
        read_records(path, keep="newest")  # type: ignore[arg-type]


def test_the_evaluation_needs_last_and_training_first(tmp_path):
    """Why the rule is a parameter: each client's own use of a repeated id."""
    from langchain_dod.evaluation.runner import ResultsFile
    from training.store import read_records as training_records

    results = ResultsFile(tmp_path / "run.jsonl")  # retry_errors appends the item again: the retry replaces the error
    results.append({"id": "q1", "error": "TimeoutError", "prediction": None})
    results.append({"id": "q1", "error": None, "prediction": "18"})
    assert results.load()["q1"]["prediction"] == "18"

    out = tmp_path / "decompositions.jsonl"  # two generate processes raced on one example: screen used the first
    with JsonlWriter(out) as writer:
        writer.write({"id": "train-24", "subquestions": ["first"]})
        writer.write({"id": "train-24", "subquestions": ["second"]})
    assert training_records(out)["train-24"]["subquestions"] == ["first"]


def test_missing_file_is_empty_for_records_and_an_error_for_reading(tmp_path):
    assert read_records(tmp_path / "none.jsonl", keep="first") == {}
    with pytest.raises(JsonlError, match="does not exist"):
        read_jsonl(tmp_path / "none.jsonl")


@pytest.mark.parametrize(
    ("tail", "kept", "torn"),
    [
        ('{"id": "c", "v"', ["a", "b"], True),  # a crash mid-write
        ('{"id": "c", "v": 3}', ["a", "b", "c"], False),  # a crash between the record and its newline
        ('{"id": "c", "name": "caf\xc3', ["a", "b"], True),  # torn inside a UTF-8 character
    ],
)
def test_repair_tail_cuts_a_torn_line_and_ends_a_whole_one(tmp_path, tail, kept, torn):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n' + tail.encode("latin-1"))
    assert [r["id"] for r in read_jsonl(path)] == kept  # reading alone changes nothing
    assert repair_tail(path) is torn
    assert path.read_bytes().endswith(b"}\n") and path.read_bytes().count(b"\n") == len(kept)
    append_jsonl(path, {"id": "d", "text": "ê"})
    assert list(read_records(path, keep="first")) == [*kept, "d"]
    assert repair_tail(path) is False


def test_damage_inside_the_file_names_its_line(tmp_path):
    path = tmp_path / "r.jsonl"
    _write(path, '{"id": "a"}\n', "garbage\n", '{"id": "b"}\n')
    with pytest.raises(JsonlError, match=r"r.jsonl:2 is not valid JSON"):
        read_records(path, keep="last")
    path.write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n')
    with pytest.raises(JsonlError, match=r"r.jsonl:2 is not valid UTF-8"):
        read_jsonl(path)
    _write(path, '{"id": "a"}\n', "[1, 2]\n")
    with pytest.raises(JsonlError, match=r"r.jsonl:2 is not a JSON object"):
        read_jsonl(path)
    _write(path, '{"id": "a"}\n', '{"name": "b"}\n')
    with pytest.raises(JsonlError, match="record 2 has no 'id' field"):
        read_records(path, keep="first")


def test_writer_writes_one_utf8_line_per_record(tmp_path):
    path = tmp_path / "sub" / "r.jsonl"
    with JsonlWriter(path) as writer:
        writer.write({"id": "a", "text": "café"})
    append_jsonl(path, {"id": "b"})
    assert (
        path.read_text(encoding="utf-8")
        == json.dumps({"id": "a", "text": "café"}, ensure_ascii=False) + '\n{"id": "b"}\n'
    )
