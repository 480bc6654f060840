"""``Decomposer``: question (+ context) → at most N sub-questions, as a LangChain runnable.

With our local :class:`~langchain_dod.chat_models.ChatGGUF` the reply is constrained by a grammar built
from :func:`subquestion_schema`, so it can never be malformed. A distilled decomposer (a ``ChatGGUF`` with a
LoRA adapter) writes the format by itself, so it first decodes freely, about twice as fast (llama-cpp-python
checks a grammar against the whole vocabulary at every token), and only a reply that is not valid JSON is
decoded again under the grammar. Any other chat model gets structured output
when it supports it, with the robust text parser as the fallback; a completion LLM gets the text parser.
"""

from __future__ import annotations

import json
import os
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from pydantic import BaseModel, ConfigDict, Field

from langchain_dod.chat_models import ChatGGUF
from langchain_dod.models import ROLE_DEFAULTS, role_env_model
from langchain_dod.parsing import normalize_subquestions, parse_subquestions
from langchain_dod.prompts import DEFAULT_MAX_SUBQUESTIONS, PROFILES, decomposer_messages

__all__ = [
    "ADAPTER_PROFILE",
    "Decomposer",
    "Decomposition",
    "DecompositionError",
    "default_adapter",
    "default_adapter_for",
    "default_decomposer_llm",
    "normalize_input",
    "subquestion_schema",
]

DEFAULT_ADAPTER = "smollm2-135m-decomposer-lora.gguf"
ADAPTER_PROFILE = "math"
"""The prompt profile the shipped adapter was trained on (GSM8K); other profiles get the untuned base."""
_MAX_SUBQUESTION_CHARS = 240


class DecompositionError(RuntimeError):
    """The decomposer ran but produced nothing usable, or failed."""


class Decomposition(BaseModel):
    """The decomposer's output: sub-questions (0 means "answer directly") and what produced them."""

    subquestions: list[str] = Field(default_factory=list)
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    seconds: float | None = None
    raw: str | None = Field(default=None, description="the model's reply before parsing")
    constrained: bool | None = Field(
        default=None, description="True: the reply was decoded under the grammar; False: written freely"
    )


def subquestion_schema(max_subquestions: int = DEFAULT_MAX_SUBQUESTIONS) -> dict[str, Any]:
    """JSON schema of the decomposer's reply; llama.cpp turns it into the grammar that enforces it."""
    return {
        "type": "object",
        "properties": {
            "subquestions": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": _MAX_SUBQUESTION_CHARS},
                "maxItems": max_subquestions,
            }
        },
        "required": ["subquestions"],
    }


def default_adapter() -> Path | None:
    """The shipped distilled LoRA adapter for the default base, or ``None`` when none ships (yet)."""
    if env := os.environ.get("DOD_DECOMPOSER_ADAPTER"):
        return None if env.lower() in ("", "none", "0") else Path(env).expanduser()
    candidate = resources.files("langchain_dod") / "data" / DEFAULT_ADAPTER
    return Path(str(candidate)) if candidate.is_file() else None


def default_adapter_for(profile: str = ADAPTER_PROFILE) -> Path | None:
    """The adapter the default decomposer applies for ``profile``; ``None`` when it runs the untuned base.

    The adapter is applied only for the profile it was trained on (``math``): for ``reading`` or ``multihop``
    the untuned base, decoded under the grammar, is the better guess. ``DOD_DECOMPOSER_GGUF`` replaces the
    base; the adapter is then not applied (it fits only its base).
    """
    if role_env_model("decomposer") or profile != ADAPTER_PROFILE:
        return None
    return default_adapter()


def default_decomposer_llm(profile: str = ADAPTER_PROFILE, **kwargs: Any) -> ChatGGUF:
    """The shipped default decomposer: SmolLM2-135M (Q4_1) plus the distilled adapter when present.

    See :func:`default_adapter_for` for when the adapter applies; ``DOD_DECOMPOSER_GGUF`` replaces the base.
    """
    if base := role_env_model("decomposer"):
        return ChatGGUF(model=base, **kwargs)  # the adapter fits only the shipped base
    adapter = default_adapter_for(profile)
    return ChatGGUF(model=ROLE_DEFAULTS["decomposer"], lora_path=str(adapter) if adapter else None, **kwargs)


def normalize_input(value: Any) -> tuple[str, str | None]:
    """Accept ``"question"``, a prompt value, or ``{"question": ..., "context": ...}``; reject the rest clearly."""
    if isinstance(value, PromptValue):  # `prompt | dod` in LCEL
        value = value.to_string()
    if isinstance(value, str):
        question, context = value, None
    elif isinstance(value, dict):
        if "question" not in value:
            raise ValueError(f"Input dict needs a 'question' key; got keys {sorted(value)}.")
        question, context = value["question"], value.get("context")
    else:
        raise TypeError(
            f"Expected a question string or a dict {{'question': ..., 'context': ...}}, got {type(value).__name__}."
        )
    if not isinstance(question, str):
        raise TypeError(f"The question must be a string, got {type(question).__name__}.")
    if not question.strip():
        raise ValueError("The question is empty; pass a non-empty question.")
    if not any(ch.isalnum() for ch in question):  # only symbols or control characters: nothing to decompose
        raise ValueError(f"The question has no letters or digits ({question[:40]!r}); pass a question in words.")
    if context is not None and not isinstance(context, str):
        raise TypeError(f"The context must be a string or None, got {type(context).__name__}.")
    return question.strip(), (context.strip() or None) if context else None


_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _strings_from_partial_json(text: str) -> list[str]:
    """Complete string items of a JSON reply cut off by the token limit."""
    items = []
    for match in _JSON_STRING.finditer(text):
        try:
            value = json.loads(f'"{match.group(1)}"')
        except json.JSONDecodeError:
            continue
        if value != "subquestions":
            items.append(value)
    return items


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
    shipped distilled adapter for the ``math`` profile, without it for the others."""
    max_subquestions: int = Field(default=DEFAULT_MAX_SUBQUESTIONS, ge=1, le=10)
    max_tokens: int = Field(default=256, ge=1)
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
        adapter = getattr(llm, "lora_path", None)
        return f"{name}+{Path(adapter).name}" if adapter else str(name)

    def messages(self, question: str, context: str | None = None) -> list[dict[str, str]]:
        """The exact prompt this decomposer sends (and the training data uses)."""
        return decomposer_messages(question, context, profile=self.profile, max_subquestions=self.max_subquestions)

    # -- running ---------------------------------------------------------------------------------------------

    def _free_first(self) -> bool:
        """Whether to decode freely first (see ``grammar``)."""
        if not isinstance(self.llm, ChatGGUF) or self.grammar == "always":
            return False
        return self.grammar == "fallback" or bool(self.llm.lora_path)

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

    def _read(self, output: Any, how: str, seconds: float, question: str, context: str | None) -> Decomposition | None:
        """The decomposition in ``output``; ``None`` for a free reply that is not valid JSON (decode again)."""
        message: Any = output
        items: list[str] | None = None
        if how == "structured":
            message = output.get("raw")
            parsed = output.get("parsed")
            if isinstance(parsed, dict) and isinstance(parsed.get("subquestions"), list):
                items = parsed["subquestions"]
        raw = message.content if isinstance(message, BaseMessage) else str(message)
        raw = raw if isinstance(raw, str) else json.dumps(raw)
        if how == "free":
            items = _valid_reply(raw, self.max_subquestions)
            if items is None:
                return None
        cut = _cut_off(message)
        if items is None and how == "grammar":
            try:
                items = json.loads(raw)["subquestions"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                items = _strings_from_partial_json(raw)  # cut off by max_tokens mid-list
                # the grammar allows only valid JSON: an invalid reply was cut off, whatever the metadata says
                cut = cut or isinstance(err, json.JSONDecodeError)
        if items is None:
            items = parse_subquestions(raw)
            if not items and raw.strip() and not _says_none(raw) and not cut:
                raise DecompositionError(
                    f"The decomposer ({self.model_name}) replied with no sub-questions and did not say none are "
                    f"needed: {raw[:200]!r}. Use a model that follows the instruction, or our local decomposer."
                )
        if cut and not items:
            # not an empty plan: that means "answer directly" and would hide the cut from the caller
            raise DecompositionError(
                f"The decomposer's reply was cut off by max_tokens={self.max_tokens} before its first sub-question "
                f"was complete ({raw[:80]!r}). Raise max_tokens (the default is 256)."
            )
        subquestions = normalize_subquestions(
            [i[:_MAX_SUBQUESTION_CHARS] if isinstance(i, str) else i for i in items], self.max_subquestions
        )
        if _copies_example(subquestions, question, context, self.profile):
            # a model that cannot read the question (another language, only symbols) copies the prompt's example:
            # no plan (the solver answers the question itself) beats a plan about the example's muffins
            subquestions = []
        usage = getattr(message, "usage_metadata", None) or {}
        return Decomposition(
            subquestions=subquestions,
            model=self.model_name,
            input_tokens=usage.get("input_tokens"),
            output_tokens=usage.get("output_tokens"),
            seconds=round(seconds, 4),
            raw=raw,
            constrained={"grammar": True, "free": False}.get(how),
        )

    def _decompose(self, value: Any, run_manager: Any, config: RunnableConfig) -> Decomposition:
        question, context = normalize_input(value)
        messages, child = self.messages(question, context), patch_config(config, callbacks=run_manager.get_child())
        started, first = time.perf_counter(), None
        if self._free_first():
            runnable, how = self._bound(free=True)
            first = runnable.invoke(messages, child)
            if (result := self._read(first, how, time.perf_counter() - started, question, context)) is not None:
                return result
        runnable, how = self._bound()
        output = runnable.invoke(messages, child)
        return _with_first_attempt(self._read(output, how, time.perf_counter() - started, question, context), first)

    async def _adecompose(self, value: Any, run_manager: Any, config: RunnableConfig) -> Decomposition:
        question, context = normalize_input(value)
        messages, child = self.messages(question, context), patch_config(config, callbacks=run_manager.get_child())
        started, first = time.perf_counter(), None
        if self._free_first():
            runnable, how = self._bound(free=True)
            first = await runnable.ainvoke(messages, child)
            if (result := self._read(first, how, time.perf_counter() - started, question, context)) is not None:
                return result
        runnable, how = self._bound()
        output = await runnable.ainvoke(messages, child)
        return _with_first_attempt(self._read(output, how, time.perf_counter() - started, question, context), first)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Decomposition:
        """Decompose one question."""
        return self._call_with_config(self._decompose, input, config, run_type="chain", **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Decomposition:
        """Decompose one question without blocking the event loop."""
        return await self._acall_with_config(self._adecompose, input, config, run_type="chain", **kwargs)


def _valid_reply(raw: str, max_subquestions: int) -> list[str] | None:
    """The sub-questions of a reply that is exactly what the grammar allows, else ``None``."""
    try:
        reply = json.loads(raw)
    except json.JSONDecodeError:
        return None
    items = reply.get("subquestions") if isinstance(reply, dict) else None
    if not isinstance(items, list) or len(items) > max_subquestions:
        return None
    if not all(isinstance(i, str) and 0 < len(i) <= _MAX_SUBQUESTION_CHARS for i in items):
        return None
    return items


_WORD = re.compile(r"[^\W\d_]+")


def _words(text: str, min_length: int = 1) -> set[str]:
    """Lower-case words without a final "s", so that "sells" matches "sell" and "muffins" "muffin"."""
    return {w.casefold().rstrip("s") for w in _WORD.findall(text) if len(w) >= min_length}


def _copies_example(subquestions: list[str], question: str, context: str | None, profile: str) -> bool:
    """Whether a sub-question names the prompt example's subject where the question does not.

    A small model that cannot read a question (another language, symbols) copies the example's sub-questions,
    often reworded: "How many muffins does the baker make?". Only the example's words of 5+ letters count (its
    subject: muffins, the Bears, the Eiffel Tower), so that "many" or "make" never do. Checked on GSM8K: none of
    the 1,319 Socratic (model-written) test plans is flagged; the plans flagged among our models' were all copies.
    """
    example = PROFILES[profile]
    subject = _words(f"{example.example_question} {example.example_context or ''}", 5)
    asked = _words(f"{question} {context or ''}")
    return any((_words(s, 5) & subject) - asked for s in subquestions)


def _cut_off(message: Any) -> bool:
    """Whether the model stopped at its token limit: OpenAI's and llama.cpp's ``finish_reason``, Anthropic's."""
    meta = getattr(message, "response_metadata", None) or {}
    return meta.get("finish_reason") == "length" or meta.get("stop_reason") == "max_tokens"


def _with_first_attempt(result: Decomposition | None, first: Any) -> Decomposition:
    """Count the discarded free attempt's tokens in the result (the time is already in ``seconds``)."""
    assert result is not None  # only a "free" reply can be refused
    usage = getattr(first, "usage_metadata", None)
    if usage:
        result.input_tokens = (result.input_tokens or 0) + usage.get("input_tokens", 0)
        result.output_tokens = (result.output_tokens or 0) + usage.get("output_tokens", 0)
    return result


_NONE_PHRASES = re.compile(r"\b(no (further )?(decomposition|sub-?questions?)|not needed|none)\b", re.I)


def _local_openai_server(llm: Any) -> bool:
    """A ``ChatOpenAI`` pointed at another server (llama.cpp, vLLM, ...) rather than OpenAI's own API."""
    base = getattr(llm, "openai_api_base", None)
    return isinstance(base, str) and bool(base) and "api.openai.com" not in base


def _says_none(text: str) -> bool:
    return bool(_NONE_PHRASES.search(text)) or text.strip() in ("[]", "{}")
