"""Stage 1: teacher decompositions, written to an append-only JSONL keyed by example id.

The teacher is any SPEC ``dod ask`` takes (``llamacpp:qwen2.5-coder-1.5b-instruct``, ``openai:gpt-4o-mini``,
…), a LangChain model, or ``"given"``: the examples' own sub-questions (GSM8K Socratic, written by a model).
It is asked through
the runtime's :class:`~langchain_dod.decomposer.Decomposer`, i.e. with exactly the prompt the distilled model
will see. Each finished example is one fsynced line (:class:`~training.store.JsonlWriter`), so a rerun after a
crash or SIGKILL skips what is done, redoes only what was in flight, and never pays for an example twice.
Examples that still fail after the retries go to ``<out>.failed.jsonl`` with the error; the next run retries
them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from langchain_dod.evaluation.cost import PAPER_RATE
from training.data import Example
from training.errors import TrainingError
from training.runs import failed_path, is_fatal, write_as_finished
from training.settings import setting, with_settings
from training.store import read_records

__all__ = [
    "PAPER_PRICES",
    "GenerateConfig",
    "GenerateReport",
    "decompose_with_retries",
    "failed_path",
    "generate",
    "make_teacher",
]

#: The paper's cost model for a hosted teacher: dollars per 1K input and output tokens (the evaluation's rate).
PAPER_PRICES = (PAPER_RATE.input_per_1k, PAPER_RATE.output_per_1k)
GIVEN = "given"  # the data's own sub-questions (GSM8K Socratic: written by a model, not by people)
LEGACY_GIVEN = "human"  # the old name of GIVEN, still accepted (recipes written before it)


@dataclass
class GenerateConfig:
    """How ``generate`` asks the teacher (the ``[generate]`` table besides ``teacher``, and the CLI flags)."""

    profile: str = setting("math", choices=("math", "reading", "multihop"))
    max_subquestions: int = setting(3)
    max_concurrency: int = setting(1)
    retries: int = setting(2)
    backoff: float = setting(1.0, help="seconds before the first retry (doubles)")
    temperature: float | None = setting(None, type=float)
    seed: int | None = setting(0)
    max_tokens: int = setting(256)
    price_in: float | None = setting(
        None, type=float, help="$ per 1K input tokens (default: paper's for hosted, 0 local)"
    )
    price_out: float | None = setting(None, type=float, help="$ per 1K output tokens")


@dataclass
class GenerateReport:
    """What one ``generate`` run did."""

    out: str
    total: int
    already_done: int
    written: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the CLI."""
        text = (
            f"{self.already_done + self.written}/{self.total} decompositions in {self.out} "
            f"({self.written} new, {self.already_done} from earlier runs); tokens in/out "
            f"{self.input_tokens}/{self.output_tokens}, est. cost ${self.cost:.4f}"
        )
        if self.failed:
            text += f"; {self.failed} failed (see {failed_path(self.out)}; rerun to retry them)"
        return text


def _is_local(teacher: Any) -> bool:
    """Whether the teacher costs nothing per token: human sub-questions or a GGUF run here."""
    from langchain_dod.solvers import is_local_model, is_local_spec

    if isinstance(teacher, str):
        return teacher in (GIVEN, LEGACY_GIVEN) or is_local_spec(teacher)
    return is_local_model(getattr(teacher, "llm", teacher))  # a Decomposer: its model


def make_teacher(
    teacher: Any,
    *,
    profile: str = "math",
    max_subquestions: int = 3,
    temperature: float | None = None,
    seed: int | None = None,
    max_tokens: int = 256,
) -> Any:
    """A :class:`Decomposer` around ``teacher`` (SPEC string, LangChain model, or a Decomposer as is)."""
    from langchain_dod.decomposer import Decomposer
    from langchain_dod.solvers import load_chat_model

    if isinstance(teacher, Decomposer):
        return teacher
    if isinstance(teacher, str):
        kwargs: dict[str, Any] = {}
        if temperature is not None:
            kwargs["temperature"] = temperature
        try:
            teacher = load_chat_model(teacher, local_kwargs={"seed": seed}, **kwargs)
        except (ValueError, ImportError) as err:
            raise TrainingError(f"Teacher {teacher!r}: {err}") from None
    return Decomposer(llm=teacher, profile=profile, max_subquestions=max_subquestions, max_tokens=max_tokens)


def decompose_with_retries(
    decomposer: Any, example: Example, *, retries: int = 2, backoff: float = 1.0
) -> tuple[Any, int]:
    """Decompose one example, retrying (exponential backoff) on errors and on an empty reply.

    Returns ``(Decomposition, attempts)``; raises the last error when every attempt failed.
    """
    from langchain_dod.decomposer import DecompositionError

    last: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            result = decomposer.invoke({"question": example.question, "context": example.context})
            if not (result.raw or "").strip():
                raise DecompositionError("the teacher returned an empty reply")
            return result, attempt + 1
        except Exception as err:  # noqa: BLE001 - logged per example, fatal ones re-raised
            if is_fatal(err):
                raise
            last = err
    assert last is not None
    raise last


def _given_record(example: Example) -> dict[str, Any]:
    if example.subquestions is None:
        raise TrainingError(
            f"Example {example.id!r} has no sub-questions of its own; teacher 'given' needs data with them "
            "(format socratic, or JSONL with a 'subquestions' list). Use a model SPEC as teacher otherwise."
        )
    return {
        "subquestions": list(example.subquestions),
        "raw": None,
        "input_tokens": 0,
        "output_tokens": 0,
        "seconds": 0.0,
        "attempts": 0,
    }


def _check_same_settings(out: Path, done: dict[str, dict[str, Any]], **settings: Any) -> None:
    """Refuse to add records made with other settings to ``out``: the file would mix two data sets silently."""
    for name, value in settings.items():
        before = sorted({str(r[name]) for r in done.values() if r.get(name) is not None})
        if before and before != [str(value)]:
            raise TrainingError(
                f"{out} holds records made with {name}={', '.join(before)}, but this run has {name}={value}; use "
                "another --out or the same settings."
            )


def generate(
    examples: Sequence[Example],
    teacher: Any,
    out: str | Path,
    config: GenerateConfig | None = None,
    *,
    progress: bool = True,
    **settings: Any,
) -> GenerateReport:
    """Write one teacher decomposition per example to ``out`` (JSONL), skipping ids already there.

    Settings (:class:`GenerateConfig`) come as ``config`` and/or keywords (``profile="math"``, ...).
    ``price_in``/``price_out`` are dollars per 1K tokens for the cost estimate; by default the paper's prices for
    a hosted teacher and 0 for a local one.
    """
    cfg = with_settings(GenerateConfig, config, settings, "generate")
    out = Path(out)
    done = _done_so_far(examples, out, cfg)
    todo = [e for e in examples if e.id not in done]
    report = GenerateReport(out=str(out), total=len(examples), already_done=len(examples) - len(todo))
    if not todo:
        return report
    decompose, label = _teacher_work(teacher, cfg)
    _check_same_settings(out, done, teacher=label)
    _write_decompositions(todo, decompose, out, cfg, report, label, _prices(teacher, cfg), progress)
    return report


def _done_so_far(examples: Sequence[Example], out: Path, cfg: GenerateConfig) -> dict[str, dict[str, Any]]:
    """The records already in ``out``, after checking the inputs and that they were made with these settings."""
    if not examples:
        raise TrainingError("No examples to decompose; the data set is empty.")
    if cfg.max_concurrency < 1:
        raise TrainingError(f"max_concurrency must be at least 1, got {cfg.max_concurrency}.")
    done = read_records(out)
    _check_same_settings(out, done, profile=cfg.profile, max_subquestions=cfg.max_subquestions)
    return done


def _write_decompositions(
    todo: Sequence[Example],
    decompose: Callable[[Example], dict[str, Any]],
    out: Path,
    cfg: GenerateConfig,
    report: GenerateReport,
    label: str,
    prices: tuple[float, float],
    progress: bool,
) -> None:
    """Decompose ``todo`` (``max_concurrency`` at a time), one fsynced line each, counting into ``report``."""
    settings = {"teacher": label, "profile": cfg.profile, "max_subquestions": cfg.max_subquestions}

    def work(example: Example) -> dict[str, Any]:
        question = {"id": example.id, "question": example.question, "context": example.context}
        return {**question, "answer": example.answer, **decompose(example), **settings}

    bar = tqdm(total=report.total, initial=report.already_done, desc="generate", unit="ex", disable=not progress)
    try:
        for finished in write_as_finished(
            todo,
            work,
            out,
            stage="generate",
            width=cfg.max_concurrency,
            item_id=lambda e: e.id,
            safe_before=report.already_done,
            failure_fields={"teacher": label},
        ):
            if finished.failure is not None:
                report.failed += 1
                report.failures.append(finished.failure)
                continue
            record = finished.record or {}
            report.written += 1
            report.input_tokens += record["input_tokens"]
            report.output_tokens += record["output_tokens"]
            report.cost = (report.input_tokens * prices[0] + report.output_tokens * prices[1]) / 1000
            bar.update(1)
            bar.set_postfix(tok_in=report.input_tokens, tok_out=report.output_tokens, cost=f"${report.cost:.4f}")
    finally:
        bar.close()


def _prices(teacher: Any, cfg: GenerateConfig) -> tuple[float, float]:
    """Dollars per 1K input and output tokens: as given, else the paper's for a hosted teacher and 0 for a local one."""
    p_in, p_out = (0.0, 0.0) if _is_local(teacher) else PAPER_PRICES
    return (p_in if cfg.price_in is None else cfg.price_in), (p_out if cfg.price_out is None else cfg.price_out)


def _teacher_work(teacher: Any, cfg: GenerateConfig) -> tuple[Callable[[Example], dict[str, Any]], str]:
    """``(decompose, label)``: what one example's decomposition record holds, and the teacher's name in it."""
    if isinstance(teacher, str) and teacher in (GIVEN, LEGACY_GIVEN):
        return _given_record, GIVEN
    decomposer = make_teacher(
        teacher,
        profile=cfg.profile,
        max_subquestions=cfg.max_subquestions,
        temperature=cfg.temperature,
        seed=cfg.seed,
        max_tokens=cfg.max_tokens,
    )

    def decompose(example: Example) -> dict[str, Any]:
        result, attempts = decompose_with_retries(decomposer, example, retries=cfg.retries, backoff=cfg.backoff)
        return {
            "subquestions": list(result.subquestions),
            "raw": result.raw,
            "input_tokens": result.input_tokens or 0,
            "output_tokens": result.output_tokens or 0,
            "seconds": result.seconds,
            "attempts": attempts,
        }

    return decompose, decomposer.model_name
