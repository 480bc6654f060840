"""benchmarks/merged_agreement.py with the real shipped adapter, run-time and merged, on a five-item fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import merged_agreement
from langchain_dod.evaluation.datasets import load_dataset

DATA = Path(__file__).parent / "fixtures" / "eval" / "gsm8k_mini.jsonl"


def _run_file(tmp_path: Path, subquestions: list[list[str]]) -> Path:
    items = load_dataset(DATA).items[: len(subquestions)]
    run = tmp_path / "run.jsonl"
    run.write_text(
        "".join(json.dumps({"id": i.id, "subquestions": s}) + "\n" for i, s in zip(items, subquestions, strict=True))
    )
    return run


def test_agreement_with_the_recorded_sub_questions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOD_CACHE_DIR", str(tmp_path / "cache"))  # the merged files are made here, not in ~/.cache
    adapter = str(merged_agreement.default_adapter_for("math"))
    runtime = merged_agreement.decomposer("runtime", adapter)
    questions = [i.question for i in load_dataset(DATA).items[:2]]
    recorded = [runtime.invoke(q).subquestions for q in questions]
    recorded[1] = ["A sub-question no model writes?"]  # the second item can then agree with no way
    out = tmp_path / "agreement"
    result = merged_agreement.main(
        ["--run", str(_run_file(tmp_path, recorded)), "--data", str(DATA), "--out", str(out)]
    )
    ways = result["ways"]
    assert list(ways) == ["runtime", "merged-Q8_0", "merged-F16"]
    assert ways["runtime"]["same"] == 1 and ways["runtime"]["differ"] == [load_dataset(DATA).items[1].id]
    for way in ways.values():
        assert way["same"] <= 1 and 0 <= way["skips"] <= 2 and way["p50_s"] > 0
    assert "| runtime | 1 / 2 (50.0%) |" in out.with_suffix(".md").read_text()
    assert sorted(p.suffix for p in (tmp_path / "cache" / "merged").glob("*.gguf")) == [".gguf", ".gguf"]


def test_ways_are_chosen_and_compared_with_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOD_CACHE_DIR", str(tmp_path / "cache"))
    items = load_dataset(DATA).items[:2]
    run = _run_file(tmp_path, [["A sub-question no model writes?"]] * 2)
    out = tmp_path / "agreement"
    args = ["--run", str(run), "--data", str(DATA), "--ways", "runtime", "merged-Q4_0", "--out", str(out)]
    result = merged_agreement.main(args)
    ways = result["ways"]
    assert list(ways) == ["runtime", "merged-Q4_0"]
    assert ways["runtime"]["differ_from_first"] == []  # the first way against itself
    assert set(ways["merged-Q4_0"]["differ_from_first"]) <= {i.id for i in items}
    assert all(w["same"] == 0 for w in ways.values())  # no model writes the recorded sub-question
    text = out.with_suffix(".md").read_text()
    assert "same as runtime" in text and "| runtime | 0 / 2 (0.0%) | 2 / 2 |" in text
    assert [p.name.rsplit("-", 1)[1] for p in (tmp_path / "cache" / "merged").glob("*.gguf")] == ["Q4_0.gguf"]
    with pytest.raises(SystemExit):
        merged_agreement.main([*args[:4], "--ways", "merged-Q4_1"])


def test_ids_missing_from_the_data_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "run.jsonl"
    run.write_text(json.dumps({"id": "train-999999", "subquestions": []}) + "\n")
    with pytest.raises(SystemExit):
        merged_agreement.main(["--run", str(run), "--data", str(DATA), "--out", "-"])
