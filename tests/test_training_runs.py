"""The loop generate and screen share: records as they finish, failures to a side file, fatal errors stop."""

from __future__ import annotations

import pytest

from langchain_dod.models import ModelNotFoundError
from training.errors import TrainingError
from training.runs import failed_path, read_training_info, training_info_path, write_as_finished
from training.store import read_jsonl


def _work(item: str) -> dict:
    if item == "bad":
        raise ValueError("no answer")
    if item == "fatal":
        raise ModelNotFoundError("no model")
    return {"id": item, "value": item.upper()}


def test_records_and_failures_are_written_as_they_finish(tmp_path):
    out = tmp_path / "d.jsonl"
    finished = list(
        write_as_finished(
            ["a", "bad", "b"],
            _work,
            out,
            stage="generate",
            width=2,
            item_id=str,
            safe_before=0,
            failure_fields={"t": 1},
        )
    )
    assert sorted(f.item for f in finished if f.record) == ["a", "b"]
    assert [f.failure for f in finished if f.failure] == [{"id": "bad", "error": "ValueError: no answer", "t": 1}]
    assert sorted(r["id"] for r in read_jsonl(out)) == ["a", "b"]
    assert read_jsonl(failed_path(out)) == [{"id": "bad", "error": "ValueError: no answer", "t": 1}]


def test_a_fatal_error_stops_the_run_and_says_what_is_safe(tmp_path):
    out = tmp_path / "d.jsonl"
    run = write_as_finished(["a", "fatal", "b"], _work, out, stage="screen", width=1, item_id=str, safe_before=5)
    with pytest.raises(TrainingError, match=r"screen stopped: ModelNotFoundError: no model \(6 records are safe in"):
        list(run)
    assert [r["id"] for r in read_jsonl(out)] == ["a"]
    assert not failed_path(out).exists()


def test_training_info_of_a_folder_without_one_is_empty(tmp_path):
    assert read_training_info(tmp_path) == {}
    training_info_path(tmp_path).write_text('{"base": "x"}\n')
    assert read_training_info(tmp_path) == {"base": "x"}
