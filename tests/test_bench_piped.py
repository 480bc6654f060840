"""benchmarks/bench_piped.py: real `dod decompose --json -` processes with the shipped and the untuned 135M."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_piped


def test_a_piped_batch_per_decomposer_side_by_side(tmp_path: Path, gsm8k_dir: Path) -> None:  # its questions
    out = tmp_path / "piped"
    argv = ["--n", "2", "--repeats", "2", "--threads", "1", "--out", str(out)]
    result = bench_piped.main([*argv, "--decomposers", "default", "llamacpp:smollm2-135m-instruct"])
    shipped, untuned = (row["summary"] for row in result["decomposers"])
    assert "decomposer-lora" in shipped["model"] and "lora" not in untuned["model"]
    for summary in (shipped, untuned):
        assert len(summary["cpu_s_all"]) == 2 and summary["cpu_s"] > 0 and summary["peak_rss_mb"] > 50
        assert 0 <= summary["planned"] <= 2
        assert summary["same_answers_every_run"]  # greedy decoding: the same plans in every process
    assert len(result["questions_asked"]) == 2
    report = (out.with_suffix(".md")).read_text()
    assert "| default |" in report and "1.00×" in report and "--n 2" in report
    assert json.loads(out.with_suffix(".json").read_text())["meta"]["threads"] == 1


def test_a_failing_decomposer_names_its_error() -> None:
    with pytest.raises(RuntimeError, match="no-such-model"):
        bench_piped.run_batch("llamacpp:no-such-model", ["What is 2 + 3?"], threads=1)
