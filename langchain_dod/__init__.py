"""langchain-dod: a tiny local question decomposer in front of any LangChain LLM (Divide-or-Conquer)."""

from langchain_dod.chat_models import ChatGGUF, ContextWindowExceededError, ModelLoadError
from langchain_dod.gguf_file import GGUFError
from langchain_dod.models import ModelNotFoundError, resolve

__all__ = [
    "ChatGGUF",
    "ContextWindowExceededError",
    "GGUFError",
    "ModelLoadError",
    "ModelNotFoundError",
    "resolve",
]
