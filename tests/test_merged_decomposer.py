"""``merge_lora`` / ``--[no-]merge-adapter``: the shipped adapter merged into the real SmolLM2 base (issue 16; the
default for the math adapter since session 8, see ``decomposition.MERGED_PROFILES``).

The merge of the shipped adapter runs once for the whole module (tens of seconds on a busy machine) into a
temporary ``DOD_CACHE_DIR``; every test after the first reuses that file, and says so by its mtime and a spy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from langchain_dod import ChatGGUF, Decomposer, engine, merge
from langchain_dod.cli import _decompose_fn, _decomposer, build_parser
from langchain_dod.decomposition import Reading, decompose_gguf, default_adapter
from langchain_dod.models import resolve

# A question the shipped adapter plans both as a runtime LoRA and merged (GSM8K test, unseen), so "same plan"
# means something: it learned to leave many questions undecomposed, and the Q8_0 merge does so more often (it planned
# 3 of 21 unseen questions where the runtime adapter planned 7; measured in session 5). On one of those three the
# lean and the LangChain path of the merged model disagreed (plan vs none): its skip decision is near 50/50, and the
# two paths evaluate the prompt in different batches, so rounding differs.
Q = (
    "Lorie earns $10 per hour. Karen earns twice what Lorie earns. "
    "How much does Karen earn in two days if she works 3 hours per day?"
)
BASE = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def cache() -> Iterator[Path]:
    """A private cache dir for the module (merged files, prompt states), set as ``DOD_CACHE_DIR``."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOD_CACHE_DIR", folder)
        yield Path(folder)


@pytest.fixture(scope="module")
def adapter() -> str:
    found = default_adapter()
    assert found is not None and found.is_file(), "the shipped adapter is missing from langchain_dod/data"
    return str(found)


@pytest.fixture
def merges(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Spy on :func:`langchain_dod.merge.merge_lora`: the output file of each real merge."""
    calls: list[Path] = []
    real = merge.merge_lora

    def spy(base, lora, out, **kwargs):  # noqa: ANN001, ANN202 - passes through
        calls.append(Path(out))
        return real(base, lora, out, **kwargs)

    monkeypatch.setattr(merge, "merge_lora", spy)
    return calls


@pytest.fixture(scope="module")
def merged(cache: Path, adapter: str) -> Path:
    """The merged file, made by a first ``ChatGGUF(merge_lora=True)`` load."""
    llm = ChatGGUF(model=BASE, lora_path=adapter, merge_lora=True, n_threads=1).load()
    (path,) = (cache / "merged").glob("*.gguf")
    assert llm._loaded().key[:2] == (str(path), None)  # the merged file, and no runtime adapter
    return path


def test_the_merged_file_is_made_once_and_reused(merged: Path, adapter: str, merges: list[Path]) -> None:
    stamp = merged.stat().st_mtime_ns
    engine._MERGED.clear()  # as in a new process: only the file cache is left
    llm = ChatGGUF(model=BASE, lora_path=adapter, merge_lora=True, n_threads=1, max_tokens=8).load()
    assert llm._loaded().key[:2] == (str(merged), None)
    assert merges == [] and merged.stat().st_mtime_ns == stamp  # reused, not merged again
    assert isinstance(llm.invoke("Say hi.").content, str)


def test_without_the_flag_the_adapter_is_applied_at_run_time(merged: Path, adapter: str, merges: list[Path]) -> None:
    plain = ChatGGUF(model=BASE, lora_path=adapter, n_threads=1)
    assert plain._loaded().key[:2] == (str(resolve(BASE).resolve()), adapter)
    assert merges == [] and list(merged.parent.glob("*.gguf")) == [merged]
    flagged = ChatGGUF(model=BASE, lora_path=adapter, merge_lora=True, n_threads=1)
    assert plain._identifying_params["merge_lora"] is False and flagged._identifying_params["merge_lora"] is True
    assert ChatGGUF.model_validate(flagged.model_dump()).merge_lora is True  # serialised like the other fields
    # without an adapter there is nothing to merge: the base loads as it is
    bare = ChatGGUF(model=BASE, merge_lora=True, n_threads=1)
    assert bare._loaded().key[:2] == (str(resolve(BASE).resolve()), None)


def test_a_merge_at_another_scale_is_refused(adapter: str) -> None:
    with pytest.raises(ValueError, match="Drop merge_lora"):
        ChatGGUF(model=BASE, lora_path=adapter, merge_lora=True, lora_scale=0.5)
    with pytest.raises(ValueError, match="Drop merge_lora"):
        decompose_gguf(Q, model=BASE, lora_path=adapter, merge_lora=True, params=engine.llama_params(lora_scale=0.5))


def test_decomposition_end_to_end_lean_and_langchain_paths(merged: Path, adapter: str, merges: list[Path]) -> None:
    lean = decompose_gguf(Q, model=BASE, lora_path=adapter, merge_lora=True, params=engine.llama_params(n_threads=1))
    assert lean.subquestions and all(isinstance(s, str) and s for s in lean.subquestions)
    llm = ChatGGUF(model=BASE, lora_path=adapter, merge_lora=True, n_threads=1)
    assert Decomposer(llm=llm).invoke(Q).subquestions == lean.subquestions  # one model, two paths, one answer
    assert merges == []


def test_cli_flags_parse_and_reach_the_model(adapter: str, monkeypatch: pytest.MonkeyPatch) -> None:
    parse = build_parser().parse_args
    args = parse(["decompose", Q, "--merge-adapter", "--threads", "2"])
    assert args.merge_adapter is True and args.threads == 2
    plain = parse(["ask", Q])
    assert plain.merge_adapter is None and plain.threads is None  # None: the default decides
    off = parse(["decompose", Q, "--no-merge-adapter"])
    assert off.merge_adapter is False
    with pytest.raises(SystemExit):
        parse(["decompose", Q, "--threads", "0"])

    monkeypatch.delenv("DOD_DECOMPOSER_MERGE", raising=False)
    monkeypatch.delenv("DOD_DECOMPOSER_ADAPTER", raising=False)
    seen: dict[str, object] = {}
    monkeypatch.setattr("langchain_dod.decomposition.read_gguf", lambda value, **kw: seen.update(kw) or Reading())
    _decompose_fn(args)(Q)  # the lean path
    assert seen["merge_lora"] is True and seen["params"] == engine.llama_params(n_threads=2)
    _decompose_fn(plain)(Q)  # the shipped math adapter merges by default ...
    assert seen["merge_lora"] is True and seen["params"] == engine.llama_params()
    _decompose_fn(off)(Q)  # ... unless told not to
    assert seen["merge_lora"] is False
    _decompose_fn(parse(["decompose", Q, "--adapter", adapter]))(Q)  # an adapter given by hand: only when asked
    assert seen["merge_lora"] is False and seen["lora_path"] == adapter
    _decompose_fn(parse(["decompose", Q, "--profile", "multihop"]))(Q)  # not measured merged: run time
    assert seen["merge_lora"] is False

    # the LangChain paths: the default model (merged unless --no-merge-adapter), a SPEC with an adapter (only asked)
    for extra, default in (([], True), (["--decomposer", f"llamacpp:{BASE}", "--adapter", adapter], False)):
        llm = _decomposer(parse(["ask", Q, "--merge-adapter", "--threads", "2", *extra])).llm
        assert (llm.merge_lora, llm.n_threads, llm.lora_path) == (True, 2, adapter)
        llm = _decomposer(parse(["ask", Q, *extra])).llm
        assert (llm.merge_lora, llm.n_threads) == (default, None)
        assert _decomposer(parse(["ask", Q, "--no-merge-adapter", *extra])).llm.merge_lora is False
    llm = _decomposer(parse(["ask", Q, "--adapter", adapter])).llm  # the default model with a hand-given adapter
    assert (llm.merge_lora, llm.lora_path) == (False, adapter)


def test_dod_decompose_merge_adapter_in_a_fresh_process_uses_the_cached_merge(merged: Path, cache: Path) -> None:
    stamp = merged.stat().st_mtime_ns
    run = subprocess.run(
        [sys.executable, "-m", "langchain_dod.cli", "decompose", "--json", "--merge-adapter", "--threads", "1", Q],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "DOD_CACHE_DIR": str(cache)},
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["subquestions"] and merged.stat().st_mtime_ns == stamp
    # the prompt state it cached is named after the model file it loaded: the merged one
    assert any(p.name.startswith(merged.stem) for p in (cache / "prompt-states").iterdir())
    one_thread = engine.llama_params(n_threads=1)
    lean = decompose_gguf(Q, model=BASE, lora_path=str(default_adapter()), merge_lora=True, params=one_thread)
    assert answer["subquestions"] == lean.subquestions  # the same greedy decode as in this process
