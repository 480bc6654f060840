"""benchmarks/probe_solver_wording.py: plan caps and the report's pairing (no model runs here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import probe_solver_wording as probe

PLAN = ["a?", "b?", "c?", "d?"]


def test_cap_keeps_the_last_step_and_zero_sends_no_plan() -> None:
    assert probe._cap(PLAN, "all") == PLAN
    assert probe._cap(PLAN, "3") == ["a?", "b?", "d?"]
    assert probe._cap(PLAN, "9") == PLAN
    assert probe._cap(PLAN, "0") == []


def _write(path: Path, condition: str, correct: dict[str, bool]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        for item, ok in correct.items():
            fh.write(json.dumps({"condition": condition, "id": item, "correct": ok, "output_tokens": 10}) + "\n")


def test_report_keeps_only_the_named_conditions_and_pairs_with_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe, "RESULTS", tmp_path)
    ids = json.loads((probe.EVAL / "manifest.json").read_text())["ids"][:4]
    results = tmp_path / "results.jsonl"
    _write(results, "x:all", dict(zip(ids, [True, True, True, False], strict=True)))
    _write(results, "y:0", dict(zip(ids, [False, False, True, False], strict=True)))
    _write(results, "z:all", dict(zip(ids[:1], [True], strict=True)))  # left out: would cut the items to one
    probe.report(None, ["x:all", "y:0"], "y:0")
    summary = json.loads((tmp_path / "x_all-y_0.summary.json").read_text())["results"]
    assert set(summary) == {"x:all", "y:0", "cot (single-stage)"}
    assert summary["x:all"]["n"] == 4
    assert summary["x:all"]["vs_y:0"] == {"wins": 2, "losses": 0, "mcnemar_p": pytest.approx(0.5)}
    assert summary["y:0"]["vs_y:0"]["wins"] == summary["y:0"]["vs_y:0"]["losses"] == 0
    assert "vs y:0 (McNemar)" in (tmp_path / "x_all-y_0.summary.md").read_text()
    with pytest.raises(SystemExit, match="no results"):
        probe.report(None, ["x:all"], "w:0")
