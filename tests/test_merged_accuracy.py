"""benchmarks/merged_accuracy.py on hand-written run rows (no model: it only scores rows ``dod eval`` wrote)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import merged_accuracy
from langchain_dod.evaluation.report import paired_scores


def _row(item: str, correct: bool, subquestions: list[str], tokens: int = 100) -> dict:
    return {
        "id": item,
        "scores": {"strict": float(correct), "lenient": float(correct)},
        "subquestions": subquestions,
        "usage": {"solver": {"output_tokens": tokens}},
    }


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    # six items; the merge disagrees on the last three, and answers two of them right where the run did not
    run = [_row(f"train-{i:04d}", i % 2 == 0, ["q?"]) for i in range(6)]  # right: 0, 2, 4
    merged = [_row("train-0003", True, []), _row("train-0004", True, []), _row("train-0005", True, [], 300)]
    rerun = [_row("train-0003", False, ["q?"]), _row("train-0004", False, ["q?"]), _row("train-0005", False, ["q?"])]
    agreement = {"ways": {"merged-Q8_0": {"differ": ["train-0003", "train-0004", "train-0005"]}}}
    (tmp_path / "agreement.json").write_text(json.dumps(agreement))
    return {
        "run": _write(tmp_path / "run.jsonl", run),
        "merged": _write(tmp_path / "merged.jsonl", merged),
        "rerun": _write(tmp_path / "rerun.jsonl", rerun),
        "agreement": tmp_path / "agreement.json",
    }


def _argv(files: dict[str, Path], out: Path | str = "-") -> list[str]:
    return [
        "--run", str(files["run"]), "--merged", str(files["merged"]), "--rerun", str(files["rerun"]),
        "--agreement", str(files["agreement"]), "--out", str(out),
    ]  # fmt: skip


def test_the_three_comparisons(files: dict[str, Path], tmp_path: Path) -> None:
    result = merged_accuracy.main(_argv(files, tmp_path / "acc"))
    rerun, recorded, whole = result["comparisons"]
    assert (rerun["a"]["n"], rerun["a"]["correct"], rerun["b"]["correct"]) == (3, 0, 3)
    assert (recorded["a"]["correct"], recorded["b"]["correct"]) == (1, 3)  # the run had item 4 right
    assert (recorded["only_a"], recorded["only_b"]) == (0, 2)
    # all six: the run's rows where the merge agrees (0, 2 right), the merged rows elsewhere (3, 4, 5 right)
    assert (whole["a"]["n"], whole["a"]["correct"], whole["b"]["correct"]) == (6, 3, 5)
    assert whole["b"]["skips"] == 3 and whole["a"]["skips"] == 0
    assert whole["difference"] == pytest.approx(2 / 6, abs=1e-4)
    assert recorded["b"]["solver_tokens_mean"] == pytest.approx(500 / 3, abs=0.1)
    assert result["others"] == []
    text = (tmp_path / "acc.md").read_text()
    assert "| all 6 items" in text and "+33.3" in text
    assert json.loads((tmp_path / "acc.json").read_text())["differing_items"] == 3


def test_missing_merged_rows_are_named(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    files["merged"].write_text("\n".join(files["merged"].read_text().splitlines()[:2]) + "\n")
    with pytest.raises(SystemExit):
        merged_accuracy.main(_argv(files))
    assert "1 of the 3 differing items have no merged row (e.g. train-0005)" in capsys.readouterr().err


def test_an_id_with_two_results_is_refused(files: dict[str, Path]) -> None:
    again = _write(files["rerun"].with_name("again.jsonl"), [_row("train-0003", False, [])])
    with pytest.raises(ValueError, match="train-0003 is in two of"):
        merged_accuracy.rows_by_id([files["merged"], again])
    assert len(merged_accuracy.rows_by_id([files["merged"], files["merged"]])) == 3  # the same rows twice are fine


def test_paired_scores_refuses_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="same, non-zero number"):
        paired_scores("a", "b", "strict", [1.0], [1.0, 0.0])
    p = paired_scores("a", "b", "strict", [1.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    assert (p.only_a, p.only_b, p.p_value) == (0, 2, 0.5)


def test_against_other_runs(files: dict[str, Path]) -> None:
    cot = _write(files["run"].with_name("cot__solver.jsonl"), [_row(f"train-{i:04d}", True, []) for i in range(4)])
    result = merged_accuracy.main([*_argv(files), "--against", str(cot)])
    (other,) = result["others"]
    # on the 4 items CoT has: CoT right on all; merged right on 0, 2, 3 (the run's 0 and 2, its own 3)
    assert other["comparison"] == "merged vs cot" and other["a"]["n"] == 4
    assert (other["a"]["correct"], other["b"]["correct"], other["only_a"], other["only_b"]) == (4, 3, 1, 0)
