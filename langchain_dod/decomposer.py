"""``Decomposer``: question (+ context) → at most N sub-questions, as a LangChain runnable.

With our local :class:`~langchain_dod.chat_models.ChatGGUF` the reply is constrained by a grammar built
from :func:`subquestion_schema`, so it can never be malformed. A distilled decomposer (a ``ChatGGUF`` with a
LoRA adapter) writes the format by itself, so it first decodes freely (faster when sampling or a repeat
penalty is on: llama-cpp-python then checks the grammar against the whole vocabulary at every token; greedy,
unpenalised decoding checks one token a step and costs about what free decoding does), and only a reply that is
not valid JSON is decoded again under the grammar. Any other chat model gets structured output
when it supports it, with the robust text parser as the fallback; a completion LLM gets the text parser.

How a reply is read and the order of attempts live in :mod:`langchain_dod.decomposition`, without LangChain:
``dod decompose`` runs the same steps on the local model directly (:func:`~langchain_dod.decomposition.decompose_gguf`).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from pydantic import ConfigDict, Field

from langchain_dod import decomposition as _plain
from langchain_dod.chat_models import ChatGGUF
from langchain_dod.decomposition import (
    ADAPTER_PROFILE,
    DEFAULT_ADAPTER,
    DEFAULT_ADAPTERS,
    DEFAULT_MAX_TOKENS,
    DecompositionError,
    Reply,
    Task,
    attempts,
    default_adapter,
    default_adapter_for,
    default_decomposer_model,
    default_merge,
    drive,
    model_label,
    subquestion_schema,
)
from langchain_dod.decomposition_model import Decomposition
from langchain_dod.prompts import DEFAULT_MAX_SUBQUESTIONS, PROFILES, decomposer_messages

__all__ = [
    "ADAPTER_PROFILE",
    "DEFAULT_ADAPTER",
    "DEFAULT_ADAPTERS",
    "Decomposer",
    "Decomposition",
    "DecompositionError",
    "default_adapter",
    "default_adapter_for",
    "default_decomposer_llm",
    "normalize_input",
    "subquestion_schema",
]


def default_decomposer_llm(profile: str = ADAPTER_PROFILE, **kwargs: Any) -> ChatGGUF:
    """The shipped default decomposer: SmolLM2-135M (Q4_1) plus the distilled adapter when present.

    The adapter is merged into the base where :func:`~langchain_dod.decomposition.default_merge` says so (the
    ``math`` one: faster, no loss of accuracy measured); ``merge_lora=False`` in ``kwargs`` applies it at run time.

    See :func:`default_adapter_for` for when the adapter applies; ``DOD_DECOMPOSER_GGUF`` replaces the base.
    """
    model, adapter = default_decomposer_model(profile)
    if adapter:
        kwargs = {"lora_path": adapter, "merge_lora": default_merge(profile, adapter), **kwargs}
    return ChatGGUF(model=model, **kwargs)


def normalize_input(value: Any) -> tuple[str, str | None]:
    """Accept ``"question"``, a prompt value, or ``{"question": ..., "context": ...}``; reject the rest clearly."""
    if isinstance(value, PromptValue):  # `prompt | dod` in LCEL
        value = value.to_string()
    return _plain.normalize_input(value)


class Decomposer(RunnableSerializable[Any, Decomposition]):
    """Write at most ``max_subquestions`` sub-questions for a question, or none when none are needed.

    Input: a question string or ``{"question": ..., "context": ...}``. Output: :class:`Decomposition`.

    Example:
        .. code-block:: python

            from langchain_dod import Decomposer

            Decomposer().invoke("Tom has 3 boxes of 12 pens and gives away 5. How many are left?")

    """

    profile: str = "math"
    """Prompt profile: ``math``, ``reading`` or ``multihop`` (see ``langchain_dod.prompts.PROFILES``).
    Declared before ``llm``: the default model depends on it."""
    llm: BaseLanguageModel = Field(
        default_factory=lambda data: default_decomposer_llm(profile=data.get("profile", ADAPTER_PROFILE))
    )
    """The model that decomposes: our local ``ChatGGUF`` or any LangChain model. Default: SmolLM2-135M with the
    shipped distilled adapter of its ``profile`` (``DEFAULT_ADAPTERS``), without one where none ships."""
    max_subquestions: int = Field(default=DEFAULT_MAX_SUBQUESTIONS, ge=1, le=10)
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1)
    """Output limit of one decomposer call (0 or less would mean "no limit" to llama.cpp, hence ``ge=1``)."""
    structured_output: Literal["auto", "json_object", "never"] = "auto"
    """For non-local chat models: ``auto`` sends an OpenAI-compatible local server (``ChatOpenAI(base_url=...)``
    not at api.openai.com) ``response_format={"type": "json_object", "schema": ...}``, which llama.cpp's servers
    enforce with a grammar (they reject or ignore OpenAI's ``json_schema`` format), and uses
    ``with_structured_output`` for other models that have it; ``json_object`` forces the former, ``never``
    parses free text."""
    grammar: Literal["auto", "always", "fallback"] = "auto"
    """For our local ``ChatGGUF``: ``always`` decodes under the grammar; ``fallback`` decodes freely and
    decodes again under the grammar only when the reply is not valid JSON; ``auto`` is ``fallback`` for a
    model with a LoRA adapter (a distilled decomposer, trained on exactly this format) and ``always`` otherwise
    (an untuned model rambles without it). Greedy decoding makes both give the same sub-questions whenever the
    free reply is valid."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def model_post_init(self, context: Any, /) -> None:
        """Validate the profile at construction, not at the first call."""
        if self.profile not in PROFILES:
            raise ValueError(f"Unknown profile {self.profile!r}; choose one of {sorted(PROFILES)}.")

    @property
    def model_name(self) -> str:
        """A short name of the decomposing model, for reports."""
        llm = self.llm
        name = getattr(llm, "model", None) or getattr(llm, "model_name", None) or type(llm).__name__
        return model_label(name, getattr(llm, "lora_path", None))

    def messages(self, question: str, context: str | None = None) -> list[dict[str, str]]:
        """The exact prompt this decomposer sends (and the training data uses)."""
        return decomposer_messages(question, context, profile=self.profile, max_subquestions=self.max_subquestions)

    # -- running ---------------------------------------------------------------------------------------------

    def _free_first(self) -> bool:
        """Whether to decode freely first (see ``grammar``)."""
        return isinstance(self.llm, ChatGGUF) and _plain.free_first(self.grammar, self.llm.lora_path)

    def _bound(self, free: bool = False) -> tuple[Any, str]:
        """The runnable to call and how to read its output: ``grammar``, ``free``, ``structured`` or ``text``."""
        llm = self.llm
        if isinstance(llm, ChatGGUF):
            if free:
                return llm.bind(max_tokens=self.max_tokens), "free"
            return llm.bind(
                json_schema=subquestion_schema(self.max_subquestions), max_tokens=self.max_tokens
            ), "grammar"
        schema = subquestion_schema(self.max_subquestions)
        if self.structured_output == "json_object" or (self.structured_output == "auto" and _local_openai_server(llm)):
            response_format = {"type": "json_object", "schema": schema}
            if not hasattr(llm, "extra_body"):
                return llm.bind(response_format=response_format), "grammar"
            # ChatOpenAI: in the request body, not as its own argument, so that a reply cut off at max_tokens comes
            # back as text (partial JSON is still read) instead of raising LengthFinishReasonError; max_tokens
            # because ChatOpenAI sends max_completion_tokens, which llama-cpp-python's server ignores.
            extra = {**(llm.extra_body or {}), "response_format": response_format, "max_tokens": self.max_tokens}
            return llm.bind(extra_body=extra), "grammar"
        if (
            self.structured_output == "auto"
            and isinstance(llm, BaseChatModel)
            and type(llm).with_structured_output is not BaseChatModel.with_structured_output
        ):
            try:  # a title: OpenAI-style tools and json_schema need a name
                return llm.with_structured_output({"title": "Decomposition", **schema}, include_raw=True), "structured"
            except (NotImplementedError, ValueError, TypeError):
                pass
        return llm, "text"

    def _reply(self, output: Any, how: str) -> Reply:
        """A LangChain model's output in plain terms (text, parsed items, cut off, tokens)."""
        message: Any = output
        items: list[Any] | None = None
        if how == "structured":
            message = output.get("raw")
            parsed = output.get("parsed")
            if isinstance(parsed, dict) and isinstance(parsed.get("subquestions"), list):
                items = parsed["subquestions"]
        raw = message.content if isinstance(message, BaseMessage) else str(message)
        usage = getattr(message, "usage_metadata", None) or {}
        return Reply(
            text=raw if isinstance(raw, str) else json.dumps(raw),
            how=how,
            cut=_cut_off(message),
            items=items,
            input_tokens=usage.get("input_tokens"),
            output_tokens=usage.get("output_tokens"),
        )

    def _start(self, value: Any) -> tuple[Any, list[dict[str, str]]]:
        """The steps of one decomposition (:func:`langchain_dod.decomposition.attempts`) and its prompt."""
        question, context = normalize_input(value)
        task = Task(question, context, self.profile, self.max_subquestions, self.max_tokens, self.model_name)
        return attempts(task, free=self._free_first()), self.messages(question, context)

    def _decompose(self, value: Any, run_manager: Any, config: RunnableConfig) -> Decomposition:
        steps, messages = self._start(value)
        child = patch_config(config, callbacks=run_manager.get_child())

        def call(free: bool) -> Reply:
            runnable, how = self._bound(free=free)
            return self._reply(runnable.invoke(messages, child), how)

        return Decomposition.from_reading(drive(steps, call))

    async def _adecompose(self, value: Any, run_manager: Any, config: RunnableConfig) -> Decomposition:
        steps, messages = self._start(value)
        child = patch_config(config, callbacks=run_manager.get_child())
        free = next(steps)
        while True:  # drive() with an awaited call
            runnable, how = self._bound(free=free)
            reply = self._reply(await runnable.ainvoke(messages, child), how)
            try:
                free = steps.send(reply)
            except StopIteration as done:
                return Decomposition.from_reading(done.value)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Decomposition:
        """Decompose one question."""
        return self._call_with_config(self._decompose, input, config, run_type="chain", **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Decomposition:
        """Decompose one question without blocking the event loop."""
        return await self._acall_with_config(self._adecompose, input, config, run_type="chain", **kwargs)


def _cut_off(message: Any) -> bool:
    """Whether the model stopped at its token limit: OpenAI's and llama.cpp's ``finish_reason``, Anthropic's."""
    meta = getattr(message, "response_metadata", None) or {}
    return meta.get("finish_reason") == "length" or meta.get("stop_reason") == "max_tokens"


def _local_openai_server(llm: Any) -> bool:
    """A ``ChatOpenAI`` pointed at another server (llama.cpp, vLLM, ...) rather than OpenAI's own API."""
    base = getattr(llm, "openai_api_base", None)
    return isinstance(base, str) and bool(base) and "api.openai.com" not in base
