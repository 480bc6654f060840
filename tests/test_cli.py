"""The ``dod`` command end to end, through a subprocess, with the real local models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
SOLVER = "llamacpp:smollm2-135m-instruct"  # the small model keeps these runs quick; the chain tests use Qwen
Q1 = "Tom has 3 boxes of 12 pens and gives away 5 pens. How many pens does he have left?"
Q2 = "A train travels 60 km per hour for 2 hours. How far does it go?"


def dod(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "langchain_dod.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )


def test_decompose_json_one_object_per_line() -> None:
    run = dod("decompose", Q1, "--json", "--max-subquestions", "2")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["question"] == Q1 and isinstance(obj["subquestions"], list) and len(obj["subquestions"]) <= 2
    assert obj["model"] == "smollm2-135m-instruct+smollm2-135m-decomposer-lora.gguf"  # the distilled default
    run = dod("decompose", Q1, "--json", "--profile", "multihop")  # each profile applies its own adapter
    assert json.loads(run.stdout)["model"] == "smollm2-135m-instruct+smollm2-135m-multihop-lora.gguf"
    run = dod("decompose", Q1, "--json", "--profile", "reading")
    assert json.loads(run.stdout)["model"] == "smollm2-135m-instruct"  # no adapter ships for reading: untuned base


def test_stdin_questions_one_json_line_each_and_bad_lines_do_not_lose_others() -> None:
    run = dod("ask", "-", "--json", "--solver", SOLVER, "--max-tokens", "48", stdin=f"{Q1}\n\n{Q2}\n")
    assert run.returncode == 0, run.stderr
    objs = [json.loads(line) for line in run.stdout.strip().splitlines()]
    assert [o["question"] for o in objs] == [Q1, Q2]
    for obj in objs:
        assert {"question", "subquestions", "solution", "answer", "usage"} <= set(obj)
        assert obj["usage"]["solver"]["model"] == "smollm2-135m-instruct"


def test_plain_output_and_stream() -> None:
    run = dod("decompose", Q1)
    assert run.returncode == 0 and (run.stdout.startswith("1. ") or "no decomposition" in run.stdout)
    run = dod("ask", Q2, "--solver", SOLVER, "--max-tokens", "32", "--stream")
    assert run.returncode == 0, run.stderr
    assert "answer:" in run.stdout


def test_single_stage_json() -> None:
    run = dod("ask", Q2, "--single-stage", "--mode", "direct", "--json", "--solver", SOLVER, "--max-tokens", "24")
    assert run.returncode == 0, run.stderr
    obj = json.loads(run.stdout)
    assert obj["subquestions"] == [] and obj["mode"] == "single-stage-direct"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("decompose", "   "), "empty"),
        (("decompose", Q1, "--decomposer", "/nonexistent/model.gguf"), "No such model file"),
        (("decompose", Q1, "--max-subquestions", "0"), "at least 1"),
        (("ask", Q1, "--solver", "nonsense"), "not a SPEC"),
    ],
)
def test_bad_input_exits_nonzero_with_a_clear_message(args: tuple[str, ...], message: str) -> None:
    run = dod(*args)
    assert run.returncode != 0
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_bad_line_in_json_mode_is_reported_and_others_answered(tmp_path: Path) -> None:
    long_question = "How many apples? " * 2000  # over the decomposer's 4096-token window
    run = dod("decompose", "-", "--json", stdin=f"{long_question}\n{Q2}\n")
    assert run.returncode == 1
    first, second = (json.loads(line) for line in run.stdout.strip().splitlines())
    assert "n_ctx" in first["error"]
    assert second["question"] == Q2 and isinstance(second["subquestions"], list)


def test_models_lists_the_registry() -> None:
    run = dod("models")
    assert run.returncode == 0
    assert "smollm2-135m-instruct" in run.stdout and "qwen2.5-coder-1.5b-instruct" in run.stdout


def test_default_decompose_runs_without_langchain_and_gives_what_the_runnable_gives() -> None:
    """``dod decompose`` with the shipped default takes the lean path (issue 16: cold start) to the same answer.

    Neither LangChain nor pydantic (~0.2 s to import) is loaded on that path.
    """
    code = (
        "import json, sys\nfrom langchain_dod.cli import main\n"
        f"main(['decompose', '--json', {Q1!r}])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('langchain_core', 'langsmith', 'pydantic', "
        "'langchain_dod.evaluation', 'langchain_dod.chat_models', 'langchain_dod.decomposition_model', "
        "'training')))))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=600)
    assert run.returncode == 0, run.stderr
    answer, modules = (json.loads(line) for line in run.stdout.strip().splitlines())
    assert modules == []
    from langchain_dod import Decomposer

    expected = Decomposer().invoke(Q1).model_dump(exclude={"raw", "seconds"})
    assert {k: v for k, v in answer.items() if k not in ("question", "seconds")} == expected
