"""langchain-dod: a tiny local question decomposer in front of any LangChain LLM (Divide-or-Conquer)."""

from langchain_dod.chains import SUBQUESTIONS_EVENT, DecomposeSolve, SingleStage, StageError, create_dod_chain
from langchain_dod.chat_models import ChatGGUF, ContextWindowExceededError, ModelLoadError
from langchain_dod.decomposer import Decomposer, Decomposition, DecompositionError
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
