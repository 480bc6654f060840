"""Data set readers: formats, ids, gold answers, selection, and clear errors on bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_dod.evaluation.datasets import (
    DatasetError,
    detect_format,
    load_dataset,
    select_items,
    socratic_subquestions,
)
from langchain_dod.evaluation.oracle import SocraticOracle

FIX = Path(__file__).parent / "fixtures" / "eval"


def test_gsm8k_ids_and_gold_numbers():
    ds = load_dataset(FIX / "gsm8k_mini.jsonl")
    assert ds.fmt == "gsm8k" and ds.profile == "math" and len(ds.sha256) == 64
    assert [i.id for i in ds.items] == [f"gsm8k_mini-{k:04d}" for k in range(5)]
    assert [i.answer for i in ds.items] == ["10", "2500", "-5", "4.5", "70"]  # thousands comma removed


def test_drop_official_json_numbers_dates_spans_and_alternatives():
    ds = load_dataset(FIX / "drop_mini.json")
    assert ds.fmt == "drop" and ds.profile == "reading"
    by_id = {i.id: i for i in ds.items}
    assert by_id["q-number"].answers == (("2",),)
    assert by_id["q-date"].answers == (("8 September 1985",),)
    assert by_id["q-multi"].answers == (("23", "41"),)
    assert by_id["q-span"].answers == (("the Lions",), ("Detroit Lions",))
    assert all(i.context and i.context.startswith("The Bears opened") for i in ds.items)


def test_bamboogle_csv_with_quotes():
    ds = load_dataset(FIX / "bamboogle_mini.csv")
    assert ds.fmt == "bamboogle"
    assert ds.items[0].question == 'Who was king of England when the author of "Hamlet" died?'
    assert ds.items[0].answer == "James I"
    assert [i.id for i in ds.items] == ["bamboogle-000", "bamboogle-001"]


def test_generic_jsonl_ids_alternatives_and_context():
    ds = load_dataset(FIX / "generic_mini.jsonl")
    assert ds.fmt == "jsonl"
    g1, g2 = ds.items
    assert (g1.id, g1.answers, g1.context) == ("g1", (("24",),), None)
    assert g2.answers == (("green",), ("Green",)) and g2.context.startswith("Mixing")


def test_missing_fields_are_listed_not_dropped(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset(FIX / "bad_missing_fields.jsonl", "jsonl")
    message = str(info.value)
    assert "3 bad row(s)" in message and "line 2" in message and "line 3" in message and "line 4" in message
    assert "pass skip_bad=True (--skip-bad-items on the command line)" in message  # the library's name first
    ds = load_dataset(FIX / "bad_missing_fields.jsonl", "jsonl", skip_bad=True)
    assert [i.id for i in ds.items] == ["ok"] and len(ds.skipped) == 3


def test_wrong_or_unknown_format_gives_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="Unknown data set format 'squad'"):
        load_dataset(FIX / "gsm8k_mini.jsonl", "squad")
    with pytest.raises(DatasetError, match=r"pass fmt= one of .* \(--format on the command line\)"):
        detect_format(tmp_path / "questions.txt")
    with pytest.raises(DatasetError, match="needs 'question' and an 'answer' ending in '#### <number>'"):
        load_dataset(FIX / "generic_mini.jsonl", "gsm8k")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(broken)


def test_duplicate_ids_are_an_error(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "a", "question": "q1?", "answer": "1"}\n{"id": "a", "question": "q2?", "answer": "2"}\n')
    with pytest.raises(DatasetError, match="duplicate id 'a'"):
        load_dataset(path)


def test_selection_is_seeded_and_prefix_stable():
    items = load_dataset(FIX / "gsm8k_mini.jsonl").items
    five = select_items(items, None, seed=3)
    assert sorted(i.id for i in five) == sorted(i.id for i in items)
    assert select_items(items, 2, seed=3) == five[:2]
    assert select_items(items, 4, seed=3) == five[:4]
    assert select_items(items, 2, seed=None) == items[:2]
    assert [i.id for i in select_items(items, 5, seed=4)] != [i.id for i in five]
    with pytest.raises(ValueError, match=r"^limit must be at least 1 \(--limit on the command line\), got 0"):
        select_items(items, 0)


def test_real_gsm8k_test_split(gsm8k_dir):
    ds = load_dataset(gsm8k_dir / "test.jsonl")
    assert len(ds.items) == 1319 and ds.items[0].answer == "18"


def test_socratic_oracle_caps_dedupes_and_reports_no_tokens():
    oracle = SocraticOracle(path=str(FIX / "gsm8k_mini_socratic.jsonl"), max_subquestions=3)
    assert len(oracle) == 5
    pens = oracle.invoke("A pen costs $1.50.   How much do 3 pens cost?")  # whitespace-insensitive lookup
    assert pens.subquestions == ["How much is one pen?", "How much are two pens?", "How much are three pens?"]
    assert (pens.input_tokens, pens.output_tokens, pens.model) == (0, 0, "oracle:gsm8k-socratic")
    assert oracle.invoke(
        {"question": "The temperature was 4 degrees and fell by 9 degrees. What is the temperature now?"}
    ).subquestions == ["What is 4 minus 9?"]
    assert socratic_subquestions("Q?", "A? ** x\nB? ** y\n#### 3") == ["A?", "B?"]
    from langchain_dod.decomposer import DecompositionError

    with pytest.raises(DecompositionError, match="No Socratic sub-questions"):
        oracle.invoke("Unknown question?")
    # pydantic wraps the DatasetError in a ValueError
    with pytest.raises(ValueError, match=r"Socratic file not found.*Pass path= .*\(--socratic PATH"):
        SocraticOracle(path=str(FIX / "nope.jsonl"))


def test_real_socratic_file_matches_every_test_question(gsm8k_dir):
    oracle = SocraticOracle(path=str(gsm8k_dir / "test_socratic.jsonl"))
    ds = load_dataset(gsm8k_dir / "test.jsonl")
    missing = [i.id for i in ds.items[:200] if not oracle.invoke(i.question).subquestions]
    assert missing == []


def test_drop_jsonl_and_bamboogle_jsonl_variants(tmp_path):
    drop = tmp_path / "drop_dev.jsonl"
    drop.write_text(
        json.dumps(
            {
                "query_id": "q1",
                "passage": "Two teams met.",
                "question": "Who met?",
                "answers_spans": {"spans": ["Bears", "Lions"], "types": ["span", "span"]},
            }
        )
        + "\n"
    )
    ds = load_dataset(drop)
    assert ds.fmt == "drop" and ds.items[0].answers == (("Bears", "Lions"),) and ds.items[0].context == "Two teams met."
    bamboogle = tmp_path / "bamboogle.jsonl"
    bamboogle.write_text(json.dumps({"Question": "Capital of France?", "Answer": "Paris"}) + "\n")
    ds = load_dataset(bamboogle)
    assert ds.fmt == "bamboogle" and ds.items[0].answer == "Paris"


def test_the_oracle_gives_the_sub_questions_training_learns_from():
    """One Socratic rule: the oracle's plan for a question is the teacher-``human`` training target for it."""
    from training.data import load_examples

    path = Path(__file__).parent / "fixtures" / "training" / "socratic_tiny.jsonl"
    oracle = SocraticOracle(path=str(path), max_subquestions=3)
    examples = load_examples(path, "socratic")
    assert [oracle.invoke(e.question).subquestions for e in examples] == [e.subquestions for e in examples]
    assert examples[0].subquestions == ["How many pens does Tom have?"]  # the restatement is dropped for both
