"""``ChatGGUF``: a LangChain chat model that runs a local GGUF file through llama-cpp-python.

Why our own class rather than ``langchain_community``'s ``ChatLlamaCpp``: that one loads eagerly, uses
``n_batch=8`` and a fixed rope base, has no native async, drops ``stop`` when streaming and reports no
usage. Here:

* loading, the chat template, the context-window check, stops and the per-model lock are
  :mod:`langchain_dod.engine`'s (shared with the lean ``dod decompose`` path): the model loads lazily, once per
  process per (file, adapter, settings), and every call on a loaded model holds that model's lock, because
  ``llama_cpp.Llama`` is not thread-safe and LangChain's ``batch``/``abatch``/``ainvoke`` use threads;
* ``with_structured_output`` is enforced by a llama.cpp grammar built from the JSON schema, so the output
  always parses;
* consecutive calls that share a prompt prefix (a system prompt) reuse llama.cpp's KV cache: ``Llama``
  keeps the last evaluated tokens and only evaluates what differs (measured in ``benchmarks/``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from langchain_dod import engine
from langchain_dod.engine import (
    _RANGES,
    DEFAULTS,
    ContextWindowExceededError,
    ModelLoadError,
    NonFiniteLogitsError,
    _grammar,
    _Loaded,
    check_merge,
    check_range,
    physical_cores,
)

__all__ = [
    "ChatGGUF",
    "ContextWindowExceededError",
    "ModelLoadError",
    "NonFiniteLogitsError",
    "check_range",
    "physical_cores",
]


class ChatGGUF(BaseChatModel):
    """Chat model over a local GGUF file, run on the CPU by llama.cpp (llama-cpp-python).

    Example:
        .. code-block:: python

            from langchain_dod import ChatGGUF

            llm = ChatGGUF(model="smollm2-135m-instruct", max_tokens=64)
            llm.invoke("Name three prime numbers.")

    """

    model: str = Field(default="smollm2-135m-instruct", alias="model_name")
    """Registry name (see ``langchain_dod.models.MODELS``) or path to a ``.gguf`` file."""
    lora_path: str | None = None
    """Optional GGUF LoRA adapter applied on top of the base at load time."""
    merge_lora: bool = False
    """Load ``lora_path`` merged into the base (written once to ``cache_dir()/merged/``, see
    :mod:`langchain_dod.merge`) instead of applying it at run time: decodes faster, but the merged weights are
    requantised (Q8_0), so greedy output can differ. No effect without ``lora_path``; needs ``lora_scale=1``."""
    lora_scale: float = DEFAULTS["lora_scale"]
    n_ctx: int = DEFAULTS["n_ctx"]
    n_threads: int | None = None
    """Decode threads; ``None`` means the number of physical cores."""
    n_batch: int = DEFAULTS["n_batch"]
    temperature: float = DEFAULTS["temperature"]
    """0 is greedy decoding (reproducible); raise it for sampling."""
    top_p: float = DEFAULTS["top_p"]
    top_k: int = DEFAULTS["top_k"]
    repeat_penalty: float = DEFAULTS["repeat_penalty"]
    max_tokens: int | None = DEFAULTS["max_tokens"]
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    seed: int | None = None
    timeout: float | None = None
    """Seconds one call may take, waiting for the model's lock included; past it the call raises
    ``TimeoutError``. ``None`` waits as long as it takes."""
    streaming: bool = False
    """Generate token by token even for ``invoke`` (so callbacks see each token)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for ``llama_cpp.Llama`` (e.g. ``flash_attn``, ``type_k``)."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())
    _load_seconds: float | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown(cls, values: Any) -> Any:
        """A misspelt argument must not be ignored silently (pydantic's default here)."""
        if isinstance(values, dict):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            if unknown := sorted(set(values) - known):
                raise ValueError(
                    f"ChatGGUF got unknown argument(s) {unknown}. Valid ones: {sorted(known)}. Options for "
                    "llama_cpp.Llama itself go in model_kwargs={...}."
                )
        return values

    @model_validator(mode="after")
    def _check_values(self) -> ChatGGUF:
        """Refuse unusable settings now, not at the first call.

        Later they fail obscurely (``n_ctx=-5`` as a load error, an empty name as "a directory with 9 .gguf
        files") or abort the whole process (a NaN ``lora_scale`` makes llama.cpp's grammar sampler call abort()).
        """
        if not self.model.strip():
            raise ValueError(
                "ChatGGUF got an empty model name; pass a registry name (e.g. 'smollm2-135m-instruct') or the path "
                "of a .gguf file."
            )
        for name in _RANGES:
            check_range(name, getattr(self, name))
        check_merge(self.merge_lora, self.lora_path, self.lora_scale)
        return self

    @property
    def _llm_type(self) -> str:
        return "llamacpp-gguf"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "lora_path": self.lora_path,
            "merge_lora": self.merge_lora,
            "lora_scale": self.lora_scale,
            "n_ctx": self.n_ctx,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
            "max_tokens": self.max_tokens,
            "stop_sequences": self.stop,  # not "stop": LangChain overwrites that key with the per-call stop
            "seed": self.seed,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="llamacpp",
            ls_model_name=kwargs.get("model") or self.model,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        if max_tokens := kwargs.get("max_tokens", self.max_tokens):
            params["ls_max_tokens"] = max_tokens
        if ls_stop := stop or kwargs.get("stop") or self.stop:
            params["ls_stop"] = ls_stop
        return params

    # -- loading -------------------------------------------------------------------------------------------

    def _loaded(self, model: str | None = None) -> _Loaded:
        params = engine.llama_params(
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            n_batch=self.n_batch,
            lora_scale=self.lora_scale,
            model_kwargs=self.model_kwargs,
        )
        loaded, fresh = engine.load(model or self.model, self.lora_path, params, merge_lora=self.merge_lora)
        if self._load_seconds is None and model in (None, self.model):
            self._load_seconds = loaded.load_seconds if fresh else 0.0  # this instance's cost, not the first's
        return loaded

    def load(self) -> ChatGGUF:
        """Load the model now rather than on first use (e.g. to measure load time); returns ``self``."""
        self._loaded()
        return self

    def reset_kv_cache(self) -> None:
        """Forget the evaluated prompt, so the next call evaluates its whole prompt (cold-start measurements)."""
        loaded = self._loaded()
        with loaded.lock:
            loaded.llm.reset()

    @property
    def load_seconds(self) -> float:
        """Seconds llama.cpp took to load this model for this instance (0.0 when another had loaded it)."""
        self._loaded()  # on this instance's first use, records what the load cost it
        return self._load_seconds or 0.0

    def get_num_tokens(self, text: str) -> int:
        """Count tokens with the model's own tokenizer."""
        loaded = self._loaded()
        with loaded.lock:
            return len(loaded.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence | None = None) -> int:
        """Count the prompt tokens these messages become under the GGUF's chat template."""
        return len(self._prompt(messages)[1])

    # -- generation -----------------------------------------------------------------------------------------

    def _prompt(
        self, messages: list[BaseMessage], model: str | None = None, deadline: float | None = None
    ) -> tuple[_Loaded, list[int], list[str]]:
        if not messages:
            raise ValueError("ChatGGUF got an empty message list; pass at least one message.")
        dicts = convert_to_openai_messages(messages)
        loaded = self._loaded(model)
        tokens, stops = engine.render(loaded, dicts, deadline, model=self.model, timeout=self.timeout)
        return loaded, tokens, stops

    def _completion_args(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        deadline: float | None = None,
    ) -> tuple[_Loaded, dict[str, Any], str]:
        model = kwargs.pop("model", None) or self.model
        for name in ("max_tokens", "temperature", "top_p", "top_k", "repeat_penalty"):
            if name in kwargs:  # a per-call override (``bind``) is checked like the field
                check_range(name, kwargs[name])
        loaded, tokens, template_stops = self._prompt(messages, model, deadline)
        args = engine.completion_args(
            loaded,
            tokens,
            template_stops,
            model=model,
            max_tokens=kwargs.pop("max_tokens", self.max_tokens),
            temperature=kwargs.pop("temperature", self.temperature),
            top_p=kwargs.pop("top_p", self.top_p),
            top_k=kwargs.pop("top_k", self.top_k),
            repeat_penalty=kwargs.pop("repeat_penalty", self.repeat_penalty),
            seed=kwargs.pop("seed", self.seed),
            stop=stop or self.stop,
            json_schema=kwargs.pop("json_schema", None),
        )
        kwargs.pop("ls_structured_output_format", None)
        if kwargs:
            raise TypeError(
                f"ChatGGUF got unsupported generation arguments: {sorted(kwargs)}. Supported per call: "
                "max_tokens, temperature, top_p, top_k, repeat_penalty, seed, stop, json_schema, model."
            )
        return loaded, args, model

    def _run(
        self,
        loaded: _Loaded,
        args: dict[str, Any],
        cancelled: threading.Event | None = None,
        deadline: float | None = None,
        cached: list[int] | None = None,
    ) -> Iterator[tuple[str, str | None]]:
        """Yield ``(text, finish_reason)`` per llama.cpp step (:func:`langchain_dod.engine.run`)."""
        return engine.run(
            loaded, args, model=self.model, timeout=self.timeout, cancelled=cancelled, deadline=deadline, cached=cached
        )

    def _usage(self, loaded: _Loaded, n_prompt: int, text: str, cached: int) -> UsageMetadata:
        n_out = engine.count_tokens(loaded, text)
        # langchain-core imports NotRequired from typing (3.11+): checked as 3.10, its optional keys look required
        return UsageMetadata(  # type: ignore[typeddict-item, unused-ignore]
            input_tokens=n_prompt,
            output_tokens=n_out,
            total_tokens=n_prompt + n_out,
            input_token_details={"cache_read": cached},
        )

    def _chunks(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        cancelled: threading.Event | None = None,
    ) -> Iterator[ChatGenerationChunk]:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        loaded, args, model = self._completion_args(messages, stop, kwargs, deadline)
        started = time.perf_counter()
        text: list[str] = []
        finish: str | None = None
        cached: list[int] = []
        for piece, finish_reason in self._run(loaded, args, cancelled, deadline, cached):
            finish = finish_reason or finish
            if piece:
                text.append(piece)
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        full = "".join(text)
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=self._usage(loaded, len(args["prompt"]), full, cached[0] if cached else 0),
                response_metadata={
                    "model_name": model,
                    "finish_reason": finish or "stop",
                    "seconds": round(time.perf_counter() - started, 4),
                },
                chunk_position="last",
            ),
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        merged: ChatGenerationChunk | None = None
        for chunk in self._chunks(messages, stop, kwargs):
            merged = chunk if merged is None else merged + chunk
        assert merged is not None and isinstance(merged.message, AIMessageChunk)
        message = AIMessage(
            content=merged.message.content,
            usage_metadata=merged.message.usage_metadata,
            response_metadata=merged.message.response_metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, stop, kwargs):
            if run_manager and chunk.message.content:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await asyncio.to_thread(self._generate, messages, stop, None, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """Run llama.cpp in one worker thread and hand its chunks to the event loop through a queue."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for chunk in self._chunks(messages, stop, dict(kwargs), cancelled):
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as err:  # handed to the consumer, which re-raises it
                loop.call_soon_threadsafe(queue.put_nowait, err)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = loop.run_in_executor(None, produce)
        try:
            while (item := await queue.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                if run_manager and item.message.content:
                    await run_manager.on_llm_new_token(item.text, chunk=item)
                yield item
        finally:
            cancelled.set()
            await worker

    # -- structured output ------------------------------------------------------------------------------------

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Return a runnable whose output always matches ``schema``, enforced by a llama.cpp grammar.

        ``method="json_schema"`` (default) and ``"function_calling"`` both constrain decoding to the schema
        (this model has no tool-calling protocol; a grammar gives the same guarantee). ``"json_mode"``
        constrains to any JSON object (``schema`` then only selects the parser).
        """
        if kwargs:
            raise ValueError(f"Unsupported arguments for with_structured_output: {sorted(kwargs)}")
        if method not in ("json_schema", "function_calling", "json_mode"):
            raise ValueError(f"method must be 'json_schema', 'function_calling' or 'json_mode', not {method!r}")
        if schema is None and method != "json_mode":
            raise ValueError("with_structured_output needs a schema (a pydantic model, TypedDict or JSON schema).")
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method == "json_mode":
            json_schema: dict[str, Any] = {"type": "object"}
        else:
            assert schema is not None  # checked above for every method but json_mode
            try:
                json_schema = convert_to_json_schema(schema)
            except Exception as err:
                raise ValueError(f"Invalid schema for with_structured_output: {err}") from err
            _grammar(json_schema)  # fail now, at bind time, on a schema llama.cpp cannot enforce
        llm = self.bind(
            json_schema=json_schema,
            ls_structured_output_format={"kwargs": {"method": method, "strict": strict}, "schema": json_schema},
        )
        parser: Runnable = RunnableLambda(_complete_json) | (
            PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
        )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")


def _complete_json(message: BaseMessage) -> BaseMessage:
    """The grammar guarantees valid JSON only if decoding was not cut off by ``max_tokens``: say so plainly."""
    if message.response_metadata.get("finish_reason") == "length":
        raise OutputParserException(
            "The structured reply was cut off by max_tokens before its JSON was complete. Raise max_tokens "
            f"(the reply so far: {str(message.content)[:120]!r}).",
            llm_output=str(message.content),
        )
    return message
