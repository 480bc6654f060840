"""benchmarks.screen_compare: two screens of the same plans joined on id, counted, and tested (McNemar)."""

from __future__ import annotations

import json

from benchmarks.screen_compare import _read, compare, write


def _line(i: str, correct: bool, sample: object, solution: str = "x") -> dict:
    row = {"id": i, "correct": correct, "sample": sample, "subquestions": ["a?", "b?"], "solution": solution}
    if sample == "skip":
        row.update(subquestions=[], first={"subquestions": ["a?", "b?", "c?"], "predicted": "1"})
    return row


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_compare_counts_plan_wins_kept_and_tests_only_shared_ids(tmp_path):
    text = [_line("1", True, 1), _line("2", True, "skip"), _line("3", False, 1), _line("4", True, 1)]
    program = [
        _line("1", True, 1, "p = 1\nanswer = p"),
        _line("2", True, 1),
        _line("3", True, "skip"),
        _line("5", True, 1),  # not screened in text: left out
    ]
    results = compare(_read([_write(tmp_path / "a.jsonl", text)]), _read([_write(tmp_path / "b.jsonl", program)]))
    assert results["n"] == 3
    assert (results["a"]["plan_right"], results["b"]["plan_right"]) == (1, 2)
    assert (results["a"]["kept_skip"], results["b"]["kept_skip"], results["a"]["dropped"]) == (1, 1, 1)
    assert (results["plan_right_a_only"], results["plan_right_b_only"], results["plan_right_both"]) == (0, 1, 1)
    assert results["a"]["mean_plan_length"] == round((2 + 3 + 2) / 3, 2)  # a skip counts the plan it tried
    assert results["mcnemar_p"] == 1.0
    text_md = write(tmp_path / "out", results, ("text", "program"))
    assert "| teacher plan led to the gold answer | 1 | 2 |" in text_md
    assert json.loads((tmp_path / "out" / "screen_compare.json").read_text())["n"] == 3
