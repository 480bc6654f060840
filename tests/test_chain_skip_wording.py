"""benchmarks/chain_skip_wording.py on hand-written run rows (no model: it assembles and scores rows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import chain_skip_wording
from tests.test_merged_accuracy import _row, _write


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    # four items; the run plans on 0 and 1, skips 2 and 3; the merge differs on item 1 and skips it
    run = [
        _row("train-0000", True, ["q?"], 100),
        _row("train-0001", False, ["q?"], 100),
        _row("train-0002", False, [], 300),
        _row("train-0003", True, [], 300),
    ]
    merged = [_row("train-0001", False, [], 300)]
    cot_old = [_row(f"train-{i:04d}", i != 0, [], 300) for i in range(4)]
    cot_new = [_row(f"train-{i:04d}", True, [], 200) for i in range(4)]
    (tmp_path / "agreement.json").write_text(json.dumps({"ways": {"merged-Q8_0": {"differ": ["train-0001"]}}}))
    return {
        "run": _write(tmp_path / "run.jsonl", run),
        "merged": _write(tmp_path / "merged.jsonl", merged),
        "agreement": tmp_path / "agreement.json",
        "old": _write(tmp_path / "old.jsonl", cot_old),
        "new_a": _write(tmp_path / "new_a.jsonl", cot_new[:2]),
        "new_b": _write(tmp_path / "new_b.jsonl", cot_new[2:]),
    }


def _argv(files: dict[str, Path], out: Path | str = "-", new: tuple[str, ...] = ("new_a", "new_b")) -> list[str]:
    return [
        "--run", str(files["run"]), "--merged", str(files["merged"]), "--agreement", str(files["agreement"]),
        "--cot-old", str(files["old"]), "--cot-new", *(str(files[n]) for n in new), "--out", str(out),
    ]  # fmt: skip


def test_the_chain_takes_the_new_cot_rows_where_the_decomposer_skips(files: dict[str, Path], tmp_path: Path) -> None:
    result = chain_skip_wording.main(_argv(files, tmp_path / "out"))
    assert result["n"] == 4 and result["skips"] == 3  # items 1 (merged), 2, 3
    tokens = result["solver_tokens_mean"]
    # chain now: item 0 planned (100 tokens, right), items 1-3 from the new CoT (200 tokens each, right)
    assert tokens["chain, plain skip wording"] == pytest.approx((100 + 3 * 200) / 4)
    assert tokens["chain, old skip wording"] == pytest.approx((100 + 3 * 300) / 4)
    by = {c["comparison"]: c for c in result["comparisons"]}
    now = by["chain, plain skip wording vs chain, old skip wording"]
    assert (now["a"]["correct"], now["b"]["correct"]) == (2, 4)
    assert (now["only_a"], now["only_b"]) == (0, 2)
    assert "| chain, plain skip wording | 4 | 100.0 |" in (tmp_path / "out.md").read_text()


def test_a_skipped_item_without_a_cot_row_is_refused(files: dict[str, Path]) -> None:
    with pytest.raises(SystemExit):
        chain_skip_wording.main(_argv(files, new=("new_a",)))
