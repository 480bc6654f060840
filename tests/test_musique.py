"""MuSiQue loader, step normalisation, ``#N`` handling and the recall metric, on made-up MuSiQue-shaped records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_dod.evaluation.musique import (
    all_at_k,
    gold_queries,
    load_questions,
    paragraph_id,
    pooled_corpus,
    recall_at_k,
    reference_noun,
    step_to_question,
    summarize_recall,
    training_questions,
)
from langchain_dod.references import resolve_step, rewrite_references

FIXTURES = Path(__file__).parent / "fixtures" / "musique"


@pytest.fixture
def questions():
    return load_questions(FIXTURES / "dev_eval292.jsonl")


def test_load_questions_reads_paragraphs_flags_hops_and_decomposition(questions) -> None:
    assert [q.id for q in questions] == ["2hop__1_2", "3hop1__3_4_5"]
    first, second = questions
    assert (first.hops, second.hops) == (2, 3)
    assert first.answer == "Orrin Cove" and first.aliases == ("Orrin",)
    assert first.steps[1].question == "#1 >> place of birth" and first.steps[1].paragraph_idx == 1
    assert len(first.paragraphs) == 4
    assert first.supporting_ids == (
        paragraph_id("Varnholt Bridge", "The engineer Mira Talloway designed the Varnholt Bridge in 1911."),
        paragraph_id("Mira Talloway", "Mira Talloway was born in the fishing village of Orrin Cove."),
    )
    assert len(second.supporting_ids) == 3
    assert load_questions(FIXTURES / "dev_eval292.jsonl", limit=1) == [first]


def test_pooled_corpus_dedupes_by_title_and_text(questions) -> None:
    corpus = pooled_corpus(questions)
    # q1 has 4 paragraphs; q2 repeats 4 of them and adds a second "Kessler" paragraph with other text
    assert len(corpus) == 5
    assert len({d.id for d in corpus}) == 5
    assert [d.metadata["title"] for d in corpus].count("Kessler") == 2
    assert corpus[0].page_content == "Varnholt Bridge\nThe engineer Mira Talloway designed the Varnholt Bridge in 1911."
    known = {d.id for d in corpus}
    assert all(set(q.supporting_ids) <= known for q in questions)


def test_training_questions_exclude_the_evaluation_ids() -> None:
    train = training_questions(FIXTURES)
    # the dev file holds both evaluation questions and one more; train100 adds one
    assert [q.id for q in train] == ["2hop__6_7", "2hop__8_9"]
    assert train[0].paragraphs == () and train[1].paragraphs  # decompositions only vs. full schema
    assert [q.id for q in training_questions(FIXTURES, exclude=set())][:3] == ["2hop__1_2", "2hop__6_7", "3hop1__3_4_5"]


def test_missing_file_says_where_the_data_lives(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="DOD_MUSIQUE_DIR"):
        load_questions(tmp_path / "dev_eval292.jsonl")


def test_malformed_record_names_its_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "x", "question": "q?"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1 is not a MuSiQue record"):
        load_questions(path)


def test_question_without_supporting_paragraph_is_refused(tmp_path) -> None:
    record = json.loads((FIXTURES / "dev_eval292.jsonl").read_text().splitlines()[0])
    for p in record["paragraphs"]:
        p["is_supporting"] = False
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="no supporting paragraph"):
        load_questions(path)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (
            "Van Hook Township >> located in the administrative territorial entity",
            "In what administrative territorial entity is Van Hook Township located?",
        ),
        ("#1 >> place of birth", "Where was #1 born?"),
        ("Green >> parent taxon", "What is the parent taxon of Green?"),  # the generic template
        ("Green >> record label", "What record label is Green on?"),
        ("Who was the first president of #1 ?", "Who was the first president of #1?"),  # a question: tidied
        # crowd-written steps: capitalised and given their question mark
        ("when was #3 established", "When was #3 established?"),
        ("what is the meaning of #2 in arabic dictionary.", "What is the meaning of #2 in arabic dictionary?"),
    ],
)
def test_step_to_question(step: str, expected: str) -> None:
    assert step_to_question(step) == expected


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("keep", "Where was #1 born?"),
        ("drop", "Where was born?"),
        ("it", "Where was it born?"),
        ("that", "Where was that born?"),
        ("fill", "Where was Mira Talloway born?"),
    ],
)
def test_reference_modes(mode: str, expected: str) -> None:
    assert step_to_question("#1 >> place of birth", mode, {1: "Mira Talloway"}) == expected


def test_fill_keeps_a_reference_without_an_answer_and_rejects_bad_modes() -> None:
    assert (
        rewrite_references("What river is #2 at the mouth of ?", "fill", {1: "X"})
        == "What river is #2 at the mouth of?"
    )
    with pytest.raises(ValueError, match="needs answers"):
        rewrite_references("#1", "fill")
    with pytest.raises(ValueError, match="choose one of"):
        rewrite_references("#1", "blank")  # type: ignore[arg-type]


def test_gold_queries_filled_with_gold_answers(questions) -> None:
    assert gold_queries(questions[1], "fill") == [
        "What is the designer of Varnholt Bridge?",  # a relation without a template: the generic one
        "Where was Mira Talloway born?",
        "What river is Orrin Cove at the mouth of?",
    ]
    assert gold_queries(questions[1])[2] == "What river is #2 at the mouth of?"


@pytest.mark.parametrize(
    ("step", "noun"),
    [
        ("#1 >> performer", "person"),
        ("Van Hook Township >> located in the administrative territorial entity", "place"),
        ("Achh >> country", "country"),
        ("Green >> parent taxon", "one"),  # a relation of unknown kind
        ("What city is #1 in?", "city"),
        ("In which state is #1?", "state"),
        ("who sang #1", "person"),
        ("When was #2 founded?", "time"),
        ("What is the capital of #1?", "one"),  # "what is": no noun to read
    ],
)
def test_reference_noun(step: str, noun: str) -> None:
    assert reference_noun(step) == noun


def test_gold_queries_in_every_step_style(questions) -> None:
    q = questions[1]  # Varnholt Bridge >> designer / Where was #1 born? / What river is #2 at the mouth of ?
    assert gold_queries(q, "raw") == [
        "Varnholt Bridge >> designer",
        "Where was #1 born?",
        "What river is #2 at the mouth of?",
    ]
    assert gold_queries(q, "keep")[1:] == ["Where was #1 born?", "What river is #2 at the mouth of?"]
    assert gold_queries(q, "drop")[1:] == ["Where was born?", "What river is at the mouth of?"]
    assert gold_queries(q, "typed")[1:] == ["Where was that one born?", "What river is that place at the mouth of?"]
    assert gold_queries(questions[0], "typed")[1] == "Where was that one born?"  # "designer": unknown kind
    with pytest.raises(ValueError, match="Unknown step style"):
        gold_queries(q, "nested")


def test_typed_style_drops_the_article_before_a_reference() -> None:
    from langchain_dod.evaluation.musique import MusiqueQuestion, Step

    q = MusiqueQuestion(
        id="x",
        question="?",
        answer="a",
        steps=(Step("Kirill Eskov >> country of citizenship", "Russia"), Step("Who argued that the #1 had won?", "b")),
    )
    assert gold_queries(q, "typed") == [
        "What country is Kirill Eskov a citizen of?",
        "Who argued that that country had won?",
    ]


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("Where was #1 born?", "Where was Mira Talloway born?"),
        ("Where was that person born?", "Where was Mira Talloway born?"),
        ("Who was president in that year?", "Who was president in Mira Talloway?"),
        ("When was he born?", "When was Mira Talloway born?"),
        ("What is his nationality?", "What is Mira Talloway's nationality?"),
        # "that" after a noun is a relative pronoun: nothing to replace, so the answer is appended
        (
            "Which river flows through the city that hosts the fair?",
            "Which river flows through the city that hosts the fair? (Mira Talloway)",
        ),
        ("Where was the designer born?", "Where was the designer born? (Mira Talloway)"),
    ],
)
def test_resolve_step_for_the_iterative_retriever(step: str, expected: str) -> None:
    assert resolve_step(step, {1: "Mira Talloway"}, previous="Mira Talloway") == expected


def test_resolve_step_without_an_answer_leaves_the_step() -> None:
    assert resolve_step("Where was that person born ?", {}, previous="") == "Where was that person born?"


def test_recall_and_all_at_k() -> None:
    ranked = ["a", "x", "b", "y"]
    assert recall_at_k(ranked, ["a", "b"], 2) == 0.5
    assert recall_at_k(ranked, ["a", "b"], 3) == 1.0
    assert not all_at_k(ranked, ["a", "b"], 2) and all_at_k(ranked, ["a", "b"], 3)
    assert recall_at_k(ranked, ["a", "a"], 1) == 1.0  # a repeated gold id counts once
    with pytest.raises(ValueError, match="at least one gold"):
        recall_at_k(ranked, [], 2)


def test_summarize_recall_by_hops() -> None:
    rows = [
        {"hops": 2, "ranked": ["a", "b"], "supporting": ["a", "b"]},
        {"hops": 2, "ranked": ["a", "x"], "supporting": ["a", "b"]},
        {"hops": 3, "ranked": ["x", "c", "d", "e"], "supporting": ["c", "d", "e"]},
    ]
    table = summarize_recall(rows, ks=(2, 5))
    assert list(table) == ["all", "2", "3"]
    assert table["2"] == {"questions": 2, "recall@2": 0.75, "all@2": 0.5, "recall@5": 0.75, "all@5": 0.5}
    assert table["3"]["recall@2"] == pytest.approx(0.3333, abs=1e-4) and table["3"]["all@5"] == 1.0
    assert table["all"]["questions"] == 3 and table["all"]["all@2"] == pytest.approx(0.3333, abs=1e-4)
