"""benchmarks/musique_bridges.py on the made-up MuSiQue fixtures (BM25, no model: the reader's answers are given)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import musique_bridges

FIXTURES = Path(__file__).parent / "fixtures" / "musique"


def test_matches_is_containment_case_folded() -> None:
    assert musique_bridges.matches("mira talloway", "Mira Talloway")
    assert musique_bridges.matches("Orrin Cove", "Orrin")
    assert not musique_bridges.matches("Kessler", "Orrin Cove")
    assert not musique_bridges.matches(None, "Orrin Cove") and not musique_bridges.matches(" ", "Orrin Cove")


def test_bridges_are_counted_per_stage(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    steps = [{"answer": "Mira Talloway"}, {"answer": "Kessler"}, {"answer": None}]  # the 3-hop: right, wrong, last
    rows.write_text(
        json.dumps({"method": "gold_iterative", "id": "3hop1__3_4_5", "steps": steps})
        + "\n"
        + json.dumps({"method": "plain", "id": "2hop__1_2", "ranked": []})
        + "\n"
    )
    out = tmp_path / "bridges"
    result = musique_bridges.main(["--data", str(FIXTURES), "--rows", str(rows), "--out", str(out)])
    counts = result["counts"]
    assert counts["bridges"] == 3  # 1 in the 2-hop question, 2 in the 3-hop one; last steps are not bridges
    assert counts["read_n"] == 2 and counts["read"] == 1
    assert counts["first_candidate"] <= counts["candidate"] <= counts["bridges"]
    assert 0 < counts["spans"] <= counts["candidate"]  # the span reader picks among the candidates
    assert counts["reachable"] >= counts["candidate"] > 0  # five paragraphs: the answers are there
    assert "| named by the reader (gold_iterative rows) | 1 / 2 (50.0%) |" in out.with_suffix(".md").read_text()
