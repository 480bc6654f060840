"""Stage 2 (SD-R): keep the teacher decompositions that lead the solver to the gold answer.

The solver answers each question with the teacher's sub-questions through the runtime's own
:class:`~langchain_dod.chains.DecomposeSolve` (same prompt, same answer extraction as at inference). An example
whose answer is wrong may get a second teacher sample (sampled, ``temperature`` > 0); if that one leads to the
gold answer, its sub-questions are kept instead.

**Learned skip** (``skip="cot"``): where no decomposition led the solver to the gold answer but the solver's own
single-stage chain of thought did, the example is kept with no sub-questions (``{"subquestions": []}`` becomes
its SD-R target, ``sample`` is ``"skip"``): the student learns to leave alone the questions a plan only hurts.

Correctness is the evaluation's own rule (``dod eval``: the answer the runtime extracts, scored strictly against
the gold number; text answers by normalised match), so what the screen keeps is what the evaluation scores right.
Output: one line per example (kept or not, with the solver's text, which ``build`` also turns into SE-T / SE-A
solver data), append-only and resumable like ``generate``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from training.data import Example
from training.errors import TrainingError
from training.generate import decompose_with_retries, make_teacher
from training.runs import bounded, failed_path, is_fatal
from training.store import JsonlWriter, read_jsonl, read_records

__all__ = ["ScreenReport", "answers_match", "screen"]

_NUM = re.compile(r"^-?\d+(?:\.\d+)?$")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def answers_match(predicted: str | None, gold: str | None) -> bool:
    """The evaluation's rule: a numeric gold needs exactly that one number (``gsm8k_strict``).

    That is how ``dod eval`` scores GSM8K; a text gold needs equal or contained normalised text.
    """
    from langchain_dod.evaluation.metrics import gsm8k_strict

    if predicted is None or gold is None:
        return False
    if _NUM.match(gold.strip().replace(",", "")):
        return gsm8k_strict(predicted, gold)
    p, g = _norm(predicted), _norm(gold)
    return bool(g) and (p == g or f" {g} " in f" {p} ")


@dataclass
class ScreenReport:
    """What one ``screen`` run did; ``kept``/``total`` count every example in ``out`` (this run and earlier)."""

    out: str
    total: int
    kept: int
    recovered: int
    new: int
    failed: int
    skipped: int = 0

    def summary(self) -> str:
        """One line for the CLI."""
        text = (
            f"kept {self.kept}/{self.total} decompositions ({self.recovered} by a second sample, "
            f"{self.skipped} as learned skips) in {self.out}"
        )
        if self.failed:
            text += f"; {self.failed} failed (see {failed_path(self.out)}; rerun to retry them)"
        return text


def _solve(solver: Any, record: dict[str, Any], subquestions: list[str] | None) -> dict[str, Any]:
    """The runtime's chain: two-stage with these sub-questions, or (``None``) single-stage chain of thought."""
    from langchain_core.runnables import RunnableLambda

    from langchain_dod.chains import DecomposeSolve, SingleStage

    question = {"question": record["question"], "context": record.get("context")}
    if subquestions is None:
        return SingleStage(solver=solver, mode="cot").invoke(question)
    chain = DecomposeSolve(decomposer=RunnableLambda(lambda _: list(subquestions)), solver=solver)
    return chain.invoke(question)


def screen(
    decompositions: str | Path | Sequence[dict[str, Any]],
    solver: Any,
    out: str | Path,
    *,
    second_teacher: Any = None,
    second_temperature: float = 0.7,
    skip: str | None = None,
    max_tokens: int | None = 400,
    max_concurrency: int = 1,
    retries: int = 2,
    backoff: float = 1.0,
    progress: bool = True,
) -> ScreenReport:
    """Screen every decomposition (from ``generate``) with ``solver`` (SPEC or LangChain model) into ``out``.

    ``skip="cot"`` adds the learned skip (module docstring); ``max_tokens`` caps a SPEC solver's reply (400, as
    ``dod eval run`` does by default, so the screen sees the replies the evaluation would score).
    """
    from langchain_dod.solvers import load_chat_model, model_label

    if skip not in (None, "cot"):
        raise TrainingError(f"skip must be 'cot' (no-plan targets where chain of thought wins) or None, not {skip!r}.")

    records = read_jsonl(decompositions) if isinstance(decompositions, (str, Path)) else list(decompositions)
    if not records:
        raise TrainingError(f"No decompositions to screen in {decompositions}; run generate first.")
    missing = [r.get("id") for r in records if not r.get("answer")]
    if missing:
        raise TrainingError(
            f"{len(missing)} decompositions have no gold answer (e.g. {missing[:3]}); screening (SD-R) needs one. "
            "Build SD-T data from them instead, or load the data with its answers."
        )
    if isinstance(solver, str):
        try:
            solver = load_chat_model(solver, **({"max_tokens": max_tokens} if max_tokens else {}))
        except (ValueError, ImportError) as err:
            raise TrainingError(f"Solver: {err}") from None
    label = model_label(solver)
    second = None
    if second_teacher is not None:
        first = records[0]
        second = make_teacher(
            second_teacher,
            profile=first.get("profile", "math"),
            max_subquestions=first.get("max_subquestions", 3),
            temperature=second_temperature,
            seed=1,
        )
    out = Path(out)
    done = read_records(out)
    todo = [r for r in records if str(r["id"]) not in done]

    def attempt(record: dict[str, Any], subquestions: list[str] | None) -> dict[str, Any]:
        last: BaseException | None = None
        for n in range(retries + 1):
            if n:
                import time

                time.sleep(backoff * 2 ** (n - 1))
            try:
                result = _solve(solver, record, subquestions)
                return {
                    "subquestions": list(subquestions or []),
                    "solution": result["solution"],
                    "predicted": result["answer"],
                    "correct": answers_match(result["answer"], record["answer"]),
                }
            except Exception as err:  # noqa: BLE001
                if is_fatal(err) or is_fatal(getattr(err, "__cause__", None) or err):
                    raise
                last = err
        assert last is not None
        raise last

    def work(record: dict[str, Any]) -> dict[str, Any]:
        result = attempt(record, record.get("subquestions") or [])
        result["sample"] = 1
        if not result["correct"] and second is not None:
            example = Example(str(record["id"]), record["question"], record["answer"], record.get("context"))
            decomposition, _ = decompose_with_retries(second, example, retries=retries, backoff=backoff)
            retry = attempt(record, list(decomposition.subquestions))
            if retry["correct"]:
                first = {k: result[k] for k in ("subquestions", "predicted")}
                result = {**retry, "sample": 2, "first": first}
            else:
                result["second"] = {k: retry[k] for k in ("subquestions", "predicted")}
        if not result["correct"] and skip == "cot":
            alone = attempt(record, None)
            if alone["correct"]:
                tried = {k: result[k] for k in ("subquestions", "predicted")}
                earlier = {k: result[k] for k in ("second",) if k in result}
                result = {**alone, "sample": "skip", "first": tried, **earlier}
        keep = ("id", "question", "context", "answer", "teacher", "profile", "max_subquestions")
        return {**{k: record.get(k) for k in keep}, **result, "solver": label}

    new = failed = 0
    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc="screen", unit="ex", disable=not progress)
    failed_writer: JsonlWriter | None = None
    try:
        with JsonlWriter(out) as writer, ThreadPoolExecutor(max_workers=max_concurrency) as pool:
            for record, future in bounded(pool, work, todo, max_concurrency):
                try:
                    produced = future.result()
                except Exception as err:  # noqa: BLE001
                    if is_fatal(err) or is_fatal(getattr(err, "__cause__", None) or err):
                        raise TrainingError(
                            f"screen stopped: {type(err).__name__}: {err} (results so far are safe "
                            f"in {out}; rerun to continue)."
                        ) from err
                    failed_writer = failed_writer or JsonlWriter(failed_path(out))
                    failed_writer.write({"id": record["id"], "error": f"{type(err).__name__}: {err}"})
                    failed += 1
                    continue
                writer.write(produced)
                new += 1
                bar.update(1)
    finally:
        bar.close()
        if failed_writer is not None:
            failed_writer.close()
    final = read_records(out)
    return ScreenReport(
        out=str(out),
        total=len(records),
        kept=sum(1 for r in final.values() if r.get("correct")),
        recovered=sum(1 for r in final.values() if r.get("correct") and r.get("sample") == 2),
        new=new,
        skipped=sum(1 for r in final.values() if r.get("correct") and r.get("sample") == "skip"),
        failed=failed,
    )
