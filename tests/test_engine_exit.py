"""engine._free_loaded: models are freed at interpreter exit while llama_cpp is still whole (real model)."""

from __future__ import annotations

import threading

import pytest

from langchain_dod import engine

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def own_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """A private load cache: freeing must not touch the models other tests hold."""
    monkeypatch.setattr(engine, "_LOADED", {})


@pytest.mark.usefixtures("own_models")
def test_free_loaded_frees_every_model_and_forgets_it() -> None:
    loaded, fresh = engine.load(MODEL, None, engine.llama_params(n_threads=1, n_ctx=320))
    assert fresh and loaded.llm._model.model is not None
    engine._free_loaded()
    assert engine._LOADED == {}
    assert loaded.llm._model.model is None  # llama.cpp freed it; Llama.__del__ has nothing left to do
    loaded.llm.close()  # closing again (what __del__ does later) is harmless


@pytest.mark.usefixtures("own_models")
def test_a_model_in_use_is_not_freed_under_its_caller() -> None:
    loaded, _ = engine.load(MODEL, None, engine.llama_params(n_threads=1, n_ctx=320))
    with loaded.lock:  # another thread is decoding
        engine._free_loaded()
    assert list(engine._LOADED.values()) == [loaded] and loaded.llm._model.model is not None
    engine._free_loaded()
    assert engine._LOADED == {}


@pytest.mark.usefixtures("own_models")
def test_exit_does_not_wait_for_a_load_that_never_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded, _ = engine.load(MODEL, None, engine.llama_params(n_threads=1, n_ctx=320))
    monkeypatch.setattr(engine, "_EXIT_WAIT_S", 0.2)
    holding, release = threading.Event(), threading.Event()

    def stuck_loader() -> None:  # another thread inside load(), holding the load lock
        with engine._LOAD_LOCK:
            holding.set()
            release.wait(10)

    worker = threading.Thread(target=stuck_loader)
    worker.start()
    try:
        assert holding.wait(10)
        engine._free_loaded()
        # it returned while the loader still holds the lock: it gave up instead of waiting for the loader to finish
        assert worker.is_alive() and not release.is_set()
        assert list(engine._LOADED.values()) == [loaded] and loaded.llm._model.model is not None
    finally:
        release.set()
        worker.join()
    engine._free_loaded()
    assert engine._LOADED == {}
