"""langchain-dod: a tiny local question decomposer in front of any LangChain LLM (Divide-or-Conquer)."""

from importlib import metadata as _metadata

from langchain_dod.chains import SUBQUESTIONS_EVENT, DecomposeSolve, SingleStage, StageError, create_dod_chain
from langchain_dod.chat_models import ChatGGUF, ContextWindowExceededError, ModelLoadError
from langchain_dod.decomposer import Decomposer, Decomposition, DecompositionError
from langchain_dod.gguf_file import GGUFError
from langchain_dod.models import ModelNotFoundError, resolve
from langchain_dod.retrievers import DecomposingRetriever
from langchain_dod.solvers import load_chat_model

try:
    __version__ = _metadata.version("langchain-dod")  # the installed distribution's: pyproject.toml's version
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

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
