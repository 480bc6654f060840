"""The shipped distilled decomposer: the adapter file, its model card, and what it does on unseen questions.

The adapter (v3, SD-R) was trained on 1,000 GSM8K *train* questions, so behaviour is checked on GSM8K *test*
questions it never saw. Real llama.cpp, real adapter, greedy decoding.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from langchain_dod import ChatGGUF, Decomposer, decomposition
from langchain_dod.decomposer import DEFAULT_ADAPTER, default_adapter, default_decomposer_llm
from langchain_dod.gguf_file import inspect_gguf

DATA = Path(__file__).resolve().parents[1] / "langchain_dod" / "data"
MULTIHOP_ADAPTER = decomposition.DEFAULT_ADAPTERS["multihop"]


@pytest.fixture(scope="module")
def unseen_questions(gsm8k_dir: Path) -> list[str]:
    lines = (gsm8k_dir / "test.jsonl").read_text().splitlines()
    return [json.loads(lines[i])["question"] for i in range(7, 7 + 20 * 61, 61)]  # spread over the file


@pytest.fixture(scope="module")
def distilled() -> Decomposer:
    return Decomposer()


def test_adapter_ships_small_valid_and_with_a_model_card() -> None:
    adapter = DATA / DEFAULT_ADAPTER
    assert adapter.is_file() and adapter.stat().st_size <= 10 * 1024 * 1024
    info = inspect_gguf(adapter)
    assert (info.architecture, info.file_type, info.adapter_type) == ("llama", "adapter", "lora")
    assert info.n_tensors == 30 * 7 * 2  # r=16 A and B for every linear layer of the 30 blocks
    card = (DATA / "MODEL_CARD.md").read_text(encoding="utf-8")
    for needed in ("Apache-2.0", "MIT", "smollm2-sdr.toml", "lora_r", "validation loss"):
        assert needed in card, needed


def test_it_is_the_default_and_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOD_DECOMPOSER_ADAPTER", raising=False)
    monkeypatch.delenv("DOD_DECOMPOSER_ADAPTER_MULTIHOP", raising=False)
    monkeypatch.delenv("DOD_DECOMPOSER_GGUF", raising=False)
    assert default_adapter() == DATA / DEFAULT_ADAPTER
    assert Path(default_decomposer_llm().lora_path or "") == DATA / DEFAULT_ADAPTER
    assert Path(Decomposer().llm.lora_path or "") == DATA / DEFAULT_ADAPTER
    # the math adapter is for math only: multihop has its own (MuSiQue), reading the untuned base (under the grammar)
    assert Decomposer(profile="reading").llm.lora_path is None
    assert not Decomposer(profile="reading")._free_first()
    assert Path(Decomposer(profile="multihop").llm.lora_path or "") == DATA / MULTIHOP_ADAPTER
    monkeypatch.setenv("DOD_DECOMPOSER_ADAPTER", "none")
    assert default_decomposer_llm().lora_path is None
    assert Decomposer().llm.lora_path is None


def test_each_profile_applies_its_own_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DOD_DECOMPOSER_ADAPTER", "DOD_DECOMPOSER_ADAPTER_MULTIHOP", "DOD_DECOMPOSER_GGUF"):
        monkeypatch.delenv(name, raising=False)
    assert decomposition.adapter_env("multihop") == "DOD_DECOMPOSER_ADAPTER_MULTIHOP"
    # a profile finds its shipped file by the table (here: reading pointed at the math adapter's file) ...
    monkeypatch.setitem(decomposition.DEFAULT_ADAPTERS, "reading", DEFAULT_ADAPTER)
    assert Path(Decomposer(profile="reading").llm.lora_path or "") == DATA / DEFAULT_ADAPTER
    assert default_adapter("multihop") == DATA / MULTIHOP_ADAPTER  # ... and multihop its own shipped file
    # ... or by its own variable, which leaves the other profiles alone
    monkeypatch.setenv("DOD_DECOMPOSER_ADAPTER_MULTIHOP", str(DATA / DEFAULT_ADAPTER))
    monkeypatch.setenv("DOD_DECOMPOSER_ADAPTER", "none")
    assert Path(Decomposer(profile="multihop").llm.lora_path or "") == DATA / DEFAULT_ADAPTER
    assert Decomposer().llm.lora_path is None
    # another base replaces the default: no adapter fits it
    monkeypatch.setenv("DOD_DECOMPOSER_GGUF", "smollm2-135m-instruct")
    assert Decomposer(profile="multihop").llm.lora_path is None
    assert Decomposer(profile="reading").llm.lora_path is None


def test_the_math_adapter_loads_merged_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "DOD_DECOMPOSER_ADAPTER",
        "DOD_DECOMPOSER_ADAPTER_MULTIHOP",
        "DOD_DECOMPOSER_GGUF",
        "DOD_DECOMPOSER_MERGE",
    ):
        monkeypatch.delenv(name, raising=False)
    assert decomposition.MERGED_PROFILES == {"math"}  # multihop merged: static MiniLM below issue 13's bar
    assert default_decomposer_llm().merge_lora is True
    assert default_decomposer_llm(merge_lora=False).merge_lora is False  # the caller's choice wins
    assert default_decomposer_llm(profile="multihop").merge_lora is False
    assert default_decomposer_llm(profile="reading").merge_lora is False  # no adapter, nothing to merge
    # the shipped file merges however it is named, relative path included; another adapter is not merged
    monkeypatch.chdir(DATA.parents[1])
    assert decomposition.default_merge("math", f"langchain_dod/data/{DEFAULT_ADAPTER}") is True
    other = tmp_path / "mine.gguf"
    other.write_bytes((DATA / DEFAULT_ADAPTER).read_bytes())
    assert decomposition.default_merge("math", other) is False
    monkeypatch.setenv("DOD_DECOMPOSER_ADAPTER", str(other))
    assert default_decomposer_llm().merge_lora is False
    # DOD_DECOMPOSER_MERGE decides for every default adapter; a value that is not yes/no is an error
    monkeypatch.setenv("DOD_DECOMPOSER_MERGE", "1")
    assert default_decomposer_llm().merge_lora is True and default_decomposer_llm(profile="multihop").merge_lora
    monkeypatch.delenv("DOD_DECOMPOSER_ADAPTER")
    monkeypatch.setenv("DOD_DECOMPOSER_MERGE", "0")
    assert default_decomposer_llm().merge_lora is False
    monkeypatch.setenv("DOD_DECOMPOSER_MERGE", "maybe")
    with pytest.raises(ValueError, match="DOD_DECOMPOSER_MERGE='maybe' is not a yes/no value"):
        default_decomposer_llm()


def test_decomposes_unseen_questions_freely_and_as_under_the_grammar(
    distilled: Decomposer, unseen_questions: list[str]
) -> None:
    results = distilled.batch(unseen_questions)
    # the learned skip: it plans some questions and leaves others to the solver (6 and 14 of these 20 when written)
    planned = sum(bool(r.subquestions) for r in results)
    assert 3 <= planned <= 17, planned
    free = [r for r in results if r.constrained is False]
    assert len(free) >= 18  # it writes the JSON format by itself, the empty plan included
    for r in results:
        assert len(r.subquestions) <= 3
        assert all(q.endswith("?") for q in r.subquestions)
    constrained = Decomposer(llm=distilled.llm, grammar="always")
    for question, result in list(zip(unseen_questions, results, strict=True))[:6]:
        if result.constrained is False:  # greedy: the grammar would not have changed a valid reply
            assert constrained.invoke(question).subquestions == result.subquestions


def test_async_matches_sync(distilled: Decomposer, unseen_questions: list[str]) -> None:
    sync = distilled.invoke(unseen_questions[0])
    async_ = asyncio.run(distilled.ainvoke(unseen_questions[0]))
    assert (async_.subquestions, async_.constrained, async_.raw) == (sync.subquestions, sync.constrained, sync.raw)


def test_an_invalid_free_reply_is_decoded_again_under_the_grammar(unseen_questions: list[str]) -> None:
    """The untuned base rambles without the grammar: ``fallback`` must catch that and still return JSON."""
    base = ChatGGUF(model="smollm2-135m-instruct")
    question = unseen_questions[1]
    free = base.invoke(Decomposer(llm=base).messages(question), max_tokens=40)
    with pytest.raises(json.JSONDecodeError):
        json.loads(free.content)  # precondition: this reply is not the format
    result = Decomposer(llm=base, grammar="fallback", max_tokens=40).invoke(question)
    only_grammar = Decomposer(llm=base, max_tokens=40).invoke(question)
    assert (
        result.constrained is True
        and json.loads(result.raw or "")["subquestions"] == json.loads(only_grammar.raw or "")["subquestions"]
    )
    assert result.subquestions == only_grammar.subquestions
    # both attempts are paid for and reported
    assert result.input_tokens == 2 * (only_grammar.input_tokens or 0)
    assert result.output_tokens == (only_grammar.output_tokens or 0) + free.usage_metadata["output_tokens"]
    assert Decomposer(llm=base)._free_first() is False  # untuned: the grammar from the start
