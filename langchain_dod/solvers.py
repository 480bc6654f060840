"""Turn a solver SPEC string into a LangChain model: ``provider:model`` or ``llamacpp:NAME|PATH``.

``provider:model`` goes to LangChain's own ``init_chat_model`` (``openai:gpt-4o-mini``, ``ollama:qwen2.5``,
``anthropic:claude-…``), so every provider LangChain knows works once its partner package is installed.
``llamacpp:`` runs a local GGUF through :class:`~langchain_dod.chat_models.ChatGGUF`.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel

from langchain_dod.chat_models import ChatGGUF

__all__ = ["DEFAULT_SOLVER", "load_chat_model", "model_label"]

DEFAULT_SOLVER = "llamacpp:qwen2.5-coder-1.5b-instruct"


def load_chat_model(spec: str, **kwargs: Any) -> BaseChatModel:
    """Build the chat model a SPEC names; extra ``kwargs`` go to its constructor."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("A model SPEC is 'provider:model' (e.g. openai:gpt-4o-mini) or 'llamacpp:NAME|PATH'.")
    provider, sep, model = spec.strip().partition(":")
    if provider in ("llamacpp", "gguf"):
        if not model:
            raise ValueError(f"{spec!r} names no model; use e.g. llamacpp:qwen2.5-coder-1.5b-instruct.")
        return ChatGGUF(model=model, **kwargs)
    if not sep or not model:
        raise ValueError(
            f"{spec!r} is not a SPEC. Use 'provider:model' (e.g. openai:gpt-4o-mini, ollama:qwen2.5) or "
            "'llamacpp:NAME|PATH' for a local GGUF."
        )
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as err:
        raise ImportError(
            f"Solver {spec!r} needs LangChain's init_chat_model: pip install langchain langchain-{provider}"
        ) from err
    try:
        return init_chat_model(model, model_provider=provider, **kwargs)
    except ImportError as err:
        raise ImportError(f"Solver {spec!r} needs its integration package: pip install langchain-{provider}") from err
    except Exception as err:  # each provider's own class (openai.OpenAIError for a missing OPENAI_API_KEY): one line
        message = " ".join(str(err).split())
        raise ValueError(f"Could not create the model {spec!r}: {message}") from err


def model_label(llm: Any) -> str:
    """A short, stable name for a model in outputs and reports."""
    for attr in ("model", "model_name", "model_id"):
        value = getattr(llm, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(llm).__name__
