"""The shipped multi-hop adapter: the file, its model card, and what it writes for questions it never saw.

Trained on MuSiQue's gold decompositions (none of the 292 evaluation questions); checked here on made-up
questions. Real llama.cpp, real adapter, greedy decoding.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_dod import Decomposer, DecomposingRetriever
from langchain_dod.decomposition import DEFAULT_ADAPTERS
from langchain_dod.gguf_file import inspect_gguf

DATA = Path(__file__).resolve().parents[1] / "langchain_dod" / "data"
ADAPTER = DATA / DEFAULT_ADAPTERS["multihop"]


@pytest.fixture(scope="module")
def multihop(monkeypatch_module: pytest.MonkeyPatch) -> Decomposer:
    return Decomposer(profile="multihop", max_subquestions=4)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        for name in ("DOD_DECOMPOSER_ADAPTER_MULTIHOP", "DOD_DECOMPOSER_GGUF"):
            mp.delenv(name, raising=False)
        yield mp


def test_adapter_ships_small_valid_and_with_a_model_card() -> None:
    assert ADAPTER.is_file() and ADAPTER.stat().st_size <= 10 * 1024 * 1024
    info = inspect_gguf(ADAPTER)
    assert (info.architecture, info.file_type, info.adapter_type) == ("llama", "adapter", "lora")
    assert info.n_tensors == 30 * 7 * 2  # r=16 A and B for every linear layer of the 30 blocks
    card = (DATA / "MODEL_CARD_MULTIHOP.md").read_text(encoding="utf-8")
    for needed in ("CC BY 4.0", "Apache-2.0", "smollm2-multihop.toml", "dev_eval292", "recall@5", "validation loss"):
        assert needed in card, needed


def test_it_is_the_default_of_the_multihop_profile_only(multihop: Decomposer) -> None:
    assert Path(multihop.llm.lora_path or "") == ADAPTER
    assert Path(DecomposingRetriever.model_fields["decomposer"].default_factory().llm.lora_path or "") == ADAPTER
    assert Path(Decomposer().llm.lora_path or "").name != ADAPTER.name  # math keeps its own


@pytest.mark.parametrize(
    ("question", "subject"),
    [
        ("Where was the designer of the Varnholt Bridge born?", "Varnholt Bridge"),
        ("What river flows through the city where the author of Blue Fields was born?", "Blue Fields"),
    ],
)
def test_a_bridge_question_becomes_steps_that_refer_back(multihop: Decomposer, question: str, subject: str) -> None:
    steps = multihop.invoke(question).subquestions
    assert 2 <= len(steps) <= 4, steps
    assert subject.lower() in steps[0].lower(), steps  # the first hop asks about the named subject
    assert all(s.endswith("?") for s in steps), steps
    # a later step builds on an earlier answer: MuSiQue's "#N", which the iterative retriever fills in
    assert any("#" in s for s in steps[1:]), steps
