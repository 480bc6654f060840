"""Turn a model SPEC string into a LangChain model: ``provider:model`` or ``llamacpp:NAME|PATH``.

This module is the one place that reads a SPEC. ``provider:model`` goes to LangChain's own ``init_chat_model``
(``openai:gpt-4o-mini``, ``ollama:qwen2.5``, ``anthropic:claude-…``), so every provider LangChain knows works once
its partner package is installed. ``llamacpp:`` (or its alias ``gguf:``) runs a local GGUF through
:class:`~langchain_dod.chat_models.ChatGGUF`. Where a bare GGUF name or path is also accepted (``dod decompose
--decomposer``, ``dod eval run --decomposer``), callers say so with ``allow_path=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from langchain_dod.chat_models import ChatGGUF
from langchain_dod.models import DEFAULT_SOLVER

__all__ = [
    "DEFAULT_SOLVER",
    "LOCAL_PROVIDERS",
    "Spec",
    "is_local_model",
    "is_local_spec",
    "load_chat_model",
    "model_label",
    "parse_spec",
    "spec_label",
]

LOCAL_PROVIDERS = ("llamacpp", "gguf")
"""Providers that mean "a local GGUF through ChatGGUF"; ``gguf`` is an alias of ``llamacpp``."""


@dataclass(frozen=True)
class Spec:
    """A parsed SPEC: ``provider`` (``llamacpp`` for a local GGUF), ``model`` (name, path or provider's model id)."""

    provider: str
    model: str

    @property
    def local(self) -> bool:
        """True for a GGUF run in this process (the settings of ``ChatGGUF`` apply, no API key, no network)."""
        return self.provider in LOCAL_PROVIDERS


def _split(spec: str, allow_path: bool) -> tuple[str, str, bool]:
    """``(provider, model, has_provider)`` without checking either; a path never has a provider."""
    text = spec.strip()
    provider, sep, model = text.partition(":")
    if sep and not text.startswith(("/", ".")):  # "./x:y.gguf" or "/a:b/x.gguf" is a path, not provider "." or "/a"
        return provider, model, True
    return ("llamacpp", text, False) if allow_path else ("", text, False)


def parse_spec(spec: str, *, allow_path: bool = False) -> Spec:
    """Read a SPEC; ``allow_path=True`` also takes a bare GGUF name or path (no ``provider:``) as a local model.

    Raises ``ValueError`` naming the accepted forms for anything else.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("A model SPEC is 'provider:model' (e.g. openai:gpt-4o-mini) or 'llamacpp:NAME|PATH'.")
    provider, model, has_provider = _split(spec, allow_path)
    if provider in LOCAL_PROVIDERS:
        if not model:
            raise ValueError(f"{spec!r} names no model; use e.g. llamacpp:qwen2.5-coder-1.5b-instruct.")
        return Spec("llamacpp", model)
    if not has_provider or not model:
        raise ValueError(
            f"{spec!r} is not a SPEC. Use 'provider:model' (e.g. openai:gpt-4o-mini, ollama:qwen2.5) or "
            "'llamacpp:NAME|PATH' for a local GGUF."
        )
    return Spec(provider, model)


def is_local_spec(spec: str, *, allow_path: bool = False) -> bool:
    """True when ``spec`` names a local GGUF (``llamacpp:``/``gguf:``, or a bare name/path with ``allow_path``).

    Never raises: a malformed SPEC is simply not local (loading it raises the helpful error).
    """
    return isinstance(spec, str) and _split(spec, allow_path)[0] in LOCAL_PROVIDERS


def is_local_model(llm: Any) -> bool:
    """True for a model that runs in this process (a :class:`ChatGGUF`), whose CPU time is ours to count."""
    return isinstance(llm, ChatGGUF)


def load_chat_model(
    spec: str, *, allow_path: bool = False, local_kwargs: Mapping[str, Any] | None = None, **kwargs: Any
) -> BaseChatModel:
    """Build the chat model a SPEC names; extra ``kwargs`` go to its constructor.

    ``local_kwargs`` go to the constructor only when the SPEC is a local GGUF: settings such as ``n_threads`` or
    ``seed`` that a hosted provider's class would reject. ``allow_path``: see :func:`parse_spec`.
    """
    parsed = parse_spec(spec, allow_path=allow_path)
    if parsed.local:
        return ChatGGUF(model=parsed.model, **kwargs, **(local_kwargs or {}))
    provider = parsed.provider
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as err:
        raise ImportError(
            f"Solver {spec!r} needs LangChain's init_chat_model: pip install langchain langchain-{provider}"
        ) from err
    try:
        return init_chat_model(parsed.model, model_provider=provider, **kwargs)
    except ImportError as err:
        raise ImportError(f"Solver {spec!r} needs its integration package: pip install langchain-{provider}") from err
    except Exception as err:  # each provider's own class (openai.OpenAIError for a missing OPENAI_API_KEY): one line
        message = " ".join(str(err).split())
        raise ValueError(f"Could not create the model {spec!r}: {message}") from err


def spec_label(spec: str) -> str:
    """A SPEC's short name for run names and reports: the model part, a GGUF path's file stem."""
    label = _split(spec, allow_path=True)[1]
    return Path(label).stem if label.endswith(".gguf") else label


def model_label(llm: Any) -> str:
    """A short, stable name for a model in outputs and reports."""
    for attr in ("model", "model_name", "model_id"):
        value = getattr(llm, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(llm).__name__
