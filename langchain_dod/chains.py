"""The two-stage chain ``DecomposeSolve`` and its single-stage baseline ``SingleStage``.

``DecomposeSolve``: question (+ context) → decomposer → ONE solver call that answers all sub-questions and
then the question → ``{question, context, subquestions, solution, answer, mode, usage}``. The expensive
solver never plans; the decomposer is tiny and local.

Both chains are ``RunnableSerializable``: ``invoke/ainvoke/batch/abatch/stream/astream`` work, callbacks
nest (a LangSmith trace shows the decomposer and solver runs under the chain), ``max_concurrency`` is
honoured by ``batch``/``abatch``, and a custom event ``dod_subquestions`` fires as soon as the
sub-questions are known. Streaming yields ``AddableDict`` chunks: first the sub-questions, then the solver's
tokens under ``solution``, then ``answer`` and ``usage``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from langchain_core.runnables.utils import AddableDict
from pydantic import ConfigDict, Field

from langchain_dod.decomposer import Decomposer, Decomposition, DecompositionError, normalize_input
from langchain_dod.parsing import extract_answer
from langchain_dod.prompts import solver_messages
from langchain_dod.solvers import DEFAULT_SOLVER, load_chat_model, model_label

__all__ = ["DecomposeSolve", "SingleStage", "StageError", "create_dod_chain", "SUBQUESTIONS_EVENT"]

SUBQUESTIONS_EVENT = "dod_subquestions"


class StageError(RuntimeError):
    """A stage of the chain failed; ``stage`` is ``"decomposer"`` or ``"solver"``."""

    def __init__(self, stage: str, error: BaseException) -> None:
        self.stage = stage
        hint = (
            " Set fallback_to_single_stage=True to answer without sub-questions when the decomposer fails."
            if stage == "decomposer"
            else ""
        )
        super().__init__(f"The {stage} stage failed: {type(error).__name__}: {error}.{hint}")


def _default_solver() -> BaseLanguageModel:
    return load_chat_model(DEFAULT_SOLVER)


def _text(output: Any) -> str:
    if isinstance(output, BaseMessage):
        content = output.content
        return (
            content
            if isinstance(content, str)
            else "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
        )
    return str(output)


def _usage(model: str, message: Any, seconds: float) -> dict[str, Any]:
    usage = getattr(message, "usage_metadata", None) or {}
    return {
        "model": model,
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "seconds": round(seconds, 4),
    }


def _child(config: RunnableConfig, run_manager: Any, tag: str) -> RunnableConfig:
    child = patch_config(config, callbacks=run_manager.get_child(tag))
    return child


class _SolveBase(RunnableSerializable[Any, dict[str, Any]]):
    """What both chains share: the solver call, its streaming, and the output shape."""

    solver: BaseLanguageModel = Field(default_factory=_default_solver)
    """Any LangChain chat model or LLM; it gets one call per question."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _solve_messages(self, question: str, context: str | None, subquestions: list[str]) -> list[dict]:
        raise NotImplementedError

    def _prepare(self, question: str, context: str | None, run_manager: Any, config: RunnableConfig) -> dict:
        raise NotImplementedError

    async def _aprepare(self, question: str, context: str | None, run_manager: Any, config: RunnableConfig) -> dict:
        raise NotImplementedError

    def _finish(self, head: dict, text: str, message: Any, seconds: float) -> dict[str, Any]:
        return {
            **head,
            "solution": text,
            "answer": extract_answer(text),
            "usage": {**head["usage"], "solver": _usage(model_label(self.solver), message, seconds)},
        }

    # -- invoke ---------------------------------------------------------------------------------------------

    def _invoke(self, value: Any, run_manager: Any, config: RunnableConfig) -> dict[str, Any]:
        question, context = normalize_input(value)
        head = self._prepare(question, context, run_manager, config)
        started = time.perf_counter()
        try:
            message = self.solver.invoke(
                self._solve_messages(question, context, head["subquestions"]), _child(config, run_manager, "solver")
            )
        except Exception as err:
            raise StageError("solver", err) from err
        return self._finish(head, _text(message), message, time.perf_counter() - started)

    async def _ainvoke(self, value: Any, run_manager: Any, config: RunnableConfig) -> dict[str, Any]:
        question, context = normalize_input(value)
        head = await self._aprepare(question, context, run_manager, config)
        started = time.perf_counter()
        try:
            message = await self.solver.ainvoke(
                self._solve_messages(question, context, head["subquestions"]), _child(config, run_manager, "solver")
            )
        except Exception as err:
            raise StageError("solver", err) from err
        return self._finish(head, _text(message), message, time.perf_counter() - started)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        """Answer one question."""
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        """Answer one question without blocking the event loop."""
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    # -- stream ---------------------------------------------------------------------------------------------

    def _transform(self, inputs: Iterator[Any], run_manager: Any, config: RunnableConfig) -> Iterator[AddableDict]:
        value = None
        for value in inputs:  # noqa: B007 - inputs arrive whole (a question is not streamed); keep the last
            pass
        question, context = normalize_input(value)
        head = self._prepare(question, context, run_manager, config)
        yield AddableDict({k: v for k, v in head.items() if k != "usage"}, solution="")
        started, pieces, merged = time.perf_counter(), [], None
        try:
            for chunk in self.solver.stream(
                self._solve_messages(question, context, head["subquestions"]), _child(config, run_manager, "solver")
            ):
                merged = chunk if merged is None or not isinstance(chunk, BaseMessage) else merged + chunk
                piece = _text(chunk)
                if piece:
                    pieces.append(piece)
                    yield AddableDict(solution=piece)
        except Exception as err:
            raise StageError("solver", err) from err
        final = self._finish(head, "".join(pieces), merged, time.perf_counter() - started)
        yield AddableDict(answer=final["answer"], usage=final["usage"])

    async def _atransform(
        self, inputs: AsyncIterator[Any], run_manager: Any, config: RunnableConfig
    ) -> AsyncIterator[AddableDict]:
        value = None
        async for value in inputs:  # noqa: B007
            pass
        question, context = normalize_input(value)
        head = await self._aprepare(question, context, run_manager, config)
        yield AddableDict({k: v for k, v in head.items() if k != "usage"}, solution="")
        started, pieces, merged = time.perf_counter(), [], None
        try:
            async for chunk in self.solver.astream(
                self._solve_messages(question, context, head["subquestions"]), _child(config, run_manager, "solver")
            ):
                merged = chunk if merged is None or not isinstance(chunk, BaseMessage) else merged + chunk
                piece = _text(chunk)
                if piece:
                    pieces.append(piece)
                    yield AddableDict(solution=piece)
        except Exception as err:
            raise StageError("solver", err) from err
        final = self._finish(head, "".join(pieces), merged, time.perf_counter() - started)
        yield AddableDict(answer=final["answer"], usage=final["usage"])

    def transform(self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[dict]:
        """Stream the result: sub-questions first, then the solver's tokens, then answer and usage."""
        yield from self._transform_stream_with_config(input, self._transform, config, **kwargs)

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[dict]:
        """Stream the result for one question (see :meth:`transform`)."""
        yield from self.transform(iter([input]), config, **kwargs)

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[dict]:
        """Async :meth:`transform`."""
        async for chunk in self._atransform_stream_with_config(input, self._atransform, config, **kwargs):
            yield chunk

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[dict]:
        """Async :meth:`stream`."""

        async def one() -> AsyncIterator[Any]:
            yield input

        async for chunk in self.atransform(one(), config, **kwargs):
            yield chunk


class DecomposeSolve(_SolveBase):
    """Decompose with a small model, then solve with any LangChain model in one call.

    Example:
        .. code-block:: python

            from langchain_dod import DecomposeSolve
            from langchain_openai import ChatOpenAI

            chain = DecomposeSolve(solver=ChatOpenAI(model="gpt-4o-mini"))
            chain.invoke("A shop sells 3 pens for $2. How much do 12 pens cost?")["answer"]

    """

    decomposer: Runnable[Any, Decomposition] = Field(default_factory=Decomposer)
    """Usually a :class:`Decomposer`; any runnable returning a ``Decomposition`` (or a list of strings) works."""
    max_subquestions: int | None = Field(default=None, ge=1, le=10)
    """Override the decomposer's cap (also changes its prompt when it is a ``Decomposer``)."""
    fallback_to_single_stage: bool = False
    """When the decomposer fails, answer single-stage instead of raising (the output's ``mode`` says so)."""

    def model_post_init(self, context: Any, /) -> None:
        """Carry ``max_subquestions`` into the decomposer's prompt and grammar."""
        if self.max_subquestions is not None and isinstance(self.decomposer, Decomposer):
            self.decomposer = self.decomposer.model_copy(update={"max_subquestions": self.max_subquestions})

    def _solve_messages(self, question: str, context: str | None, subquestions: list[str]) -> list[dict]:
        return solver_messages(question, context, subquestions, mode="decomposed")

    def _head(self, question: str, context: str | None, decomposition: Any, error: BaseException | None) -> dict:
        if isinstance(decomposition, Decomposition):
            subquestions = list(decomposition.subquestions)
            usage = _usage(decomposition.model or "decomposer", None, decomposition.seconds or 0.0)
            usage.update(input_tokens=decomposition.input_tokens, output_tokens=decomposition.output_tokens)
        elif isinstance(decomposition, list) and all(isinstance(q, str) for q in decomposition):
            subquestions, usage = list(decomposition), {"model": model_label(self.decomposer)}
        elif error is None:
            raise StageError(
                "decomposer",
                DecompositionError(f"expected a Decomposition or list of strings, got {type(decomposition).__name__}"),
            )
        else:
            subquestions, usage = [], None
        if self.max_subquestions is not None:
            subquestions = subquestions[: self.max_subquestions]
        mode = "fallback" if error is not None else ("two-stage" if subquestions else "single-stage")
        head = {"question": question, "context": context, "subquestions": subquestions, "mode": mode}
        if error is not None:
            head["decomposer_error"] = f"{type(error).__name__}: {error}"
        head["usage"] = {"decomposer": usage}
        return head

    def _dispatch(self, head: dict) -> dict:
        return {"question": head["question"], "subquestions": head["subquestions"], "mode": head["mode"]}

    def _prepare(self, question: str, context: str | None, run_manager: Any, config: RunnableConfig) -> dict:
        decomposition, error = None, None
        try:
            decomposition = self.decomposer.invoke(
                {"question": question, "context": context}, _child(config, run_manager, "decomposer")
            )
        except Exception as err:
            if not self.fallback_to_single_stage:
                raise StageError("decomposer", err) from err
            error = err
        head = self._head(question, context, decomposition, error)
        dispatch_custom_event(SUBQUESTIONS_EVENT, self._dispatch(head), config=_child(config, run_manager, "event"))
        return head

    async def _aprepare(self, question: str, context: str | None, run_manager: Any, config: RunnableConfig) -> dict:
        decomposition, error = None, None
        try:
            decomposition = await self.decomposer.ainvoke(
                {"question": question, "context": context}, _child(config, run_manager, "decomposer")
            )
        except Exception as err:
            if not self.fallback_to_single_stage:
                raise StageError("decomposer", err) from err
            error = err
        head = self._head(question, context, decomposition, error)
        await adispatch_custom_event(
            SUBQUESTIONS_EVENT, self._dispatch(head), config=_child(config, run_manager, "event")
        )
        return head


class SingleStage(_SolveBase):
    """The baseline: the solver answers alone, ``direct`` (answer only, as in the paper) or ``cot``."""

    mode: Literal["direct", "cot"] = "cot"

    def _solve_messages(self, question: str, context: str | None, subquestions: list[str]) -> list[dict]:
        return solver_messages(question, context, mode=self.mode)

    def _prepare(self, question: str, context: str | None, run_manager: Any, config: RunnableConfig) -> dict:
        return {
            "question": question,
            "context": context,
            "subquestions": [],
            "mode": f"single-stage-{self.mode}",
            "usage": {"decomposer": None},
        }

    async def _aprepare(self, question: str, context: str | None, run_manager: Any, config: RunnableConfig) -> dict:
        return self._prepare(question, context, run_manager, config)


def create_dod_chain(
    decomposer: Runnable | BaseLanguageModel | str | None = None,
    solver: BaseLanguageModel | str | None = None,
    **kwargs: Any,
) -> DecomposeSolve:
    """Build a :class:`DecomposeSolve` from models or SPEC strings.

    ``decomposer``: ``None`` (the shipped default), a SPEC (``llamacpp:PATH``, ``openai:gpt-4o-mini``), any
    LangChain model (wrapped in a :class:`Decomposer`) or a ready runnable. ``solver``: a SPEC or a model;
    ``None`` is the default local solver. Other ``kwargs`` go to :class:`DecomposeSolve`.
    """
    if decomposer is None:
        dec: Runnable = Decomposer()
    elif isinstance(decomposer, str):
        dec = Decomposer(llm=load_chat_model(decomposer))
    elif isinstance(decomposer, BaseLanguageModel):
        dec = Decomposer(llm=decomposer)
    else:
        dec = decomposer
    sol = load_chat_model(solver) if isinstance(solver, str) else (solver or _default_solver())
    return DecomposeSolve(decomposer=dec, solver=sol, **kwargs)
