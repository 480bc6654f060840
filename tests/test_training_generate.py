"""generate and screen: resumable teacher decompositions and SD-R screening.

The kill-and-resume test runs the real CLI in a subprocess with a real llama.cpp teacher (SmolLM2-135M) and
SIGKILLs it mid-run. Scripted LangChain fakes stand in for the teacher or the solver only where the stage's
own logic is under test (retries, malformed replies, screening decisions).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from training.cli import main
from training.data import load_examples
from training.errors import TrainingError
from training.generate import failed_path, generate
from training.screen import screen
from training.store import read_jsonl

FIX = Path(__file__).parent / "fixtures" / "training"
ROOT = Path(__file__).resolve().parents[1]


def scripted(*replies: str) -> GenericFakeChatModel:
    """A chat model that answers with these texts in order (and fails if asked once more)."""
    return GenericFakeChatModel(messages=iter(AIMessage(content=r) for r in replies))


def test_generate_logs_malformed_and_empty_replies_then_retries_only_those(tmp_path):
    examples = load_examples(FIX / "generic.jsonl")
    out = tmp_path / "dec.jsonl"
    teacher = scripted(
        "",  # q1: empty reply ...
        "I like turtles.",  # ... and a reply with no sub-questions: q1 fails after 1 retry
        '{"subquestions": ["How many goals in the first half?", "How many in the second?"]}',  # q2
        "1. What novel is Clueless based on?\n2. Who wrote that novel?",  # q3: free text is parsed
    )
    report = generate(examples, teacher, out, retries=1, backoff=0.0, progress=False)
    assert (report.written, report.failed, report.already_done) == (2, 1, 0)
    failures = read_jsonl(failed_path(out))
    assert [f["id"] for f in failures] == ["q1"] and "did not say none" in failures[0]["error"]
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert rows["q3"]["subquestions"] == ["What novel is Clueless based on?", "Who wrote that novel?"]
    assert rows["q2"]["context"].startswith("The team") and rows["q2"]["attempts"] == 1

    # rerun: only q1 is asked (the fake has one reply; a second call would fail), nothing is duplicated
    again = generate(
        examples,
        scripted('{"subquestions": ["How many legs does one spider have?"]}'),
        out,
        retries=0,
        progress=False,
    )
    assert (again.written, again.failed, again.already_done) == (1, 0, 2)
    assert sorted(r["id"] for r in read_jsonl(out)) == ["q1", "q2", "q3"]
    assert {r["id"]: r for r in read_jsonl(out)}["q2"] == rows["q2"]


def test_given_teacher_writes_socratic_steps_and_refuses_data_without_them(tmp_path):
    examples = load_examples(FIX / "socratic_tiny.jsonl")
    report = generate(examples, "given", tmp_path / "h.jsonl", progress=False)
    rows = read_jsonl(tmp_path / "h.jsonl")
    assert report.written == 4 and [r["subquestions"] for r in rows] == [e.subquestions for e in examples]
    assert all(r["teacher"] == "given" and r["answer"] for r in rows)
    generate(examples, "human", tmp_path / "legacy.jsonl", progress=False)  # the old name still works
    assert read_jsonl(tmp_path / "legacy.jsonl") == rows
    with pytest.raises(TrainingError, match="has no sub-questions of its own"):
        generate(load_examples(FIX / "gsm8k_tiny.jsonl"), "human", tmp_path / "x.jsonl", progress=False)


def test_fatal_teacher_error_stops_and_keeps_earlier_records(tmp_path):
    out = tmp_path / "dec.jsonl"
    missing = str(tmp_path / "missing.gguf")
    # an earlier run by the same teacher (its model file since deleted): a rerun may only add that teacher's records
    out.write_text(
        json.dumps({"id": "q1", "subquestions": ["A?"], "teacher": missing, "profile": "math", "max_subquestions": 3})
        + "\n"
    )
    with pytest.raises(TrainingError, match="generate stopped: ModelNotFoundError"):
        generate(load_examples(FIX / "generic.jsonl"), f"llamacpp:{missing}", out, progress=False)
    assert [r["id"] for r in read_jsonl(out)] == ["q1"]
    with pytest.raises(TrainingError, match="is not a SPEC"):
        generate(load_examples(FIX / "generic.jsonl"), "not-a-spec", out, progress=False)


def test_cli_reports_bad_input_with_exit_2(tmp_path, capsys):
    code = main(
        [
            "generate",
            "--data",
            str(FIX / "empty.jsonl"),
            "--teacher",
            "human",
            "--out",
            str(tmp_path / "o.jsonl"),
            "--no-progress",
        ]
    )
    assert code == 2 and "holds no examples" in capsys.readouterr().err


def test_generate_resumes_after_sigkill_without_losing_or_repaying(tmp_path, smollm2_path):
    """Real subprocess, real llama.cpp teacher, SIGKILL mid-run, then a rerun finishes the rest."""
    data = tmp_path / "q.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"x{i}",
                    "question": f"Tom has {i + 3} bags with {i + 2} apples each and eats {i} apples. "
                    "How many apples are left?",
                    "answer": str((i + 3) * (i + 2) - i),
                }
            )
            + "\n"
            for i in range(5)
        )
    )
    out = tmp_path / "dec.jsonl"
    command = [
        sys.executable,
        "-m",
        "training.cli",
        "generate",
        "--data",
        str(data),
        "--teacher",
        "llamacpp:smollm2-135m-instruct",
        "--out",
        str(out),
        "--max-tokens",
        "16",
        "--no-progress",
        "--json",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"generate ended before it could be killed: {proc.communicate()[1][-2000:]!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_jsonl(out)  # tolerates a torn last line
    assert 2 <= len(before) < 5

    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["already_done"] == len(before)  # the finished ones were not asked (paid) again
    assert report["written"] == 5 - len(before) and report["failed"] == 0
    after = read_jsonl(out, tolerate_torn_tail=False)
    assert sorted(r["id"] for r in after) == sorted(f"x{i}" for i in range(5))  # nothing lost, nothing twice
    assert after[: len(before)] == before  # earlier lines untouched
    assert all(r["teacher"].startswith("smollm2") and isinstance(r["subquestions"], list) for r in after)
    assert sum(r["output_tokens"] for r in after) > 0


def _decompositions(tmp_path: Path) -> Path:
    examples = load_examples(FIX / "socratic_tiny.jsonl", limit=3)
    out = tmp_path / "dec.jsonl"
    generate(examples, "human", out, progress=False)
    return out


def test_screen_keeps_matches_recovers_with_second_sample_and_resumes(tmp_path):
    dec = _decompositions(tmp_path)  # gold answers 31, 20, 140
    out = tmp_path / "scr.jsonl"
    solver = scripted(
        "36 pens, minus 5.\nThe answer is: 31",
        "The answer is: 19",
        "The answer is: 20",
        "The answer is: 7",
        "The answer is: 9",
    )
    second = scripted(
        '{"subquestions": ["How much do the apples cost?", "How much do the pears cost?"]}',
        '{"subquestions": ["How many days are in a week?"]}',
    )
    report = screen(dec, solver, out, second_teacher=second, retries=0, progress=False)
    assert (report.kept, report.total, report.recovered, report.new) == (2, 3, 1, 3)
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert rows["socratic_tiny-0"]["correct"] and rows["socratic_tiny-0"]["sample"] == 1
    recovered = rows["socratic_tiny-1"]
    assert recovered["correct"] and recovered["sample"] == 2
    assert recovered["subquestions"] == ["How much do the apples cost?", "How much do the pears cost?"]
    assert recovered["first"]["predicted"] == "19"
    assert not rows["socratic_tiny-2"]["correct"] and rows["socratic_tiny-2"]["predicted"] == "7"  # first kept
    assert "The answer is: 31" in rows["socratic_tiny-0"]["solution"]
    # a rerun has nothing left to do: the (empty) scripted solver is never called
    again = screen(dec, scripted(), out, retries=0, progress=False)
    assert (again.kept, again.total, again.new) == (2, 3, 0)


def test_screen_needs_gold_answers(tmp_path):
    dec = tmp_path / "dec.jsonl"
    generate(load_examples(FIX / "generic.jsonl", limit=3)[2:], "human", dec, progress=False)  # q3: no answer
    with pytest.raises(TrainingError, match="no gold answer"):
        screen(dec, scripted(), tmp_path / "s.jsonl", progress=False)


def test_screen_learned_skip_keeps_an_empty_plan_only_where_chain_of_thought_wins(tmp_path):
    from training.build import build

    dec = _decompositions(tmp_path)  # gold answers 31, 20, 140
    out = tmp_path / "scr.jsonl"
    solver = scripted(
        "The answer is: 31",  # 0: the plan works -> kept with its plan
        "The answer is: 19",  # 1: the plan fails ...
        "Step by step: 8 + 12 = 20.\nThe answer is: 20",  # ... its own chain of thought wins -> learned skip
        "The answer is: 7",  # 2: the plan fails ...
        "The answer is: 8",  # ... and so does chain of thought -> dropped
    )
    report = screen(dec, solver, out, skip="cot", retries=0, progress=False)
    assert (report.kept, report.skipped, report.total) == (2, 1, 3)
    rows = {r["id"]: r for r in read_jsonl(out)}
    skipped = rows["socratic_tiny-1"]
    assert skipped["sample"] == "skip" and skipped["subquestions"] == [] and skipped["correct"]
    assert skipped["first"]["predicted"] == "19" and skipped["first"]["subquestions"]
    assert not rows["socratic_tiny-2"]["correct"] and rows["socratic_tiny-2"]["predicted"] == "7"
    assert rows["socratic_tiny-2"]["cot"] == {"predicted": "8"}  # what the solver alone said, for the analysis
    built = build(tmp_path / "data", screened=out, kinds=["SD-R"], val_fraction=0.0)
    assert built.train == 2
    targets = {r["id"]: r["messages"][-1]["content"] for r in read_jsonl(tmp_path / "data" / "train.jsonl")}
    assert json.loads(targets["socratic_tiny-1"]) == {"subquestions": []}
    assert json.loads(targets["socratic_tiny-0"])["subquestions"]


def test_screen_scores_with_the_evaluations_rule(tmp_path):
    from langchain_dod.evaluation.metrics import gsm8k_strict
    from training.screen import answers_match

    cases = [
        ("31", "31"),
        ("$31.00", "31"),
        ("1,200", "1200"),
        ("31 pens, 5 left", "31"),
        ("3 or 31", "31"),
        (None, "31"),
        ("thirty-one", "31"),
    ]
    for predicted, gold in cases:
        assert answers_match(predicted, gold) == (predicted is not None and gsm8k_strict(predicted, gold)), predicted
    assert not answers_match("31 pens, 5 left", "31")  # the old last-number rule kept this; the evaluation does not
    assert answers_match("Paris, France", "Paris") and not answers_match("London", "Paris")
    with pytest.raises(TrainingError, match="skip must be"):
        screen(_decompositions(tmp_path), scripted(), tmp_path / "s.jsonl", skip="always", progress=False)


def test_screen_with_program_answers_computes_them_and_keeps_one_format_per_file(tmp_path):
    dec = _decompositions(tmp_path)  # gold answers 31, 20, 140
    out = tmp_path / "scr.jsonl"
    solver = scripted(
        "pens = 36\nsold = 5\nanswer = pens - sold",  # 0: the plan's program computes 31 -> kept
        "apples = 8\nanswer = apples + 11",  # 1: the plan's program computes 19 ...
        "apples = 8\npears = 12\nanswer = apples + pears",  # ... the program with no plan computes 20 -> skip
        "total = 14 * 10\nanswer = total + 1",  # 2: the plan's program computes 141 ...
        "The answer is: 139",  # ... and the reply with no plan (prose: its answer line is read) is wrong -> dropped
    )
    report = screen(dec, solver, out, skip="cot", answer_format="program", retries=0, progress=False)
    assert (report.kept, report.skipped, report.total) == (2, 1, 3)
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert rows["socratic_tiny-0"]["predicted"] == "31" and rows["socratic_tiny-0"]["subquestions"]
    assert rows["socratic_tiny-1"]["sample"] == "skip" and rows["socratic_tiny-1"]["predicted"] == "20"
    assert rows["socratic_tiny-2"]["predicted"] == "141" and rows["socratic_tiny-2"]["cot"] == {"predicted": "139"}
    assert not rows["socratic_tiny-2"]["correct"]
    assert {r["answer_format"] for r in rows.values()} == {"program"}
    # resuming the same file in the other format would mix two screens: refused with the remedy
    with pytest.raises(TrainingError, match="screened with answer_format 'program'.*new --out"):
        screen(dec, scripted(), out, retries=0, progress=False)
    assert screen(dec, scripted(), out, answer_format="program", retries=0, progress=False).new == 0
