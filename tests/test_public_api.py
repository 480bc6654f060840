"""The package's public surface: the names ``from langchain_dod import *`` gives, and its version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (this checkout first on the path)."""
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


def test_import_is_lazy_and_never_loads_evaluation_or_training():
    loaded = _modules_after("import langchain_dod")
    heavy = {"langchain_dod.evaluation", "training", "langchain_core", "llama_cpp", "numpy"}
    assert not {m for m in loaded if m.split(".")[0] in heavy or m.startswith("langchain_dod.evaluation")}
    # a public name imports its own module on first use, and still nothing of the evaluation or training
    loaded = _modules_after("from langchain_dod import Decomposer, DecomposeSolve, __version__")
    assert "langchain_dod.decomposer" in loaded and "langchain_dod.chains" in loaded
    assert not {m for m in loaded if m.startswith(("langchain_dod.evaluation", "training"))}


def test_dir_lists_the_public_names():
    assert set(PUBLIC) <= set(dir(langchain_dod))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = langchain_dod.nope
