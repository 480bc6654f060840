"""Stage 2 (SD-R): keep the teacher decompositions that lead the solver to the gold answer.

The solver answers each question with the teacher's sub-questions through the runtime's own
:class:`~langchain_dod.chains.DecomposeSolve` (same prompt, same answer extraction as at inference). An example
whose answer is wrong may get a second teacher sample (sampled, ``temperature`` > 0); if that one leads to the
gold answer, its sub-questions are kept instead.

**Learned skip** (``skip="cot"``): where no decomposition led the solver to the gold answer but the solver's own
single-stage chain of thought did, the example is kept with no sub-questions (``{"subquestions": []}`` becomes
its SD-R target, ``sample`` is ``"skip"``): the student learns to leave alone the questions a plan only hurts.

``answer_format="program"`` screens with the solver writing a program (the runtime's ``answer_format``; the
answer is computed from its assignments, as ``dod eval run --answer-format program`` scores it); the learned skip
then asks for a program with no plan, which is what the chain does with an empty plan. Every screened line
records its ``answer_format``; one output file holds one format.

Correctness is the evaluation's own rule (``dod eval``: the answer the runtime extracts, scored strictly against
the gold number; text answers by normalised match), so what the screen keeps is what the evaluation scores right.
Output: one line per example (kept or not, with the solver's text, which ``build`` also turns into SE-T / SE-A
solver data), append-only and resumable like ``generate``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from training.data import Example
from training.errors import TrainingError
from training.generate import decompose_with_retries, make_teacher
from training.runs import failed_path, is_fatal, write_as_finished
from training.settings import setting, with_settings
from training.store import read_jsonl, read_records

__all__ = ["ScreenConfig", "ScreenReport", "answers_match", "screen"]


@dataclass
class ScreenConfig:
    """How ``screen`` solves and keeps (the ``[screen]`` table besides ``solver``, and the CLI flags)."""

    second_teacher: Any = setting(None, type=str, help="teacher SPEC (or model) for a second sample of the failures")
    second_temperature: float = setting(0.7)
    skip: str | None = setting(
        None,
        type=str,
        choices=("cot",),
        help="learned skip: keep an empty plan where no decomposition but the solver's own chain of thought won",
    )
    answer_format: str = setting(
        "text",
        type=str,
        choices=("text", "program"),
        help="how the solver answers, as dod eval run --answer-format (program: assignments the runtime computes)",
    )
    max_tokens: int | None = setting(400, help="solver output limit (as dod eval run)")
    max_concurrency: int = setting(1)
    retries: int = setting(2)
    backoff: float = setting(1.0)


def answers_match(predicted: str | None, gold: str | None) -> bool:
    """The evaluation's own rule (``metrics.score`` for generic data, one gold answer).

    A numeric gold needs exactly that one number (``gsm8k_strict``, how ``dod eval`` scores GSM8K); a text gold
    needs its normalised text inside the normalised answer (``contains``, Bamboogle's accuracy).
    """
    from langchain_dod.evaluation.metrics import score

    if predicted is None or not gold:
        return False
    scores = score("jsonl", predicted, ((gold,),))
    return bool(scores.get("strict", scores["contains"]))


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


def _solve(
    solver: Any, record: dict[str, Any], subquestions: list[str] | None, answer_format: str = "text"
) -> dict[str, Any]:
    """The runtime's chain: two-stage with these sub-questions, or (``None``) single-stage chain of thought."""
    from langchain_core.runnables import RunnableLambda

    from langchain_dod.chains import DecomposeSolve, SingleStage

    question = {"question": record["question"], "context": record.get("context")}
    if subquestions is None:
        return SingleStage(solver=solver, mode="cot", answer_format=answer_format).invoke(question)
    chain = DecomposeSolve(
        decomposer=RunnableLambda(lambda _: list(subquestions)), solver=solver, answer_format=answer_format
    )
    return chain.invoke(question)


def screen(
    decompositions: str | Path | Sequence[dict[str, Any]],
    solver: Any,
    out: str | Path,
    config: ScreenConfig | None = None,
    *,
    progress: bool = True,
    **settings: Any,
) -> ScreenReport:
    """Screen every decomposition (from ``generate``) with ``solver`` (SPEC or LangChain model) into ``out``.

    Settings (:class:`ScreenConfig`) come as ``config`` and/or keywords. ``skip="cot"`` adds the learned skip
    (module docstring); ``max_tokens`` caps a SPEC solver's reply (400, as ``dod eval run`` does by default, so
    the screen sees the replies the evaluation would score). ``second_teacher`` may also be a LangChain model.
    """
    cfg = with_settings(ScreenConfig, config, settings, "screen")
    if cfg.skip not in (None, "cot"):
        raise TrainingError(
            f"skip must be 'cot' (no-plan targets where chain of thought wins) or None, not {cfg.skip!r}."
        )
    if cfg.answer_format not in ("text", "program"):
        raise TrainingError(f"answer_format must be 'text' or 'program', not {cfg.answer_format!r}.")
    records = _decompositions(decompositions)
    out = Path(out)
    done = read_records(out)
    _check_format(done, cfg.answer_format, out)
    solver = _solver(solver, cfg.max_tokens)
    second = _second_teacher(cfg.second_teacher, cfg.second_temperature, records[0])
    todo = [r for r in records if str(r["id"]) not in done]
    work = _screen_one(_Solve(solver, cfg.retries, cfg.backoff, cfg.answer_format), second, cfg, solver)
    new, failed = _write_screened(todo, work, out, len(records), cfg.max_concurrency, progress)
    return _report(out, len(records), new, failed)


def _check_format(done: dict[str, dict[str, Any]], answer_format: str, out: Path) -> None:
    """Refuse to resume a file screened in another answer format (lines before the option count as text)."""
    found = {r.get("answer_format", "text") for r in done.values()} - {answer_format}
    if found:
        raise TrainingError(
            f"{out} was screened with answer_format {sorted(found)[0]!r}, not {answer_format!r}: pass that "
            "answer format to resume it, or screen into a new --out file."
        )


def _screen_one(solve: _Solve, second: Any, cfg: ScreenConfig, solver: Any) -> Any:
    """What one record's screened line holds: the teacher's plan, a second sample, or a learned skip."""
    from langchain_dod.solvers import model_label

    label = model_label(solver)

    def work(record: dict[str, Any]) -> dict[str, Any]:
        result = _first_then_second(solve, record, second, cfg.retries, cfg.backoff)
        if not result["correct"] and cfg.skip == "cot":
            result = _learned_skip(solve, record, result)
        keep = ("id", "question", "context", "answer", "teacher", "profile", "max_subquestions")
        return {**{k: record.get(k) for k in keep}, **result, "solver": label, "answer_format": cfg.answer_format}

    return work


def _write_screened(
    todo: list[dict[str, Any]], work: Any, out: Path, total: int, width: int, progress: bool
) -> tuple[int, int]:
    """Screen ``todo`` (``width`` at a time), one fsynced line each; ``(new, failed)``."""
    new = failed = 0
    bar = tqdm(total=total, initial=total - len(todo), desc="screen", unit="ex", disable=not progress)
    try:
        for finished in write_as_finished(
            todo,
            work,
            out,
            stage="screen",
            width=width,
            item_id=lambda r: r["id"],
            safe_before=total - len(todo),
            fatal=_fatal,
        ):
            if finished.failure is not None:
                failed += 1
                continue
            new += 1
            bar.update(1)
    finally:
        bar.close()
    return new, failed


def _fatal(err: BaseException) -> bool:
    """A fatal error, or one the chain raised because of a fatal error (a StageError around a missing model)."""
    return is_fatal(err) or is_fatal(getattr(err, "__cause__", None) or err)


def _decompositions(decompositions: str | Path | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records to screen; each needs its gold answer."""
    records = read_jsonl(decompositions) if isinstance(decompositions, (str, Path)) else list(decompositions)
    if not records:
        raise TrainingError(f"No decompositions to screen in {decompositions}; run generate first.")
    missing = [r.get("id") for r in records if not r.get("answer")]
    if missing:
        raise TrainingError(
            f"{len(missing)} decompositions have no gold answer (e.g. {missing[:3]}); screening (SD-R) needs one. "
            "Build SD-T data from them instead, or load the data with its answers."
        )
    return records


def _solver(solver: Any, max_tokens: int | None) -> Any:
    """A SPEC as a model, with the reply cap; a model as it is."""
    from langchain_dod.solvers import load_chat_model

    if not isinstance(solver, str):
        return solver
    try:
        return load_chat_model(solver, **({"max_tokens": max_tokens} if max_tokens else {}))
    except (ValueError, ImportError) as err:
        raise TrainingError(f"Solver: {err}") from None


def _second_teacher(second_teacher: Any, temperature: float, first: dict[str, Any]) -> Any:
    """The sampling teacher for a second try, asked with the settings the first teacher had; ``None`` for none."""
    if second_teacher is None:
        return None
    return make_teacher(
        second_teacher,
        profile=first.get("profile", "math"),
        max_subquestions=first.get("max_subquestions", 3),
        temperature=temperature,
        seed=1,
    )


class _Solve:
    """Solve one record with given sub-questions (``None``: single-stage chain of thought), retrying errors."""

    def __init__(self, solver: Any, retries: int, backoff: float, answer_format: str = "text") -> None:
        self.solver, self.retries, self.backoff = solver, retries, backoff
        self.answer_format = answer_format

    def __call__(self, record: dict[str, Any], subquestions: list[str] | None) -> dict[str, Any]:
        last: BaseException | None = None
        for n in range(self.retries + 1):
            if n:
                time.sleep(self.backoff * 2 ** (n - 1))
            try:
                result = _solve(self.solver, record, subquestions, self.answer_format)
                return {
                    "subquestions": list(subquestions or []),
                    "solution": result["solution"],
                    "predicted": result["answer"],
                    "correct": answers_match(result["answer"], record["answer"]),
                }
            except Exception as err:  # noqa: BLE001
                if _fatal(err):
                    raise
                last = err
        assert last is not None
        raise last


def _first_then_second(
    solve: _Solve, record: dict[str, Any], second: Any, retries: int, backoff: float
) -> dict[str, Any]:
    """The teacher's decomposition; when it fails and there is a second teacher, its sample if that one wins."""
    result = {**solve(record, record.get("subquestions") or []), "sample": 1}
    if result["correct"] or second is None:
        return result
    example = Example(str(record["id"]), record["question"], record["answer"], record.get("context"))
    decomposition, _ = decompose_with_retries(second, example, retries=retries, backoff=backoff)
    retry = solve(record, list(decomposition.subquestions))
    if retry["correct"]:
        return {**retry, "sample": 2, "first": {k: result[k] for k in ("subquestions", "predicted")}}
    return {**result, "second": {k: retry[k] for k in ("subquestions", "predicted")}}


def _learned_skip(solve: _Solve, record: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """No decomposition won: keep an empty plan when the solver's own chain of thought does (``sample`` "skip")."""
    alone = solve(record, None)
    if not alone["correct"]:  # kept for the analysis: neither a plan nor the solver alone reached the gold answer
        return {**result, "cot": {"predicted": alone["predicted"]}}
    tried = {k: result[k] for k in ("subquestions", "predicted")}
    earlier = {k: result[k] for k in ("second",) if k in result}
    return {**alone, "sample": "skip", "first": tried, **earlier}


def _report(out: Path, total: int, new: int, failed: int) -> ScreenReport:
    """Counts over everything in ``out``: this run's records and earlier runs'."""
    final = read_records(out)
    return ScreenReport(
        out=str(out),
        total=total,
        kept=sum(1 for r in final.values() if r.get("correct")),
        recovered=sum(1 for r in final.values() if r.get("correct") and r.get("sample") == 2),
        new=new,
        skipped=sum(1 for r in final.values() if r.get("correct") and r.get("sample") == "skip"),
        failed=failed,
    )
