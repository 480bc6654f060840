"""The fills tooling on the made-up MuSiQue fixtures: bench_musique --fills, musique_bridges --top, musique_fills."""

from __future__ import annotations

from pathlib import Path

from langchain_core.documents import Document

from benchmarks import bench_musique, musique_bridges, musique_fills

FIXTURES = Path(__file__).parent / "fixtures" / "musique"


def test_bench_musique_labels_and_runs_the_fill_variants(tmp_path: Path) -> None:
    argv = ["--data", str(FIXTURES), "--retriever", "bm25", "--k", "1", "3", "--out", str(tmp_path / "m")]
    result = bench_musique.main([*argv, "--methods", "gold_iterative_spans", "--fills", "1", "3"])
    assert list(result["summary"]) == ["gold_iterative_spans", "gold_iterative_spans_fills3"]
    rows = {(r["method"], r["id"]): r for r in result["rows"]}
    one, three = rows[("gold_iterative_spans", "3hop1__3_4_5")], rows[("gold_iterative_spans_fills3", "3hop1__3_4_5")]
    assert "fills" not in one["steps"][1] and "answers" in three["steps"][0] and "fills" in three["steps"][1]
    assert [s["query"] for s in three["steps"]] == [s["query"] for s in one["steps"]]  # the best fill is as before
    assert len(three["queries"]) >= len(one["queries"]) and three["model_calls"] == 0
    again = bench_musique.main(
        [*argv, "--methods", "gold_iterative_spans", "--fills", "2", "--fill-weight", "0.5", "--fill-depth", "all"]
    )
    assert list(again["summary"]) == [  # the earlier rows stay; the new variant is added
        "gold_iterative_spans",
        "gold_iterative_spans_fills3",
        "gold_iterative_spans_fills2_w0.5_dall",
    ]


def test_bench_musique_reads_another_question_file(tmp_path: Path) -> None:
    argv = ["--data", str(FIXTURES), "--file", "train100.json", "--methods", "plain", "--k", "1"]
    result = bench_musique.main(argv)
    assert result["meta"]["questions"] >= 1 and "train100.json" in result["meta"]["data"]


def test_bridges_in_the_top_m(tmp_path: Path) -> None:
    counts = musique_bridges.main(["--data", str(FIXTURES), "--top", "1", "2", "5"])["counts"]
    assert counts["top1"] == counts["spans"]  # the first ranked is the span reader's pick
    assert counts["top1"] <= counts["top2"] <= counts["top5"] <= counts["candidate"]


def test_fusion_schemes() -> None:
    a, b, c, d = (Document(page_content=x, id=x) for x in "abcd")
    lists, weights = [[a, b], [b, c], [d, b]], [1.0, 1.0, musique_fills.MARK]  # question, step, its 2nd fill
    assert musique_fills.fuse(lists, weights) == ["b", "a", "d", "c"]  # d: first in a list, as a is
    assert musique_fills.fuse(lists, weights, weight=0.5) == ["b", "a", "c", "d"]  # a half-weight list: d last
    # b, second in the step's list and in its fill's: the whole fill lifts it over a and d, its first does not
    assert musique_fills.fuse([[a, c], [c, b], [d, b]], weights) == ["c", "b", "a", "d"]
    assert musique_fills.fuse([[a, c], [c, b], [d, b]], weights, top=1) == ["c", "a", "d", "b"]
    assert musique_fills.fuse(lists, weights, new_only=True) == ["b", "a", "d", "c"]  # b: the step found it
    assert musique_fills.fuse(lists, weights, interleave=True) == ["b", "a", "d", "c"]  # step list: b, d, c


def test_musique_fills_scores_every_scheme(tmp_path: Path) -> None:
    out = tmp_path / "fills"
    result = musique_fills.main(["--data", str(FIXTURES), "--fills", "2", "--k", "1", "5", "--out", str(out)])
    summary = result["summary"]
    assert "m=1 (fills=1)" in summary and "m=2, top 1, w=1" in summary and "m=2, interleave" in summary
    assert summary["m=1 (fills=1)"]["diff_recall@5"] == 0
    assert "| m=2, top 1, w=1 |" in out.with_suffix(".md").read_text()
