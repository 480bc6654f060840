"""The decomposition itself, without LangChain: prompt → model → parsed sub-questions.

:class:`~langchain_dod.decomposer.Decomposer` (the LangChain runnable) and the lean ``dod decompose`` path
(:func:`decompose_gguf`, which runs the local model through :mod:`langchain_dod.engine` directly) share
everything here: the reply's schema, the default model and adapter, when to decode freely first, how a reply is
read (:func:`read_reply`) and the order of attempts (:func:`attempts`, a generator that does no I/O itself: each
caller runs the model its own way, sync, async or without LangChain).

Importing this module costs neither pydantic nor llama.cpp: a reply is read into a plain :class:`Reading`; the
pydantic :class:`~langchain_dod.decomposition_model.Decomposition` that LangChain callers get is built from it at
their boundary (about 0.2 s of a cold ``dod decompose`` was pydantic). :func:`decompose_gguf` imports the engine
(numpy, llama.cpp) when called.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_dod.models import ROLE_DEFAULTS, _env_flag, role_env_model
from langchain_dod.parsing import normalize_subquestions, parse_subquestions
from langchain_dod.prompts import DEFAULT_MAX_SUBQUESTIONS, PROFILES, decomposer_messages

if TYPE_CHECKING:
    from langchain_dod.decomposition_model import Decomposition

__all__ = [
    "ADAPTER_PROFILE",
    "DEFAULT_ADAPTER",
    "DEFAULT_ADAPTERS",
    "MERGED_PROFILES",
    "MERGE_ENV",
    "Decomposition",
    "DecompositionError",
    "Reading",
    "Reply",
    "Task",
    "adapter_env",
    "attempts",
    "decompose_gguf",
    "default_adapter",
    "default_adapter_for",
    "default_decomposer_model",
    "default_merge",
    "drive",
    "free_first",
    "model_label",
    "normalize_input",
    "read_gguf",
    "read_reply",
    "subquestion_schema",
]

DEFAULT_ADAPTERS: dict[str, str] = {
    "math": "smollm2-135m-decomposer-lora.gguf",
    "multihop": "smollm2-135m-multihop-lora.gguf",
}
"""The adapter file each prompt profile applies, in ``langchain_dod/data``, when the wheel ships it: ``math`` was
trained on GSM8K, ``multihop`` on MuSiQue's gold decompositions. A profile without a shipped file runs the untuned
base under the grammar."""
DEFAULT_ADAPTER = DEFAULT_ADAPTERS["math"]
ADAPTER_PROFILE = "math"
"""The default prompt profile (the paper's math word problems)."""
DEFAULT_MAX_TOKENS = 256
_MAX_SUBQUESTION_CHARS = 240


class DecompositionError(RuntimeError):
    """The decomposer ran but produced nothing usable, or failed."""


@dataclass
class Reading:
    """A decomposition as read from a reply: the fields of :class:`Decomposition`, without pydantic."""

    subquestions: list[str] = field(default_factory=list)
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    seconds: float | None = None
    raw: str | None = None
    constrained: bool | None = None


def __getattr__(name: str) -> Any:
    """``Decomposition`` lives in :mod:`langchain_dod.decomposition_model` (pydantic loads only when it is used)."""
    if name == "Decomposition":
        from langchain_dod.decomposition_model import Decomposition

        return Decomposition
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


# -- which model ---------------------------------------------------------------------------------------------


def adapter_env(profile: str = ADAPTER_PROFILE) -> str:
    """The environment variable that overrides ``profile``'s adapter.

    ``DOD_DECOMPOSER_ADAPTER`` for ``math``, ``DOD_DECOMPOSER_ADAPTER_MULTIHOP`` (and so on) for the others.
    """
    return "DOD_DECOMPOSER_ADAPTER" + ("" if profile == ADAPTER_PROFILE else f"_{profile.upper()}")


def default_adapter(profile: str = ADAPTER_PROFILE) -> Path | None:
    """The distilled LoRA adapter for ``profile`` on the default base, or ``None`` when none ships (yet).

    :func:`adapter_env` names a path that replaces it (``none`` turns it off).
    """
    if env := os.environ.get(adapter_env(profile)):
        return None if env.lower() in ("", "none", "0") else Path(env).expanduser()
    if (name := DEFAULT_ADAPTERS.get(profile)) is None:
        return None
    candidate = resources.files("langchain_dod") / "data" / name
    return Path(str(candidate)) if candidate.is_file() else None


def default_adapter_for(profile: str = ADAPTER_PROFILE) -> Path | None:
    """The adapter the default decomposer applies for ``profile``; ``None`` when it runs the untuned base.

    Each adapter is applied only for the profile it was trained on (:data:`DEFAULT_ADAPTERS`): for a profile
    without one (``reading``) the untuned base, decoded under the grammar, is the better guess.
    ``DOD_DECOMPOSER_GGUF`` replaces the base; no adapter is then applied (an adapter fits only its base).
    """
    if role_env_model("decomposer"):
        return None
    return default_adapter(profile)


def default_decomposer_model(profile: str = ADAPTER_PROFILE) -> tuple[str, str | None]:
    """``(model, adapter)`` of the shipped default decomposer for ``profile`` (see :func:`default_adapter_for`)."""
    if base := role_env_model("decomposer"):
        return base, None  # the adapter fits only the shipped base
    adapter = default_adapter_for(profile)
    return ROLE_DEFAULTS["decomposer"], str(adapter) if adapter else None


MERGED_PROFILES = frozenset({"math"})
"""Profiles whose shipped adapter the default decomposer loads merged into its base (:mod:`langchain_dod.merge`:
made once on first use, ~8 CPU s, then cached). Merging is not bit-identical (Q8_0 rounding flips some skip-or-plan
choices), so a profile is listed only once ``dod eval`` shows no loss: for ``math``, on the 400 GSM8K evaluation
items, 55.8 % vs 53.0 % with the run-time LoRA (+2.8, 95 % CI +0.0..+5.5; ``benchmarks/results/merged_accuracy.md``)
at about half the decomposer's CPU time. ``multihop`` was measured merged (session 16,
``benchmarks/results/musique/multihop_merged.md``): 1.4× faster per query, recall@5 within −0.006..+0.004 of the
run-time LoRA on all four retrieval rows, but its static MiniLM gain over plain falls to +0.018, below issue 13's
+0.02, so it keeps the run-time LoRA (``DOD_DECOMPOSER_MERGE=1`` or ``--merge-adapter`` merges it)."""
MERGE_ENV = "DOD_DECOMPOSER_MERGE"
"""``0`` keeps every default adapter at run time; ``1`` merges any default adapter, a ``DOD_DECOMPOSER_ADAPTER``
one too; unset: :data:`MERGED_PROFILES` decide for the shipped files."""


def default_merge(profile: str, adapter: str | os.PathLike[str] | None) -> bool:
    """Whether the default decomposer loads ``adapter`` (what :func:`default_decomposer_model` returned) merged."""
    if adapter is None:
        return False
    if os.environ.get(MERGE_ENV, "").strip():
        return _env_flag(MERGE_ENV, default=False)
    shipped = DEFAULT_ADAPTERS.get(profile)
    if profile not in MERGED_PROFILES or shipped is None:
        return False
    return Path(adapter).resolve() == Path(str(resources.files("langchain_dod") / "data" / shipped)).resolve()


def model_label(name: Any, adapter: str | os.PathLike[str] | None) -> str:
    """A short name of a decomposing model for reports: ``base+adapter.gguf``."""
    return f"{name}+{Path(adapter).name}" if adapter else str(name)


def free_first(grammar: str, adapter: str | os.PathLike[str] | None) -> bool:
    """Whether a local model decodes freely first (``Decomposer.grammar``: ``auto`` frees a model with an adapter)."""
    if grammar == "always":
        return False
    return grammar == "fallback" or bool(adapter)


# -- reading a reply -----------------------------------------------------------------------------------------


def normalize_input(value: Any) -> tuple[str, str | None]:
    """Accept ``"question"`` or ``{"question": ..., "context": ...}``; reject the rest clearly."""
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


@dataclass(frozen=True)
class Task:
    """One decomposition to do: the question and the settings that read its reply."""

    question: str
    context: str | None
    profile: str = ADAPTER_PROFILE
    max_subquestions: int = DEFAULT_MAX_SUBQUESTIONS
    max_tokens: int = DEFAULT_MAX_TOKENS
    model_name: str = ""


@dataclass
class Reply:
    """What a model call returned, in plain terms.

    ``how`` it was decoded: ``free`` (without the grammar), ``grammar`` (under it), ``structured`` (a chat model's
    structured output, ``items`` already parsed) or ``text`` (free text, parsed robustly); ``cut``: stopped at the
    token limit.
    """

    text: str
    how: str = "text"
    cut: bool = False
    items: list[Any] | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


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


_NONE_PHRASES = re.compile(r"\b(no (further )?(decomposition|sub-?questions?)|not needed|none)\b", re.I)
# the reply format's own empty plan, as a model served remotely without a schema writes it (in a code fence, say)
_EMPTY_PLAN = re.compile(r'"subquestions"\s*:\s*\[\s*\]')


def _says_none(text: str) -> bool:
    return bool(_NONE_PHRASES.search(text) or _EMPTY_PLAN.search(text)) or text.strip() in ("[]", "{}")


def read_reply(reply: Reply, seconds: float, task: Task) -> Reading | None:
    """The decomposition in ``reply``; ``None`` for a free reply that is not valid JSON (decode again)."""
    raw, items, cut, how = reply.text, reply.items, reply.cut, reply.how
    if how == "free":
        items = _valid_reply(raw, task.max_subquestions)
        if items is None:
            return None
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
                f"The decomposer ({task.model_name}) replied with no sub-questions and did not say none are "
                f"needed: {raw[:200]!r}. Use a model that follows the instruction, or our local decomposer."
            )
    if cut and not items:
        # not an empty plan: that means "answer directly" and would hide the cut from the caller
        raise DecompositionError(
            f"The decomposer's reply was cut off by max_tokens={task.max_tokens} before its first sub-question "
            f"was complete ({raw[:80]!r}). Raise max_tokens (the default is {DEFAULT_MAX_TOKENS})."
        )
    subquestions = normalize_subquestions(
        [i[:_MAX_SUBQUESTION_CHARS] if isinstance(i, str) else i for i in items], task.max_subquestions
    )
    if _copies_example(subquestions, task.question, task.context, task.profile):
        # a model that cannot read the question (another language, only symbols) copies the prompt's example:
        # no plan (the solver answers the question itself) beats a plan about the example's muffins
        subquestions = []
    return Reading(
        subquestions=subquestions,
        model=task.model_name,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        seconds=round(seconds, 4),
        raw=raw,
        constrained={"grammar": True, "free": False}.get(how),
    )


# -- the order of attempts -----------------------------------------------------------------------------------


def attempts(task: Task, *, free: bool) -> Generator[bool, Reply, Reading]:
    """The decomposition's steps, without I/O: yields whether to decode freely next and receives the :class:`Reply`.

    With ``free`` the model first writes freely (a distilled decomposer writes the JSON by itself; under the
    grammar, greedy decoding costs about the same, sampling or a repeat penalty up to ~1.8×); only a reply that is
    not valid JSON is decoded again, constrained (the grammar, structured output, or free text for a model with
    neither). Run it with :func:`drive` or its async twin in ``Decomposer``.
    """
    started = time.perf_counter()
    first: Reply | None = None
    if free:
        first = yield True
        if (result := read_reply(first, time.perf_counter() - started, task)) is not None:
            return result
    result = read_reply((yield False), time.perf_counter() - started, task)
    assert result is not None  # only a "free" reply can be refused
    if first is not None and (first.input_tokens is not None or first.output_tokens is not None):
        # count the discarded free attempt's tokens in the result (its time is already in ``seconds``)
        result.input_tokens = (result.input_tokens or 0) + (first.input_tokens or 0)
        result.output_tokens = (result.output_tokens or 0) + (first.output_tokens or 0)
    return result


def drive(steps: Generator[bool, Reply, Reading], call: Callable[[bool], Reply]) -> Reading:
    """Run :func:`attempts` with a synchronous ``call(free) -> Reply``."""
    free = next(steps)
    while True:
        try:
            free = steps.send(call(free))
        except StopIteration as done:
            return done.value


# -- the local model without LangChain ---------------------------------------------------------------------


def _shared_prefix(loaded: Any, profile: str, max_subquestions: int) -> list[int]:
    """The prompt tokens every question of ``profile`` starts with (the system prompt, under the chat template)."""
    from langchain_dod import engine

    a, _ = engine.render(loaded, decomposer_messages("A?", profile=profile, max_subquestions=max_subquestions))
    b, _ = engine.render(loaded, decomposer_messages("Z?", profile=profile, max_subquestions=max_subquestions))
    same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return a[:same]


def decompose_gguf(
    value: Any,
    *,
    model: str,
    lora_path: str | None = None,
    profile: str = ADAPTER_PROFILE,
    max_subquestions: int = DEFAULT_MAX_SUBQUESTIONS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    grammar: str = "auto",
    params: dict[str, Any] | None = None,
    merge_lora: bool = False,
) -> Decomposition:
    """Decompose with a local GGUF through :mod:`langchain_dod.engine`, without importing LangChain.

    Gives what ``Decomposer(llm=ChatGGUF(model=model, lora_path=lora_path), ...).invoke(value)`` gives with the
    default ``ChatGGUF`` settings (``params``: :func:`langchain_dod.engine.llama_params`; ``merge_lora``: as
    ``ChatGGUF.merge_lora``); the model loads once per process and is shared with ``ChatGGUF`` instances of the same
    settings. This is the ``dod decompose`` path.

    A fresh process reads the system prompt's KV state from the cache instead of evaluating it
    (:func:`langchain_dod.engine.warm_prefix`; ``DOD_PROMPT_CACHE=0`` turns that off).
    """
    from langchain_dod.decomposition_model import Decomposition

    reading = read_gguf(
        value,
        model=model,
        lora_path=lora_path,
        profile=profile,
        max_subquestions=max_subquestions,
        max_tokens=max_tokens,
        grammar=grammar,
        params=params,
        merge_lora=merge_lora,
    )
    return Decomposition.from_reading(reading)


def read_gguf(
    value: Any,
    *,
    model: str,
    lora_path: str | None = None,
    profile: str = ADAPTER_PROFILE,
    max_subquestions: int = DEFAULT_MAX_SUBQUESTIONS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    grammar: str = "auto",
    params: dict[str, Any] | None = None,
    merge_lora: bool = False,
) -> Reading:
    """:func:`decompose_gguf` as a plain :class:`Reading` (``dod decompose``: no pydantic to import)."""
    from langchain_dod import engine

    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; choose one of {sorted(PROFILES)}.")
    question, context = normalize_input(value)
    params = params if params is not None else engine.llama_params()
    loaded, _ = engine.load(model, lora_path, params, merge_lora=merge_lora)
    if _env_flag("DOD_PROMPT_CACHE", default=True):
        engine.warm_prefix(loaded, _shared_prefix(loaded, profile, max_subquestions))
    messages = decomposer_messages(question, context, profile=profile, max_subquestions=max_subquestions)
    schema = subquestion_schema(max_subquestions)

    def call(free: bool) -> Reply:
        done = engine.complete(
            loaded, messages, model=model, max_tokens=max_tokens, json_schema=None if free else schema
        )
        return Reply(
            text=done.text,
            how="free" if free else "grammar",
            cut=done.finish_reason == "length",
            input_tokens=done.input_tokens,
            output_tokens=done.output_tokens,
        )

    task = Task(question, context, profile, max_subquestions, max_tokens, model_label(model, lora_path))
    return drive(attempts(task, free=free_first(grammar, lora_path)), call)
