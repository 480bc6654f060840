"""The evaluation runner: records, resume, torn lines, errors, concurrency, and a real SmolLM2 decomposer.

The solver is a scripted fake (answers looked up by question) wherever the solver is not under test; the
decomposer in the real-model tests is SmolLM2-135M through llama.cpp.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from langchain_dod.cli import main
from langchain_dod.evaluation.datasets import load_dataset, select_items
from langchain_dod.evaluation.runner import EvaluationError, ResultsFile, RunSpec, run_evaluation

FIX = Path(__file__).parent / "fixtures" / "eval"
GSM = FIX / "gsm8k_mini.jsonl"
SOCRATIC = FIX / "gsm8k_mini_socratic.jsonl"

REPLIES = {
    "3 bags": "3 * 4 = 12, 12 - 2 = 10.\nThe answer is: 10",
    "ticket": "2 * 1,250 = 2,500.\nThe answer is: $2,500",
    "temperature": "4 - 9 = -5.\nThe answer is: 5 degrees below zero",  # strict: 5 ≠ -5
    "pen costs": "I cannot tell.",  # nothing to parse: counted wrong, flagged
    "reads 10 pages": "10 * 7 = 70.\nThe answer is: 10 * 7 = 70",  # lenient only
}


class AnswerBook(BaseChatModel):
    """Scripted solver: replies by a key found in the question; raises for keys in ``fail``."""

    replies: dict[str, str] = REPLIES
    fail: dict[str, str] = {}
    error: str = "runtime"
    delay: float = 0.0
    _calls: list[str] = PrivateAttr(default_factory=list)
    _active: int = PrivateAttr(default=0)
    _peak: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "answer-book"

    def _generate(self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        prompt = str(messages[-1].content)
        with self._lock:
            self._calls.append(prompt)
            self._active += 1
            self._peak = max(self._peak, self._active)
        try:
            time.sleep(self.delay)
            for key, message in self.fail.items():
                if key in prompt:
                    if self.error == "not-found":
                        from langchain_dod.models import ModelNotFoundError

                        raise ModelNotFoundError(message)
                    raise RuntimeError(message)
            reply = next((v for k, v in self.replies.items() if k in prompt), "no idea")
        finally:
            with self._lock:
                self._active -= 1
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_scores_costs_and_manifest(tmp_path):
    ds = load_dataset(GSM)
    solver = AnswerBook()
    cot = RunSpec(solver=solver, mode="cot", name="cot")
    oracle = RunSpec(solver=solver, decomposer="oracle", socratic=str(SOCRATIC), name="oracle")
    summary = run_evaluation(ds, [cot, oracle], tmp_path, seed=1, progress=False)
    assert {k: (v["done"], v["errors"]) for k, v in summary.items()} == {"cot": (5, 0), "oracle": (5, 0)}

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["ids"] == [i.id for i in select_items(ds.items, None, 1)]
    assert manifest["dataset"]["sha256"] == ds.sha256 and manifest["seed"] == 1

    by_id = {r["id"]: r for r in _records(tmp_path / "runs" / "cot.jsonl")}
    assert set(by_id) == set(manifest["ids"])
    scores = {r["gold"]: (r["scores"]["strict"], r["scores"]["lenient"], r["parsed"]) for r in by_id.values()}
    assert scores == {
        "10": (1.0, 1.0, True),
        "2500": (1.0, 1.0, True),
        "-5": (0.0, 0.0, True),
        "4.5": (0.0, 0.0, False),
        "70": (0.0, 1.0, True),
    }
    usage = by_id["gsm8k_mini-0000"]["usage"]
    assert usage["decomposer"] is None
    solver_usage = usage["solver"]
    assert solver_usage["token_source"] == "estimate"  # the fake reports no usage and has no tokenizer
    assert solver_usage["input_tokens"] > 10 and solver_usage["output_tokens"] > 3
    assert solver_usage["local"] is False and solver_usage["cpu_seconds"] is not None

    oracle_rows = {r["id"]: r for r in _records(tmp_path / "runs" / "oracle.jsonl")}
    pens = oracle_rows["gsm8k_mini-0003"]
    assert pens["subquestions"] == ["How much is one pen?", "How much are two pens?", "How much are three pens?"]
    assert pens["usage"]["decomposer"]["model"] == "oracle:gsm8k-socratic"
    assert pens["usage"]["decomposer"]["input_tokens"] == 0
    asked = [c for c in solver._calls if "A pen costs" in c and "Sub-questions" in c]
    assert len(asked) == 1 and "3. How much are three pens?" in asked[0] and "What is the total?" not in asked[0]

    meta = json.loads((tmp_path / "runs" / "oracle.meta.json").read_text())
    assert meta["spec"]["decomposer"] == "oracle" and meta["segments"][0]["items"] == 5
    assert meta["spec"]["oracle_rule"].startswith("datasets.socratic_subquestions")  # the one Socratic rule
    assert meta["wall_seconds"] >= 0


def test_exclude_leaves_training_ids_out_and_is_part_of_the_manifest(tmp_path):
    """`exclude`: ids seen in training (a decompositions JSONL) never enter the items; changing it is refused."""
    ds = load_dataset(GSM)
    trained = tmp_path / "decompositions.jsonl"
    trained.write_text(json.dumps({"id": "gsm8k_mini-1", "subquestions": []}) + "\n")  # the other id spelling
    out = tmp_path / "val"
    summary = run_evaluation(
        ds, [RunSpec(solver=AnswerBook(), mode="cot", name="cot")], out, exclude=[trained], seed=1, progress=False
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert summary["cot"]["done"] == 4 and "gsm8k_mini-0001" not in manifest["ids"]
    assert manifest["ids"] == [i.id for i in select_items([i for i in ds.items if i.id != "gsm8k_mini-0001"], None, 1)]
    assert manifest["exclude"] == [str(trained)]
    with pytest.raises(EvaluationError, match="excluded ids differ"):
        run_evaluation(ds, [RunSpec(solver=AnswerBook(), mode="cot", name="cot")], out, seed=1, progress=False)


def test_eval_run_cli_passes_exclude(tmp_path, monkeypatch):
    import langchain_dod.evaluation.runner as runner

    seen: dict[str, Any] = {}
    monkeypatch.setattr(runner, "run_evaluation", lambda ds, specs, out, **kw: seen.update(kw) or {})
    args = ["eval", "run", "--data", str(GSM), "--out", str(tmp_path), "--single-stage", "cot"]
    assert main([*args, "--exclude", "a.jsonl", "--exclude", "m.json"]) == 0
    assert seen["exclude"] == ["a.jsonl", "m.json"]


def test_resume_extends_and_repairs_a_torn_last_line(tmp_path):
    ds = load_dataset(GSM)
    first = AnswerBook()
    run_evaluation(ds, [RunSpec(solver=first, mode="cot", name="cot")], tmp_path, limit=3, seed=0, progress=False)
    results = tmp_path / "runs" / "cot.jsonl"
    assert len(_records(results)) == 3 and len(first._calls) == 3
    with results.open("a") as fh:  # the process died while writing the 4th record
        fh.write('{"id": "gsm8k_mini-00')

    second = AnswerBook()
    summary = run_evaluation(
        ds, [RunSpec(solver=second, mode="cot", name="cot")], tmp_path, limit=5, seed=0, progress=False
    )
    rows = _records(results)
    assert len(rows) == 5 and len({r["id"] for r in rows}) == 5  # nothing lost, nothing twice
    assert len(second._calls) == 2  # only the two new items ran
    assert summary["cot"]["done"] == 5
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["ids"] == [i.id for i in select_items(ds.items, 5, 0)]

    third = AnswerBook()  # nothing left to do
    run_evaluation(ds, [RunSpec(solver=third, mode="cot", name="cot")], tmp_path, limit=5, seed=0, progress=False)
    assert third._calls == [] and len(_records(results)) == 5
    meta = json.loads((tmp_path / "runs" / "cot.meta.json").read_text())
    assert [s["items"] for s in meta["segments"]] == [3, 2]


def test_results_file_keeps_a_complete_last_record_without_newline(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a", "x": 1}\n{"id": "b", "x": 2}')
    assert set(ResultsFile(path).load()) == {"a", "b"}
    assert path.read_text().endswith("}\n")
    path.write_text('{"id": "a"}\ngarbage\n{"id": "b"}\n')
    with pytest.raises(EvaluationError, match="corrupt line"):
        ResultsFile(path).load()


def test_failing_items_are_recorded_wrong_and_retried_on_request(tmp_path):
    ds = load_dataset(GSM)
    flaky = AnswerBook(fail={"ticket": "solver timed out"})
    spec = dict(mode="cot", name="cot")
    summary = run_evaluation(ds, [RunSpec(solver=flaky, **spec)], tmp_path, progress=False)
    assert summary["cot"] == {**summary["cot"], "done": 5, "errors": 1}
    bad = next(r for r in _records(tmp_path / "runs" / "cot.jsonl") if r["gold"] == "2500")
    assert "solver timed out" in bad["error"] and bad["scores"] == {"strict": 0.0, "lenient": 0.0}
    assert bad["prediction"] is None and bad["parsed"] is False
    assert bad["usage"]["solver"]["model"] == "AnswerBook" and bad["usage"]["solver"]["input_tokens"] > 0

    again = AnswerBook()
    run_evaluation(ds, [RunSpec(solver=again, **spec)], tmp_path, progress=False)
    assert again._calls == []  # an error counts as done unless asked to retry
    summary = run_evaluation(ds, [RunSpec(solver=again, **spec)], tmp_path, retry_errors=True, progress=False)
    assert len(again._calls) == 1 and summary["cot"]["errors"] == 0


def test_configuration_errors_stop_the_run_and_record_nothing(tmp_path):
    ds = load_dataset(GSM)
    broken = AnswerBook(fail={"": "no such GGUF"}, error="not-found")
    with pytest.raises(EvaluationError, match="cannot run: ModelNotFoundError: no such GGUF"):
        run_evaluation(ds, [RunSpec(solver=broken, mode="direct", name="d")], tmp_path, progress=False)
    assert not (tmp_path / "runs" / "d.jsonl").exists() or _records(tmp_path / "runs" / "d.jsonl") == []


def test_a_changed_configuration_or_data_set_is_refused(tmp_path):
    ds = load_dataset(GSM)
    run_evaluation(ds, [RunSpec(solver=AnswerBook(), mode="cot", name="cot")], tmp_path, limit=2, progress=False)
    with pytest.raises(EvaluationError, match="another configuration"):
        run_evaluation(
            ds, [RunSpec(solver=AnswerBook(), mode="cot", name="cot", max_tokens=50)], tmp_path, limit=2, progress=False
        )
    with pytest.raises(EvaluationError, match="other items"):
        run_evaluation(
            ds, [RunSpec(solver=AnswerBook(), mode="cot", name="cot")], tmp_path, limit=2, seed=7, progress=False
        )
    with pytest.raises(ValueError, match="share a name"):
        run_evaluation(
            ds,
            [RunSpec(solver=AnswerBook(), mode="cot", name="x"), RunSpec(solver=AnswerBook(), mode="direct", name="x")],
            tmp_path / "other",
        )
    with pytest.raises(ValueError, match="needs socratic"):
        RunSpec(solver="llamacpp:x", decomposer="oracle")
    with pytest.raises(ValueError, match="single-stage"):
        RunSpec(solver="llamacpp:x", decomposer="oracle", mode="cot", socratic="s.jsonl")


def test_a_renamed_adapter_is_the_same_adapter_and_a_changed_one_is_not(tmp_path, monkeypatch):
    """Shipping a candidate under the package's file name continues its run; other bytes or settings do not."""
    from langchain_dod.evaluation.runner import spec_changes

    candidate = tmp_path / "adapter.gguf"
    candidate.write_bytes(b"candidate A")
    monkeypatch.setenv("DOD_DECOMPOSER_ADAPTER", str(candidate))
    recorded = RunSpec(solver="llamacpp:x", decomposer="default").describe()
    shipped = tmp_path / "smollm2-135m-decomposer-lora.gguf"
    shipped.write_bytes(b"candidate A")
    monkeypatch.setenv("DOD_DECOMPOSER_ADAPTER", str(shipped))
    now = RunSpec(solver="llamacpp:x", decomposer="default").describe()
    assert now["adapter"] != recorded["adapter"] and spec_changes(recorded, now) == {}
    shipped.write_bytes(b"candidate B")
    later = RunSpec(solver="llamacpp:x", decomposer="default").describe()
    assert set(spec_changes(recorded, later)) == {"adapter"}
    shipped.write_bytes(b"candidate A")
    other_solver = RunSpec(solver="llamacpp:y", decomposer="default").describe()
    assert set(spec_changes(recorded, other_solver)) == {"solver", "name"}
    assert set(spec_changes({**recorded, "extra": 1}, now)) == {"extra"}


def test_default_decomposer_runs_are_tied_to_the_adapter_they_used(tmp_path, monkeypatch):
    """``--decomposer default`` means whichever adapter ships: a new adapter must not extend old results."""
    adapter = tmp_path / "a.gguf"
    adapter.write_bytes(b"first adapter")
    monkeypatch.setenv("DOD_DECOMPOSER_ADAPTER", str(adapter))
    first = RunSpec(solver="llamacpp:x", decomposer="default").describe()
    assert first["adapter"].startswith("a.gguf:")
    adapter.write_bytes(b"retrained adapter")
    assert RunSpec(solver="llamacpp:x", decomposer="default").describe()["adapter"] != first["adapter"]
    monkeypatch.setenv("DOD_DECOMPOSER_ADAPTER", "none")
    assert RunSpec(solver="llamacpp:x", decomposer="default").describe()["adapter"] is None
    assert "adapter" not in RunSpec(solver="llamacpp:x", decomposer="llamacpp:y").describe()


def test_runs_are_tied_to_the_prompts_they_sent(tmp_path, monkeypatch):
    """A changed wording must not extend a run's earlier items; runs made before prompts were recorded: see below."""
    from langchain_core.runnables import RunnableLambda

    import langchain_dod.prompts as prompts

    ds = load_dataset(GSM)
    plan = RunnableLambda(lambda _: ["What is 3 * 4?"])
    two_stage = RunSpec(solver=AnswerBook(), decomposer=plan, name="dec")
    run_evaluation(ds, [two_stage], tmp_path, limit=2, progress=False)
    before = two_stage.prompts_id()
    original = prompts.solver_messages

    def reworded(*args, **kwargs):
        messages = original(*args, **kwargs)
        return [{**messages[0], "content": "Another wording. " + messages[0]["content"]}, *messages[1:]]

    monkeypatch.setattr(prompts, "solver_messages", reworded)
    assert two_stage.prompts_id() != before
    with pytest.raises(EvaluationError, match="another configuration.*prompts"):
        run_evaluation(ds, [two_stage], tmp_path, limit=2, progress=False)
    monkeypatch.setattr(prompts, "solver_messages", original)
    # a run recorded before prompts were: single-stage goes on (its prompts never changed), two-stage is refused
    run_evaluation(ds, [RunSpec(solver=AnswerBook(), mode="cot", name="cot")], tmp_path, limit=2, progress=False)
    for name in ("cot", "dec"):
        meta_path = tmp_path / "runs" / f"{name}.meta.json"
        meta = json.loads(meta_path.read_text())
        del meta["spec"]["prompts"]
        meta_path.write_text(json.dumps(meta))
    run_evaluation(ds, [RunSpec(solver=AnswerBook(), mode="cot", name="cot")], tmp_path, limit=3, progress=False)
    with pytest.raises(EvaluationError, match="before the prompts were recorded"):
        run_evaluation(ds, [two_stage], tmp_path, limit=3, progress=False)


def test_concurrency_and_interleaved_chunks(tmp_path):
    ds = load_dataset(GSM)
    slow = AnswerBook(delay=0.2)
    specs = [RunSpec(solver=slow, mode="cot", name="a"), RunSpec(solver=slow, mode="direct", name="b")]
    run_evaluation(ds, specs, tmp_path, max_concurrency=2, chunk=2, progress=False)
    assert slow._peak == 2
    rows = _records(tmp_path / "runs" / "a.jsonl")
    assert len(rows) == 5 and all(r["usage"]["solver"]["cpu_seconds"] is None for r in rows)  # not attributable
    segments = json.loads((tmp_path / "runs" / "a.meta.json").read_text())["segments"]
    assert sum(s["items"] for s in segments) == 5


@pytest.mark.slow
def test_real_smollm2_decomposer_feeds_the_solver(tmp_path, smollm2_path):
    ds = load_dataset(GSM)
    solver = AnswerBook()
    spec = RunSpec(solver=solver, decomposer="llamacpp:smollm2-135m-instruct", name="smol", n_threads=1)
    run_evaluation(ds, [spec], tmp_path, limit=2, seed=0, progress=False)
    rows = _records(tmp_path / "runs" / "smol.jsonl")
    assert len(rows) == 2 and all(r["error"] is None for r in rows)
    for row in rows:
        dec = row["usage"]["decomposer"]
        assert dec["model"] == "smollm2-135m-instruct" and dec["token_source"] == "usage" and dec["local"] is True
        assert dec["input_tokens"] > 100 and dec["output_tokens"] >= 5 and dec["cpu_seconds"] > 0
        assert dec["seconds"] > 0 and row["seconds"] >= dec["seconds"]
        prompt = (
            next(c for c in solver._calls if row["subquestions"] and row["subquestions"][0] in c)
            if row["subquestions"]
            else None
        )
        if prompt is not None:
            assert all(q in prompt for q in row["subquestions"])


@pytest.mark.slow
def test_cli_real_small_run_then_report_and_compare(tmp_path, smollm2_path, capsys):
    out = tmp_path / "ev"
    args = [
        "eval",
        "run",
        "--data",
        str(GSM),
        "--limit",
        "2",
        "--out",
        str(out),
        "--solver",
        "llamacpp:smollm2-135m-instruct",
        "--single-stage",
        "direct",
        "--decomposer",
        "oracle",
        "--socratic",
        str(SOCRATIC),
        "--max-tokens",
        "16",
        "--n-threads",
        "1",
        "--label",
        "human",
        "--report",
        "--no-progress",
    ]
    assert main(args) == 0
    assert sorted(p.name for p in (out / "runs").glob("*.jsonl")) == [  # --label names the two-stage run only
        "direct__smollm2-135m-instruct.jsonl",
        "oracle-human__smollm2-135m-instruct.jsonl",
    ]
    report = (out / "report.md").read_text()
    assert "`direct__smollm2-135m-instruct`" in report and "`oracle-human__smollm2-135m-instruct`" in report
    assert (out / "accuracy_vs_cost.png").stat().st_size > 1000
    rows = _records(out / "runs" / "direct__smollm2-135m-instruct.jsonl")
    assert all(
        r["usage"]["solver"]["token_source"] == "usage" and r["usage"]["solver"]["output_tokens"] <= 16 for r in rows
    )
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "compare",
                str(out),
                "direct__smollm2-135m-instruct",
                "oracle-human__smollm2-135m-instruct",
                "--json",
            ]
        )
        == 0
    )
    compared = json.loads(capsys.readouterr().out)
    assert compared["n"] == 2 and compared["metric"] == "strict"
    assert main(["eval", "run", "--data", str(GSM), "--out", str(out), "--single-stage", "cot", "--seed", "5"]) == 1
    assert "other items" in capsys.readouterr().err


def test_token_counts_fall_back_to_the_models_own_tokenizer(tmp_path):
    ds = load_dataset(GSM)
    words = AnswerBook(custom_get_token_ids=lambda text: list(range(len(text.split()))))
    run_evaluation(ds, [RunSpec(solver=words, mode="direct", name="d")], tmp_path, limit=1, seed=None, progress=False)
    (row,) = _records(tmp_path / "runs" / "d.jsonl")
    usage = row["usage"]["solver"]
    assert usage["token_source"] == "tokenizer"
    assert usage["output_tokens"] == len(REPLIES["3 bags"].split())  # the reply, counted by that tokenizer
    from langchain_dod.prompts import solver_messages

    prompt = "\n".join(m["content"] for m in solver_messages(ds.items[0].question, mode="direct"))
    assert usage["input_tokens"] == len(prompt.split())


PROGRAMS = {
    "3 bags": "bags = 3\napples = bags * 4\nanswer = apples - 2",
    "ticket": "answer = 2 * 1250",
    "temperature": "answer = 4 - 9",  # the text reply's "5 degrees below zero" was wrong; -5 is right
    "pen costs": "I cannot tell.",
    "reads 10 pages": "pages = 10 * 7 = 70",  # the model's own result after a second `=`: the expression counts
}


def test_program_runs_are_scored_on_the_computed_answer_and_kept_apart(tmp_path):
    ds = load_dataset(GSM)
    text = RunSpec(solver="llamacpp:x", mode="cot")
    program = RunSpec(solver=AnswerBook(replies=PROGRAMS), mode="cot", answer_format="program")
    assert program.name == "cot-program__AnswerBook" and text.name == "cot__x"
    assert program.describe()["answer_format"] == "program" and "answer_format" not in text.describe()
    assert program.prompts_id() != RunSpec(solver=AnswerBook(), mode="cot").prompts_id()
    two_stage = RunSpec(solver="llamacpp:x", decomposer="oracle", socratic=str(SOCRATIC), answer_format="program")
    assert two_stage.name == "oracle-program__x"
    run_evaluation(ds, [program], tmp_path, progress=False)
    got = {
        r["id"]: (r["prediction"], r["scores"]["strict"]) for r in _records(tmp_path / "runs" / f"{program.name}.jsonl")
    }
    assert sorted(got.values(), key=str) == sorted(
        [("10", 1.0), ("2500", 1.0), ("-5", 1.0), (None, 0.0), ("70", 1.0)], key=str
    )
    from langchain_dod.evaluation.report import load_evaluation, summarize

    ev = load_evaluation(tmp_path)  # the report re-scores the stored programs the way the chain read them
    meta, records = ev.runs[program.name]
    summary = summarize(program.name, meta, records, ev.fmt)
    assert summary.unparsed == 1 and summary.metrics["strict"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="'direct' answers in one line"):
        RunSpec(solver="llamacpp:x", mode="direct", answer_format="program")
    with pytest.raises(ValueError, match="answer_format must be one of"):
        RunSpec(solver="llamacpp:x", mode="cot", answer_format="json")
    argv = ["eval", "run", "--data", str(GSM), "--out", str(tmp_path / "x"), "--single-stage", "direct"]
    assert main([*argv, "--answer-format", "program"]) == 2 and not (tmp_path / "x").exists()
