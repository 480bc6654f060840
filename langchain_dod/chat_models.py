"""``ChatGGUF``: a LangChain chat model that runs a local GGUF file through llama-cpp-python.

Why our own class rather than ``langchain_community``'s ``ChatLlamaCpp``: that one loads eagerly, uses
``n_batch=8`` and a fixed rope base, has no native async, drops ``stop`` when streaming and reports no
usage. Here:

* the model loads lazily, once per process per (file, adapter, settings), and every call on a loaded model
  holds that model's lock, because ``llama_cpp.Llama`` is not thread-safe and LangChain's
  ``batch``/``abatch``/``ainvoke`` use threads;
* the chat template comes from the GGUF; the prompt is tokenised here so a prompt longer than the context
  window fails with an error naming the limit, before llama.cpp sees it;
* ``with_structured_output`` is enforced by a llama.cpp grammar built from the JSON schema, so the output
  always parses;
* consecutive calls that share a prompt prefix (a system prompt) reuse llama.cpp's KV cache: ``Llama``
  keeps the last evaluated tokens and only evaluates what differs (measured in ``benchmarks/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

import numpy as np
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

from langchain_dod.gguf_file import check_finite, inspect_gguf
from langchain_dod.models import resolve

__all__ = [
    "ChatGGUF",
    "ContextWindowExceededError",
    "ModelLoadError",
    "NonFiniteLogitsError",
    "check_range",
    "physical_cores",
]


class ContextWindowExceededError(ValueError):
    """The prompt does not fit in the model's context window."""


class ModelLoadError(RuntimeError):
    """llama.cpp could not load the model or the adapter."""


class NonFiniteLogitsError(RuntimeError):
    """The model computed NaN or Inf scores: its weights are damaged or overflow."""


class _FiniteLogits:
    """A llama.cpp logits processor that keeps NaN/Inf scores away from the grammar sampler.

    Finite weights can still overflow in the forward pass (every scale of a layer at 6e4, say); the grammar
    sampler then accepts a token its grammar forbids and calls abort(). An exception raised here would be
    swallowed by the ctypes callback, so the processor only notes the fact and hands on zeros (any allowed token
    will do); ``ChatGGUF._run`` raises after the step. About 20 µs per token for a 49k vocabulary.
    """

    def __init__(self) -> None:
        self.tripped = False

    def __call__(self, input_ids: Any, scores: np.ndarray) -> np.ndarray:
        if np.isfinite(scores).all():
            return scores
        self.tripped = True
        return np.zeros_like(scores)


def physical_cores() -> int:
    """Physical cores available to this process: llama.cpp decoding slows down on hyperthreads."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        allowed = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        physical = core = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                physical = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
                cores.add((physical, core))
    except OSError:
        pass
    return max(1, min(allowed, len(cores) or allowed))


@dataclass
class _Loaded:
    """One loaded ``Llama`` with the lock that serialises every call on it."""

    llm: Any
    lock: threading.Lock
    render: Callable[[list[dict[str, Any]]], tuple[list[int], list[str]]]
    n_ctx: int
    load_seconds: float


_LOADED: dict[tuple[Any, ...], _Loaded] = {}
_LOAD_LOCK = threading.Lock()


def _load(key: tuple[Any, ...], path: Path, lora: Path | None, params: dict[str, Any]) -> tuple[_Loaded, bool]:
    """Load (once per process) the model described by ``key``; also say whether this call loaded it."""
    with _LOAD_LOCK:
        if key in _LOADED:
            return _LOADED[key], False
        info = inspect_gguf(path)
        if info.file_type == "adapter":
            raise ModelLoadError(f"{path} is a LoRA adapter, not a model. Pass it as lora_path= with its base.")
        if lora is not None:
            _check_adapter(lora, info)
        # NaN/Inf weights pass llama.cpp's own load, then abort() the process at the first grammar-constrained
        # decode; a Python error here instead costs ~30 ms for a 100 MB model, once per file
        check_finite(path)
        if lora is not None:
            check_finite(lora)
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        started = time.perf_counter()
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                lora_path=str(lora) if lora else None,
                verbose=False,
                **params,
            )
        except (ValueError, RuntimeError) as err:
            what = f"adapter {lora} on base {path}" if lora else f"model {path}"
            raise ModelLoadError(
                f"llama.cpp could not load the {what}: {err}. Check that the file is a complete GGUF for this "
                "llama.cpp version (and that an adapter was exported from this base)."
            ) from err
        seconds = time.perf_counter() - started
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelLoadError(
                f"{path} has no chat template (tokenizer.chat_template) and cannot be used as a chat model. "
                "Use an instruct/chat GGUF, or re-export it with its tokenizer's template."
            )
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(llm.token_eos()),
            bos_token=llm._model.token_get_text(llm.token_bos()),
            add_generation_prompt=True,
        )

        def render(messages: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
            result = formatter(messages=messages)  # type: ignore[arg-type]  # plain dicts, not llama_cpp's TypedDicts
            tokens = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
            stops = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
            return tokens, stops

        loaded = _Loaded(llm=llm, lock=threading.Lock(), render=render, n_ctx=llm.n_ctx(), load_seconds=seconds)
        _LOADED[key] = loaded
        return loaded, True


def _check_adapter(lora: Path, base: Any) -> None:
    """Refuse an adapter that is not a LoRA GGUF or does not fit the base, before llama.cpp sees it.

    The shape rules are llama.cpp's (``llama-adapter.cpp``): every ``<tensor>.lora_a``/``.lora_b`` pair
    targets a base tensor that exists; in ggml order ``a`` is (in, rank) and ``b`` is (rank, out), where the
    base weight is (in, out).
    """
    adapter = inspect_gguf(lora)
    if adapter.file_type != "adapter" or adapter.adapter_type != "lora":
        raise ModelLoadError(
            f"{lora} is not a GGUF LoRA adapter (general.type={adapter.file_type!r}, adapter.type="
            f"{adapter.adapter_type!r}). Pass a model as model= and a LoRA exported for it as lora_path=."
        )
    if adapter.architecture != base.architecture:
        raise ModelLoadError(
            f"Adapter {lora} was made for a {adapter.architecture!r} model but the base {base.path} is "
            f"{base.architecture!r}. Use the base the adapter was trained on."
        )
    base_shapes = dict(base.tensor_shapes)
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, shape in adapter.tensor_shapes:
        stem, dot, half = name.rpartition(".lora_")
        if not dot or half not in ("a", "b"):
            raise ModelLoadError(f"Adapter {lora} has a tensor {name!r} that is not a LoRA half (.lora_a/.lora_b).")
        pairs.setdefault(stem, {})[half] = shape
    if not pairs:
        raise ModelLoadError(f"Adapter {lora} holds no LoRA tensors.")
    hint = "Use the base the adapter was trained on."
    for stem, halves in pairs.items():
        if stem not in base_shapes:
            raise ModelLoadError(f"Adapter {lora} targets {stem}, which the base {base.path} does not have. {hint}")
        if set(halves) != {"a", "b"}:
            raise ModelLoadError(f"Adapter {lora} has only half of the LoRA pair for {stem}. Export it again.")
        a, b, target = halves["a"], halves["b"], base_shapes[stem]
        if len(a) != 2 or len(b) != 2 or len(target) != 2:
            raise ModelLoadError(f"Adapter {lora}: {stem} is not a matrix pair (a {a}, b {b}, base {target}).")
        if a[0] != target[0] or b[1] != target[1]:
            raise ModelLoadError(
                f"Adapter {lora} does not fit base {base.path}: for {stem} it maps {a[0]} -> {b[1]} but the base "
                f"maps {target[0]} -> {target[1]}. {hint}"
            )
        if a[1] != b[0]:
            raise ModelLoadError(
                f"Adapter {lora} is inconsistent: {stem}.lora_a has rank {a[1]} but .lora_b has rank {b[0]}. "
                "Export it again."
            )


def _reused_prefix(llm: Any, prompt: list[int]) -> int:
    """Prompt tokens llama.cpp will not evaluate again: the common prefix with what the context holds.

    Mirrors ``Llama.generate`` (llama-cpp-python 0.3.x): the longest common prefix of the evaluated tokens
    and the new prompt is kept; when the whole prompt is a prefix, one token is evaluated again to refresh
    the logits, unless the context holds exactly this prompt with its logits still live.
    """
    held = llm.input_ids[: llm.n_tokens]
    same = 0
    for a, b in zip(held, prompt, strict=False):  # the prompt may be longer than what is held
        if a != b:
            break
        same += 1
    if same == len(prompt) and same > 0:
        # the very same prompt with live logits is not evaluated at all; otherwise one token is replayed
        exact = llm.n_tokens == len(prompt) and not getattr(llm, "_requires_eval", True)
        return same if exact else same - 1
    return same


#: Allowed values of the numeric settings, ``(low, high, low_is_exclusive)``. The bounds are wide: they refuse what
#: llama.cpp cannot use, not unusual choices.
_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "lora_scale": (-100.0, 100.0, False),
    "temperature": (0.0, 100.0, False),
    "top_p": (0.0, 1.0, False),
    "top_k": (0, None, False),
    "repeat_penalty": (0.0, 100.0, True),
    "n_ctx": (0, 1 << 24, False),  # 0 means the GGUF's own training context
    "n_threads": (1, 4096, False),
    "n_batch": (1, None, False),
    "max_tokens": (1, None, False),
    "timeout": (0.0, None, True),
}

_MAY_BE_NONE = {
    "n_threads": " (or None: one per physical core)",
    "max_tokens": " (or None: up to the context window)",
    "timeout": " (or None: no limit)",
}


def check_range(name: str, value: Any) -> None:
    """Raise a ``ValueError`` naming ``name`` and its allowed range unless ``value`` is a finite number in it."""
    if value is None and name in _MAY_BE_NONE:
        return
    low, high, exclusive = _RANGES[name]
    kind = "an integer" if isinstance(low, int) else "a number"
    bounds = f"{'above' if exclusive else 'at least'} {low}" + (f" and at most {high}" if high is not None else "")
    ok = (
        isinstance(value, int if isinstance(low, int) else (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if exclusive else value >= low)
        and (high is None or value <= high)
    )
    if not ok:
        raise ValueError(f"{name} must be {kind} {bounds}{_MAY_BE_NONE.get(name, '')}; got {value!r}.")


def _text(content: Any) -> str:
    """Flatten OpenAI-style content blocks to text (local models here are text-only)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
    return "".join(parts)


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
    lora_scale: float = 1.0
    n_ctx: int = 4096
    n_threads: int | None = None
    """Decode threads; ``None`` means the number of physical cores."""
    n_batch: int = 512
    temperature: float = 0.0
    """0 is greedy decoding (reproducible); raise it for sampling."""
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.0
    max_tokens: int | None = 512
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
        return self

    @property
    def _llm_type(self) -> str:
        return "llamacpp-gguf"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "lora_path": self.lora_path,
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
        path = resolve(model or self.model).resolve()
        lora = Path(self.lora_path).expanduser().resolve() if self.lora_path else None
        if lora is not None and not lora.is_file():
            raise ModelLoadError(f"LoRA adapter not found: {lora}. Check lora_path.")
        params = {
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads or physical_cores(),
            "n_threads_batch": self.n_threads or physical_cores(),
            "n_batch": self.n_batch,
            "lora_scale": self.lora_scale,
            **self.model_kwargs,
        }
        key = (str(path), str(lora) if lora else None, tuple(sorted((k, repr(v)) for k, v in params.items())))
        loaded, fresh = _load(key, path, lora, params)
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
        dicts = [{"role": m["role"], "content": _text(m.get("content"))} for m in convert_to_openai_messages(messages)]
        loaded = self._loaded(model)
        with self._locked(loaded, deadline):
            tokens, stops = loaded.render(dicts)
        return loaded, tokens, stops

    @contextlib.contextmanager
    def _locked(self, loaded: _Loaded, deadline: float | None) -> Iterator[None]:
        """Hold the model's lock, waiting at most until ``deadline`` (``time.monotonic()``)."""
        wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not loaded.lock.acquire(timeout=wait):
            raise TimeoutError(
                f"ChatGGUF timed out after timeout={self.timeout}s waiting for {self.model}, which is busy with "
                "other calls. Raise timeout or lower the batch's max_concurrency."
            )
        try:
            yield
        finally:
            loaded.lock.release()

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
        max_tokens = kwargs.pop("max_tokens", self.max_tokens)
        room = loaded.n_ctx - len(tokens)
        if room < 1 or (max_tokens is not None and room < min(max_tokens, 16)):
            raise ContextWindowExceededError(
                f"The prompt is {len(tokens)} tokens but the context window of {model} is n_ctx="
                f"{loaded.n_ctx} tokens, which leaves no room to answer. Shorten the input, or create the model "
                f"with a larger n_ctx (its GGUF allows up to {loaded.llm._model.n_ctx_train()})."
            )
        max_tokens = room if max_tokens is None else min(max_tokens, room)
        grammar = None
        if (schema := kwargs.pop("json_schema", None)) is not None:
            grammar = _grammar(schema)
        stops = [*(stop or self.stop or []), *template_stops]
        args = {
            "prompt": tokens,
            "max_tokens": max_tokens,
            "temperature": kwargs.pop("temperature", self.temperature),
            "top_p": kwargs.pop("top_p", self.top_p),
            "top_k": kwargs.pop("top_k", self.top_k),
            "repeat_penalty": kwargs.pop("repeat_penalty", self.repeat_penalty),
            "seed": kwargs.pop("seed", self.seed),
            "stop": stops or None,
            "grammar": grammar,
            "logits_processor": [_FiniteLogits()],
        }
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
        """Yield ``(text, finish_reason)`` per llama.cpp step while holding the model's lock.

        ``cached`` receives the number of prompt tokens whose KV cache is reused from the previous call.
        """
        with self._locked(loaded, deadline):
            if cached is not None:
                cached.append(_reused_prefix(loaded.llm, args["prompt"]))
            guard = args["logits_processor"][0]
            for chunk in loaded.llm.create_completion(stream=True, **args):
                if guard.tripped:
                    raise NonFiniteLogitsError(
                        f"{self.model} computed NaN or Inf scores (its weights are finite but overflow, or the "
                        "adapter/lora_scale pushes them there); its output would be garbage. Use an undamaged "
                        "model file, or re-export the model or adapter."
                    )
                choice = chunk["choices"][0]
                yield choice["text"], choice.get("finish_reason")
                if cancelled is not None and cancelled.is_set():
                    return
                if deadline is not None and time.monotonic() > deadline and choice.get("finish_reason") is None:
                    raise TimeoutError(
                        f"ChatGGUF call exceeded timeout={self.timeout}s while generating. Raise timeout or lower "
                        "max_tokens."
                    )

    def _usage(self, loaded: _Loaded, n_prompt: int, text: str, cached: int) -> UsageMetadata:
        with loaded.lock:
            n_out = len(loaded.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0
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


#: llama-cpp-python's schema converter lets a JSON string hold raw control characters (a newline, say), which
#: strict JSON parsers reject; llama.cpp's own converter excludes them. We use the latter's rule.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def _grammar(schema: dict[str, Any]) -> Any:
    """Build a llama.cpp grammar from a JSON schema; an unusable schema is an error, never silently ignored."""
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not isinstance(schema, dict):
        raise ValueError(f"json_schema must be a dict, got {type(schema).__name__}")
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema)).replace(_LOOSE_CHAR, _STRICT_CHAR)
        return LlamaGrammar.from_string(gbnf, verbose=False)
    except Exception as err:
        raise ValueError(
            f"llama.cpp cannot build a grammar from this JSON schema ({type(err).__name__}: {err}). Simplify it "
            "(plain objects, arrays, strings, numbers, enums)."
        ) from err
