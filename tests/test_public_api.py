"""The package's public surface: the names ``from langchain_dod import *`` gives, and its version."""

from __future__ import annotations

from pathlib import Path

import pytest

import langchain_dod

# Changing this list changes the public API: add a name on purpose, remove one only with a deprecation.
PUBLIC = [
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


def test_all_is_pinned_and_every_name_exists():
    assert langchain_dod.__all__ == PUBLIC
    missing = [name for name in PUBLIC if not hasattr(langchain_dod, name)]
    assert missing == []


def test_version_is_pyprojects():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert langchain_dod.__version__ == pyproject["project"]["version"]
