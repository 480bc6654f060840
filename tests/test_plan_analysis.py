"""The plan analysis of evaluation runs (benchmarks/plan_analysis.py) on a tiny evaluation folder written here."""

from __future__ import annotations

import json

from benchmarks.plan_analysis import analyse, classify, gold_steps, restates_given, restates_question, write

QUESTION = "Tom has 3 boxes of 12 pens. He gives away 5 pens. How many pens does Tom have left?"
ANSWER = "Tom has 3*12=<<3*12=36>>36 pens.\nHe has 36-5=<<36-5=31>>31 left.\n#### 31"


def test_gold_steps_and_restatements():
    assert gold_steps(ANSWER) == 2
    assert restates_question("How many pens does Tom have left?", QUESTION)
    assert not restates_question("How many pens are in the boxes?", QUESTION)
    given = "1. Tom has 3 boxes.\n2. He has 36 pens in all.\nThe answer is: 36"
    assert restates_given("How many boxes does Tom have?", QUESTION, given, 1)
    assert not restates_given("How many pens are in the boxes?", QUESTION, given, 2)  # 36 is new


def test_classify_each_failure_class():
    wrong = {"solution": "1. Tom has 3 boxes.\n2. He has 12 pens per box.\nThe answer is: 12"}
    assert classify({**wrong, "subquestions": ["How many pens does Tom have left?"]}, QUESTION, 2) == (
        "restated question"
    )
    given = ["How many boxes does Tom have?", "How many pens are in a box?", "How many pens are left?"]
    assert classify({**wrong, "subquestions": given}, QUESTION, 2) == "restated given"
    assert classify({"solution": "1. 36 pens.", "subquestions": ["How many pens in all?"]}, QUESTION, 4) == (
        "missing step"
    )
    full = {"solution": "1. 36 pens.\n2. 30 left.", "subquestions": ["How many pens in all?", "How many given?"]}
    assert classify(full, QUESTION, 2) == "wrong quantity"


def test_analyse_a_tiny_evaluation_folder(tmp_path):
    data = tmp_path / "gsm.jsonl"
    data.write_text(json.dumps({"question": QUESTION, "answer": ANSWER}) + "\n")
    (tmp_path / "ev" / "runs").mkdir(parents=True)
    (tmp_path / "ev" / "manifest.json").write_text(json.dumps({"dataset": {"path": str(data)}, "ids": ["gsm-0000"]}))
    plan = {
        "id": "gsm-0000",
        "mode": "two-stage",
        "scores": {"strict": 0.0},
        "prediction": "36",
        "subquestions": ["How many pens in all?", "How many are left?"],
        "solution": "1. 3 * 12 = 36 pens.\n2. 36 are left.\nThe answer is: 36",
    }
    skip = {"id": "gsm-0000", "mode": "single-stage", "scores": {"strict": 1.0}, "subquestions": []}
    (tmp_path / "ev" / "runs" / "dec-a__s.jsonl").write_text(json.dumps(plan) + "\n")
    (tmp_path / "ev" / "runs" / "dec-b__s.jsonl").write_text(json.dumps(skip) + "\n")
    results = analyse(tmp_path / "ev")
    a, b = results["dec-a__s"], results["dec-b__s"]
    assert a["accuracy"] == 0 and a["by_gold_steps"] == {"2": {"n": 1, "accuracy": 0.0}}
    assert a["final_is_a_sub_answer"] == 1 and sum(a["taxonomy"].values()) == 1
    assert b["skip_rate"] == 1.0 and b["skip_accuracy"] == 1.0
    assert "| `dec-b__s` | 1 | 100.0 |" in write(tmp_path / "ev", results)
