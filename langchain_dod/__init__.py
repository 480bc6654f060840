"""langchain-dod: a tiny local question decomposer in front of any LangChain LLM (Divide-or-Conquer).

The public names load on first use (PEP 562): ``import langchain_dod`` imports neither LangChain nor
llama.cpp, so ``dod decompose`` and a script that needs one class pay only for what they use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers and IDEs see the names; at run time __getattr__ imports them
    from langchain_dod.chains import SUBQUESTIONS_EVENT, DecomposeSolve, SingleStage, StageError, create_dod_chain
    from langchain_dod.chat_models import ChatGGUF
    from langchain_dod.decomposer import Decomposer
    from langchain_dod.decomposition import DecompositionError
    from langchain_dod.decomposition_model import Decomposition
    from langchain_dod.engine import ContextWindowExceededError, ModelLoadError
    from langchain_dod.gguf_file import GGUFError
    from langchain_dod.models import ModelNotFoundError, resolve
    from langchain_dod.retrievers import DecomposingRetriever
    from langchain_dod.solvers import load_chat_model

__all__ = [
    "SUBQUESTIONS_EVENT",
    "ChatGGUF",
    "ContextWindowExceededError",
    "DecomposeSolve",
    "Decomposer",
    "DecomposingRetriever",
    "Decomposition",
    "DecompositionError",
    "GGUFError",
    "ModelLoadError",
    "ModelNotFoundError",
    "SingleStage",
    "StageError",
    "create_dod_chain",
    "load_chat_model",
    "resolve",
]

_WHERE = {
    "SUBQUESTIONS_EVENT": "chains",
    "ChatGGUF": "chat_models",
    "ContextWindowExceededError": "engine",
    "DecomposeSolve": "chains",
    "Decomposer": "decomposer",
    "DecomposingRetriever": "retrievers",
    "Decomposition": "decomposition_model",
    "DecompositionError": "decomposition",
    "GGUFError": "gguf_file",
    "ModelLoadError": "engine",
    "ModelNotFoundError": "models",
    "SingleStage": "chains",
    "StageError": "chains",
    "create_dod_chain": "chains",
    "load_chat_model": "solvers",
    "resolve": "models",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (and ``__version__``)."""
    if name == "__version__":
        from importlib import metadata

        try:
            value: Any = metadata.version("langchain-dod")  # the installed distribution's: pyproject.toml's version
        except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
            value = "0+unknown"
    elif name in _WHERE:
        value = getattr(importlib.import_module(f"langchain_dod.{_WHERE[name]}"), name)
    else:
        raise AttributeError(f"module 'langchain_dod' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "__version__"})
