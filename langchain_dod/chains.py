"""The two-stage chain ``DecomposeSolve`` and its single-stage baseline ``SingleStage``.

``DecomposeSolve``: question (+ context) → decomposer → ONE solver call that answers all sub-questions and
then the question → ``{question, context, subquestions, solution, answer, mode, usage}``. The expensive
solver never plans; the decomposer is tiny and local.

Both chains are ``RunnableSerializable``: ``invoke/ainvoke/batch/abatch/stream/astream`` work, callbacks
nest (a LangSmith trace shows the decomposer and solver runs under the chain), ``max_concurrency`` is
honoured by ``batch``/``abatch``, and a custom event ``dod_subquestions`` fires as soon as the
sub-questions are known. Streaming yields ``AddableDict`` chunks: first the sub-questions, then the solver's
tokens under ``solution``, then ``answer`` and ``usage``.

Time limits (``timeout`` for the whole run, ``decomposer_timeout`` and ``solver_timeout`` per stage) hold in
every path. A stage past its limit raises :class:`StageTimeoutError` and is abandoned: it runs in a daemon thread
(or, for a model with its own async client, as a cancelled coroutine), so a call that never returns cannot keep
the process from exiting. Without limits the stages run in the caller's thread, as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, Literal, TypeVar, cast

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from langchain_core.runnables.utils import AddableDict
from pydantic import ConfigDict, Field

from langchain_dod.decomposer import Decomposer, Decomposition, DecompositionError, normalize_input
from langchain_dod.parsing import read_answer
from langchain_dod.prompts import check_answer_format, solver_messages
from langchain_dod.solvers import DEFAULT_SOLVER, load_chat_model, model_label

__all__ = [
    "DecomposeSolve",
    "SingleStage",
    "StageError",
    "StageTimeoutError",
    "create_dod_chain",
    "SUBQUESTIONS_EVENT",
]

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


class StageTimeoutError(TimeoutError):
    """A stage ran past ``setting`` (``decomposer_timeout``, ``solver_timeout`` or the total ``timeout``)."""

    def __init__(self, stage: str, setting: str, seconds: float) -> None:
        self.stage, self.setting, self.seconds = stage, setting, seconds
        if setting == "timeout":
            head = f"The chain timed out after timeout={seconds:g}s, in the {stage} stage"
        else:
            head = f"The {stage} stage timed out after {setting}={seconds:g}s"
        super().__init__(
            f"{head}. Raise {setting} (None waits as long as it takes) or use a faster {stage}; the abandoned call "
            "is left to finish in a daemon thread."
        )


T = TypeVar("T")
_DONE = object()


class _Failed:
    """An exception raised in a stage's thread, carried to the caller."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Clock:
    """The time limits of one run: the total deadline, and for each stage the limit that binds first."""

    def __init__(self, chain: _SolveBase) -> None:
        self.chain = chain
        self.deadline = None if chain.timeout is None else time.monotonic() + chain.timeout

    def limit(self, stage: str) -> tuple[float | None, str]:
        """Seconds the stage may take from now, and the setting that sets them."""
        own = getattr(self.chain, f"{stage}_timeout", None)
        left = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        if left is None or (own is not None and own <= left):
            return own, f"{stage}_timeout"
        if not left:  # spent by an earlier stage: do not start this one
            raise self.error(stage, "timeout")
        return left, "timeout"

    def error(self, stage: str, setting: str) -> StageTimeoutError:
        return StageTimeoutError(stage, setting, getattr(self.chain, setting))


def _daemon(target: Callable[[], None]) -> None:
    """Start ``target`` in a daemon thread, in a copy of this context (LangChain keeps callbacks there).

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so a call that never returns would
    keep the process alive after its timeout (the loop's default executor is one, hence asyncio.run's hang).
    """
    threading.Thread(target=contextvars.copy_context().run, args=(target,), daemon=True, name="dod-stage").start()


def _call(fn: Callable[[], T], stage: str, clock: _Clock) -> T:
    """Run a blocking stage call within its time limit."""
    limit, setting = clock.limit(stage)
    if limit is None:
        return fn()
    box: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as err:  # re-raised in the caller's thread
            box.append(_Failed(err))
        finally:
            done.set()

    _daemon(run)
    if not done.wait(limit):
        raise clock.error(stage, setting)
    if isinstance(box[0], _Failed):
        raise box[0].error
    return box[0]


def _iterate(make: Callable[[], Iterator[T]], stage: str, clock: _Clock) -> Iterator[T]:
    """Iterate a blocking stream within the stage's time limit (for the whole stream, not per chunk)."""
    limit, setting = clock.limit(stage)
    if limit is None:
        yield from make()
        return
    end = time.monotonic() + limit
    items: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in make():
                items.put(item)
                if stop.is_set():  # the consumer gave up or stopped reading
                    return
        except BaseException as err:
            items.put(_Failed(err))
        finally:
            items.put(_DONE)

    _daemon(produce)
    try:
        while True:
            try:
                item = items.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise clock.error(stage, setting) from None
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()


def _native_async(model: Any) -> bool:
    """Whether ``model`` brings its own async code (a network client), which a cancel really stops.

    Everything else (a ``Decomposer``, ``ChatGGUF``, a chat model without ``_agenerate``/``_astream``) runs its
    sync code in the event loop's default executor, whose threads cannot be abandoned.
    """
    from langchain_dod.chat_models import ChatGGUF

    if not isinstance(model, BaseChatModel) or isinstance(model, ChatGGUF):
        return False
    return any(getattr(type(model), name) is not getattr(BaseChatModel, name) for name in ("_agenerate", "_astream"))


def _deliver(loop: asyncio.AbstractEventLoop, put: Callable[[Any], None], item: Any) -> None:
    """Hand ``item`` to the event loop from a stage thread; after a timeout the loop may be gone."""
    try:
        loop.call_soon_threadsafe(put, item)
    except RuntimeError:  # the loop was closed: nobody is waiting any more
        pass


async def _acall(model: Any, coro: Callable[[], Any], fn: Callable[[], T], stage: str, clock: _Clock) -> T:
    """Await a stage within its time limit: natively for an async client, else ``fn`` in a daemon thread."""
    limit, setting = clock.limit(stage)
    if limit is None:
        return await coro()
    try:
        if _native_async(model):
            return await asyncio.wait_for(coro(), limit)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(item: Any) -> None:
            if not future.done():
                future.set_exception(item.error) if isinstance(item, _Failed) else future.set_result(item)

        def run() -> None:
            try:
                result: Any = fn()
            except BaseException as err:
                result = _Failed(err)
            _deliver(loop, settle, result)

        _daemon(run)
        return await asyncio.wait_for(future, limit)
    except asyncio.TimeoutError:  # builtin TimeoutError from 3.11 on, not before
        raise clock.error(stage, setting) from None


async def _aiterate(
    model: Any, make_async: Callable[[], AsyncIterator[T]], make: Callable[[], Iterator[T]], stage: str, clock: _Clock
) -> AsyncIterator[T]:
    """Async :func:`_iterate`: a native async stream under ``wait_for``, else ``make()`` in a daemon thread."""
    limit, setting = clock.limit(stage)
    if limit is None:
        async for item in make_async():
            yield item
        return
    end = time.monotonic() + limit
    if _native_async(model):
        stream = cast(AsyncGenerator[T, None], make_async())  # astream() is typed AsyncIterator but is a generator
        try:
            while True:
                try:
                    item = await asyncio.wait_for(stream.__anext__(), max(0.0, end - time.monotonic()))
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise clock.error(stage, setting) from None
                yield item
        finally:
            await stream.aclose()
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in make():
                _deliver(loop, items.put_nowait, item)
                if stop.is_set():
                    return
        except BaseException as err:
            _deliver(loop, items.put_nowait, _Failed(err))
        finally:
            _deliver(loop, items.put_nowait, _DONE)

    _daemon(produce)
    try:
        while True:
            try:
                item = await asyncio.wait_for(items.get(), max(0.0, end - time.monotonic()))
            except asyncio.TimeoutError:
                raise clock.error(stage, setting) from None
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()


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
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Seconds the whole run may take (all stages, streaming included); past it :class:`StageTimeoutError`.
    ``None`` waits as long as it takes."""
    solver_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Seconds the solver stage may take (the whole stream when streaming)."""
    answer_format: Literal["text", "program"] = "text"
    """``text``: the solver reasons in prose and ends with ``The answer is: X``. ``program``: it writes arithmetic
    assignments and the answer is computed from them (:mod:`langchain_dod.program`; no Python is run), so the
    solver makes no arithmetic slips and writes fewer tokens; the output's ``answer`` is ``None`` when the reply
    is no program of that kind and has no ``The answer is:`` line either."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _solve_messages(self, question: str, context: str | None, subquestions: list[str]) -> list[dict]:
        raise NotImplementedError

    def _prepare(
        self, question: str, context: str | None, run_manager: Any, config: RunnableConfig, clock: _Clock
    ) -> dict:
        raise NotImplementedError

    async def _aprepare(
        self, question: str, context: str | None, run_manager: Any, config: RunnableConfig, clock: _Clock
    ) -> dict:
        raise NotImplementedError

    def _finish(self, head: dict, text: str, message: Any, seconds: float) -> dict[str, Any]:
        return {
            **head,
            "solution": text,
            "answer": read_answer(text, self.answer_format),
            "usage": {**head["usage"], "solver": _usage(model_label(self.solver), message, seconds)},
        }

    # -- invoke ---------------------------------------------------------------------------------------------

    def _invoke(self, value: Any, run_manager: Any, config: RunnableConfig) -> dict[str, Any]:
        question, context, clock = *normalize_input(value), _Clock(self)
        head = self._prepare(question, context, run_manager, config, clock)
        started = time.perf_counter()
        messages = self._solve_messages(question, context, head["subquestions"])
        try:
            message = _call(
                lambda: self.solver.invoke(messages, _child(config, run_manager, "solver")), "solver", clock
            )
        except StageTimeoutError:
            raise
        except Exception as err:
            raise StageError("solver", err) from err
        return self._finish(head, _text(message), message, time.perf_counter() - started)

    async def _ainvoke(self, value: Any, run_manager: Any, config: RunnableConfig) -> dict[str, Any]:
        question, context, clock = *normalize_input(value), _Clock(self)
        head = await self._aprepare(question, context, run_manager, config, clock)
        started = time.perf_counter()
        messages = self._solve_messages(question, context, head["subquestions"])
        child = _child(config, run_manager, "solver")
        try:
            message = await _acall(
                self.solver,
                lambda: self.solver.ainvoke(messages, child),
                lambda: self.solver.invoke(messages, child),
                "solver",
                clock,
            )
        except StageTimeoutError:
            raise
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
        question, context, clock = *normalize_input(value), _Clock(self)
        head = self._prepare(question, context, run_manager, config, clock)
        yield AddableDict({k: v for k, v in head.items() if k != "usage"}, solution="")
        started, pieces, merged = time.perf_counter(), [], None
        messages = self._solve_messages(question, context, head["subquestions"])
        try:
            for chunk in _iterate(
                lambda: self.solver.stream(messages, _child(config, run_manager, "solver")), "solver", clock
            ):
                merged = chunk if merged is None or not isinstance(chunk, BaseMessage) else merged + chunk
                piece = _text(chunk)
                if piece:
                    pieces.append(piece)
                    yield AddableDict(solution=piece)
        except StageTimeoutError:
            raise
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
        question, context, clock = *normalize_input(value), _Clock(self)
        head = await self._aprepare(question, context, run_manager, config, clock)
        yield AddableDict({k: v for k, v in head.items() if k != "usage"}, solution="")
        started, pieces, merged = time.perf_counter(), [], None
        messages = self._solve_messages(question, context, head["subquestions"])
        child = _child(config, run_manager, "solver")
        try:
            async for chunk in _aiterate(
                self.solver,
                lambda: self.solver.astream(messages, child),
                lambda: self.solver.stream(messages, child),
                "solver",
                clock,
            ):
                merged = chunk if merged is None or not isinstance(chunk, BaseMessage) else merged + chunk
                piece = _text(chunk)
                if piece:
                    pieces.append(piece)
                    yield AddableDict(solution=piece)
        except StageTimeoutError:
            raise
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
    """When the decomposer fails, answer single-stage instead of raising (the output's ``mode`` says so); a
    decomposer past ``decomposer_timeout`` counts as failed, a run past the total ``timeout`` does not."""
    decomposer_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Seconds the decomposer stage may take."""

    def model_post_init(self, context: Any, /) -> None:
        """Carry ``max_subquestions`` into the decomposer's prompt and grammar."""
        if self.max_subquestions is not None and isinstance(self.decomposer, Decomposer):
            self.decomposer = self.decomposer.model_copy(update={"max_subquestions": self.max_subquestions})

    def _solve_messages(self, question: str, context: str | None, subquestions: list[str]) -> list[dict]:
        return solver_messages(question, context, subquestions, mode="decomposed", answer_format=self.answer_format)

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
        head: dict[str, Any] = {"question": question, "context": context, "subquestions": subquestions, "mode": mode}
        if error is not None:
            head["decomposer_error"] = f"{type(error).__name__}: {error}"
        head["usage"] = {"decomposer": usage}
        return head

    def _dispatch(self, head: dict) -> dict:
        return {"question": head["question"], "subquestions": head["subquestions"], "mode": head["mode"]}

    def _prepare(
        self, question: str, context: str | None, run_manager: Any, config: RunnableConfig, clock: _Clock
    ) -> dict:
        decomposition: Any = None
        error: Exception | None = None
        value, child = {"question": question, "context": context}, _child(config, run_manager, "decomposer")
        try:
            decomposition = _call(lambda: self.decomposer.invoke(value, child), "decomposer", clock)
        except StageTimeoutError as err:
            if not self.fallback_to_single_stage or err.setting == "timeout":
                raise
            error = err
        except Exception as err:
            if not self.fallback_to_single_stage:
                raise StageError("decomposer", err) from err
            error = err
        head = self._head(question, context, decomposition, error)
        dispatch_custom_event(SUBQUESTIONS_EVENT, self._dispatch(head), config=_child(config, run_manager, "event"))
        return head

    async def _aprepare(
        self, question: str, context: str | None, run_manager: Any, config: RunnableConfig, clock: _Clock
    ) -> dict:
        decomposition: Any = None
        error: Exception | None = None
        value, child = {"question": question, "context": context}, _child(config, run_manager, "decomposer")
        try:
            decomposition = await _acall(
                self.decomposer,
                lambda: self.decomposer.ainvoke(value, child),
                lambda: self.decomposer.invoke(value, child),
                "decomposer",
                clock,
            )
        except StageTimeoutError as err:
            if not self.fallback_to_single_stage or err.setting == "timeout":
                raise
            error = err
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

    def model_post_init(self, context: Any, /) -> None:
        """Refuse ``direct`` with a program: a one-line answer has no program to compute."""
        check_answer_format(self.mode, self.answer_format)

    def _solve_messages(self, question: str, context: str | None, subquestions: list[str]) -> list[dict]:
        return solver_messages(question, context, mode=self.mode, answer_format=self.answer_format)

    def _prepare(
        self, question: str, context: str | None, run_manager: Any, config: RunnableConfig, clock: _Clock
    ) -> dict:
        return {
            "question": question,
            "context": context,
            "subquestions": [],
            "mode": f"single-stage-{self.mode}",
            "usage": {"decomposer": None},
        }

    async def _aprepare(
        self, question: str, context: str | None, run_manager: Any, config: RunnableConfig, clock: _Clock
    ) -> dict:
        return self._prepare(question, context, run_manager, config, clock)


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
