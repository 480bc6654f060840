"""benchmarks/bench_musique.py on the made-up MuSiQue fixtures: BM25 and the gold methods (no model loads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_musique

FIXTURES = Path(__file__).parent / "fixtures" / "musique"


def run(tmp_path: Path, *extra: str) -> dict:
    argv = ["--data", str(FIXTURES), "--retriever", "bm25", "--k", "1", "3", "--out", str(tmp_path / "m"), *extra]
    return bench_musique.main(argv)


def test_gold_methods_score_and_write_the_report(tmp_path: Path) -> None:
    result = run(tmp_path, "--methods", "plain", "gold_keep", "gold_drop", "gold_filled")
    assert result["meta"]["corpus_paragraphs"] == 5 and result["meta"]["questions"] == 2
    assert list(result["summary"]) == ["plain", "gold_keep", "gold_drop", "gold_filled"]
    assert list(result["summary"]["plain"]) == ["all", "2", "3"]
    filled = next(r for r in result["rows"] if r["method"] == "gold_filled" and r["hops"] == 3)
    assert filled["queries"][1:] == [
        "What is the designer of Varnholt Bridge?",
        "Where was Mira Talloway born?",
        "What river is Orrin Cove at the mouth of?",
    ]
    assert filled["model_calls"] == 0 and filled["seconds"] >= 0 and len(filled["ranked"]) == 3
    # five paragraphs, three asked for: at k=3 every method finds most of what is there
    assert 0 < result["summary"]["gold_filled"]["all"]["recall@3"] <= 1
    report = (tmp_path / "m.md").read_text()
    assert "| gold_filled | all | 2 |" in report and "CC BY 4.0" in report and "--k 1 3" in report
    assert json.loads((tmp_path / "m.json").read_text())["meta"]["ks"] == [1, 3]
    assert (tmp_path / "m.png").stat().st_size > 0


def test_paired_differences_to_plain_and_a_report_only_rerun(tmp_path: Path) -> None:
    result = run(tmp_path, "--methods", "plain", "gold_filled")
    recall = {  # per question at k = 1: the report pairs at k = 5, else at the smallest k asked for
        (r["method"], r["id"]): bench_musique.recall_at_k(r["ranked"], r["supporting"], 1) for r in result["rows"]
    }
    diffs = [recall[("gold_filled", q)] - recall[("plain", q)] for (m, q) in recall if m == "plain"]
    paired = result["paired"]
    assert list(paired) == ["gold_filled"]  # plain is the reference, not a row
    assert paired["gold_filled"]["all"]["n"] == 2
    assert paired["gold_filled"]["all"]["difference"] == pytest.approx(sum(diffs) / 2, abs=1e-4)
    low, high = paired["gold_filled"]["all"]["ci95"]
    assert low <= paired["gold_filled"]["all"]["difference"] <= high
    assert set(paired["gold_filled"]) == {"all", "2", "3"}
    assert "Paired against plain retrieval" in (tmp_path / "m.md").read_text()
    # the report again from the rows: nothing runs, the same numbers
    rows_before = (tmp_path / "m.rows.jsonl").read_text()
    again = run(tmp_path, "--methods", "plain", "gold_filled", "--report-only")
    assert again["paired"] == paired and again["summary"] == result["summary"]
    assert (tmp_path / "m.rows.jsonl").read_text() == rows_before


def test_a_rerun_resumes_and_adds_methods(tmp_path: Path) -> None:
    run(tmp_path, "--methods", "plain")
    rows_file = tmp_path / "m.rows.jsonl"
    first = rows_file.read_text().splitlines()
    assert len(first) == 2
    result = run(tmp_path, "--methods", "plain", "gold_keep")
    assert rows_file.read_text().splitlines()[:2] == first  # plain was not run again
    assert len(rows_file.read_text().splitlines()) == 4
    assert set(result["summary"]) == {"plain", "gold_keep"}


def test_rows_of_another_retriever_are_refused(tmp_path: Path) -> None:
    run(tmp_path, "--methods", "plain")
    rows_file = tmp_path / "m.rows.jsonl"
    rows_file.write_text(rows_file.read_text().replace('"retriever": "bm25"', '"retriever": "minilm"'))
    with pytest.raises(SystemExit, match="use another --out"):
        run(tmp_path, "--methods", "plain")


def test_bm25_tokens_ignore_case_and_punctuation() -> None:
    assert bench_musique.bm25_tokens("Where was #1 born? Orrin-Cove") == ["where", "was", "1", "born", "orrin", "cove"]


def test_multiquery_as_shipped_and_fused_by_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LangChain's MultiQueryRetriever with a scripted query writer in place of the local GGUF (no model loads)."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    import langchain_dod

    class Writer(FakeListChatModel):
        def load(self) -> Writer:  # ChatGGUF.load(): the bench loads the writer before timing queries
            return self

    lines = "Who designed Varnholt Bridge?\nWhere was Mira Talloway born?"
    monkeypatch.setattr(langchain_dod, "ChatGGUF", lambda **kwargs: Writer(responses=[lines]))
    result = run(tmp_path, "--methods", "plain", "multiquery", "multiquery_rrf")
    assert list(result["summary"]) == ["plain", "multiquery", "multiquery_rrf"]
    rows = {(r["method"], r["id"]): r for r in result["rows"]}
    question = "Where was the designer of the Varnholt Bridge born?"
    shipped, fused = rows[("multiquery", "2hop__1_2")], rows[("multiquery_rrf", "2hop__1_2")]
    # as shipped: the generated queries, then the original (LangChain appends it); its own run is not a query
    assert shipped["queries"] == ["Who designed Varnholt Bridge?", "Where was Mira Talloway born?", question]
    assert fused["queries"] == [question, "Who designed Varnholt Bridge?", "Where was Mira Talloway born?"]
    assert shipped["model_calls"] == fused["model_calls"] == 1
    assert len(shipped["ranked"]) == len(fused["ranked"]) == 3


def test_gold_iterative_fills_the_bridges_with_the_real_reader(tmp_path: Path) -> None:
    """The gold steps, each #N filled by the local 135M reader from the passages its step retrieved."""
    result = run(tmp_path, "--methods", "gold_keep", "gold_iterative")
    rows = {(r["method"], r["id"]): r for r in result["rows"]}
    row = rows[("gold_iterative", "3hop1__3_4_5")]
    kept = rows[("gold_keep", "3hop1__3_4_5")]["queries"]
    # the first step is asked as written; the later ones with the reader's answers where the gold has #N
    assert row["queries"][:2] == kept[:2]
    assert len(row["steps"]) == 3 and all("#" not in s["query"] for s in row["steps"])
    assert row["steps"][1]["query"] != kept[2]  # "Where was #1 born?" was rewritten
    assert row["model_calls"] == 2  # one reader call per step but the last; the gold steps cost none
    assert "gold_iterative" in result["summary"]


def test_gold_iterative_spans_fills_the_bridges_by_rule(tmp_path: Path) -> None:
    """The span reader fills #N from the same passages with no model call."""
    result = run(tmp_path, "--methods", "gold_iterative_spans")
    row = {(r["method"], r["id"]): r for r in result["rows"]}[("gold_iterative_spans", "3hop1__3_4_5")]
    assert len(row["steps"]) == 3 and all("#" not in s["query"] for s in row["steps"])
    assert [bool(s["answer"]) for s in row["steps"]] == [True, True, False]  # the last step is not read
    assert row["model_calls"] == 0


def test_the_report_names_the_command_behind_each_method(tmp_path: Path) -> None:
    run(tmp_path, "--methods", "plain")
    result = run(tmp_path, "--methods", "gold_keep")
    runs = result["meta"]["runs"]
    assert set(runs) == {"plain", "gold_keep"}
    assert "--methods plain" in runs["plain"]["command"] and "--methods gold_keep" in runs["gold_keep"]["command"]
    report = (tmp_path / "m.md").read_text()
    assert "- plain: `python -m benchmarks.bench_musique" in report and "- gold_keep: `python" in report


def test_question_weight_labels_and_weights_the_gold_fusion(tmp_path: Path) -> None:
    result = run(tmp_path, "--methods", "plain", "gold_keep", "--question-weight", "1", "1000")
    assert list(result["summary"]) == ["plain", "gold_keep", "gold_keep_qw1000"]
    ranked = {(r["method"], r["id"]): r["ranked"] for r in result["rows"]}
    ids = {q for (_, q) in ranked}
    # weight 1 lets the steps reorder the question's list; a huge weight gives back the question's own ranking
    assert any(ranked[("gold_keep", q)] != ranked[("plain", q)] for q in ids)
    assert all(ranked[("gold_keep_qw1000", q)] == ranked[("plain", q)] for q in ids)
    assert "gold_keep_qw1000" in result["paired"]
    assert bench_musique._question_weight_suffix(1.5) == "_qw1.5" and bench_musique._question_weight_suffix(1) == ""


def test_a_bad_question_weight_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run(tmp_path, "--methods", "plain", "--question-weight", "0")


def test_feedback_and_rrf_k_label_the_span_methods(tmp_path: Path) -> None:
    """--fill-feedback/--fill-pool/--rrf-k reach DecomposingRetriever and name the method; the old label keeps
    the old options (fill_feedback 0, rrf_k 60), spelled out since the retriever's defaults changed."""
    argv = ["--methods", "gold_iterative_spans", "--fills", "3"]
    result = run(tmp_path, *argv, "--fill-weight", "0.5", "--fill-feedback", "1", "--fill-pool", "4", "--rrf-k", "0")
    label = "gold_iterative_spans_fills3_w0.5_fb1_p4_rrf0"
    assert list(result["summary"]) == [label]
    row = {(r["method"], r["id"]): r for r in result["rows"]}[(label, "3hop1__3_4_5")]
    assert "support" in row["steps"][0] and len(row["steps"][0]["answers"]) <= 3  # the bridge ranked by feedback
    old = run(tmp_path, *argv)
    assert "gold_iterative_spans_fills3" in old["summary"]
    old_row = {(r["method"], r["id"]): r for r in old["rows"]}[("gold_iterative_spans_fills3", "3hop1__3_4_5")]
    assert all("support" not in s for s in old_row["steps"])
    args = bench_musique.argparse.Namespace(fills=[3], fill_weight=[1.0], fill_depth=1, fill_feedback=0, rrf_k=60)
    assert bench_musique._fill_variants(args) == [(3, 1.0, "_fills3")]


def test_minilm_stores_rank_alike_and_name_the_paragraphs() -> None:
    """SKLearnVectorStore (default) and InMemoryVectorStore rank alike; ids come back from either."""
    from langchain_dod.evaluation.musique import document_id, load_questions, pooled_corpus

    questions = load_questions(FIXTURES / "dev_eval292.jsonl")
    corpus = pooled_corpus(questions)
    ranked = {}
    for store in bench_musique.VECTOR_STORES:
        retriever = bench_musique.build_retriever("minilm", corpus, 3, store=store)
        ranked[store] = [[document_id(d) for d in retriever.invoke(q.question)] for q in questions]
    assert ranked["sklearn"] == ranked["inmemory"]
    known = {d.id for d in corpus}
    assert all(len(r) == 3 and set(r) <= known for r in ranked["sklearn"])
    with pytest.raises(ValueError, match="choose one of sklearn, inmemory"):
        bench_musique.build_retriever("minilm", corpus, 3, store="faiss")


def test_rrf_k_labels_and_reaches_the_gold_fusion(tmp_path: Path) -> None:
    result = run(tmp_path, "--methods", "gold_keep", "--question-weight", "2", "--rrf-k", "0")
    assert list(result["summary"]) == ["gold_keep_qw2_rrf0"]
    again = run(tmp_path / "b", "--methods", "gold_keep", "--question-weight", "2")
    assert list(again["summary"]) == ["gold_keep_qw2"]
    # rrf_k 0 lets each list's first document count most: the rankings differ on some question
    first = {r["id"]: r["ranked"] for r in result["rows"]}
    second = {r["id"]: r["ranked"] for r in again["rows"]}
    assert any(first[q] != second[q] for q in first)
