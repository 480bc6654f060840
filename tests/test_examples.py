"""Smoke tests: every example in examples/ runs offline, end to end, with small parameters."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMOKE_ARGS: dict[str, list[str]] = {  # examples whose main(argv) is called in-process, with small parameters
    # one llama.cpp thread: far faster than two on a CPU shared with other jobs, barely slower on an idle one
    "rag_multihop.py": ["--limit", "1", "--k", "1", "3", "--threads", "1"],
    "langgraph_fanout.py": ["--max-tokens", "16", "--threads", "1"],
}


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{Path(name).stem}", EXAMPLES / name)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # LangGraph resolves the state's type hints through sys.modules
    spec.loader.exec_module(module)
    return module


def test_corpus_and_questions_are_consistent() -> None:
    rag = load("rag_multihop.py")
    corpus = rag.load_corpus()
    questions = rag.load_questions(corpus=corpus)  # raises when a gold id is missing
    assert 40 <= len(corpus) <= 80 and len({d.id for d in corpus}) == len(corpus)
    assert 20 <= len(questions) <= 30
    assert all(len(q["gold"]) == 2 for q in questions)


def test_bad_gold_id_is_reported(tmp_path: Path) -> None:
    rag = load("rag_multihop.py")
    bad = tmp_path / "q.jsonl"
    bad.write_text(json.dumps({"id": "x1", "question": "?", "gold": ["nope"], "answer": ""}) + "\n")
    with pytest.raises(ValueError, match="not in the corpus"):
        rag.load_questions(bad, corpus=rag.load_corpus())


def test_minilm_embeddings_rank_related_text_higher() -> None:
    rag = load("rag_multihop.py")
    emb = rag.minilm_embeddings()
    assert type(emb).__name__ == "HuggingFaceEmbeddings"  # the ecosystem's wrapper, not one of ours
    query, related, unrelated = emb.embed_documents(
        [
            "Where was Beethoven born?",
            "Ludwig van Beethoven was born in Bonn.",
            "Ganymede is a moon of Jupiter.",
        ]
    )
    dot = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    assert len(query) == 384
    assert dot(query, query) == pytest.approx(1.0, abs=1e-4)  # normalised
    assert dot(query, related) > dot(query, unrelated) + 0.2


def test_rag_multihop_smoke(tmp_path: Path) -> None:
    rag = load("rag_multihop.py")
    result = rag.main([*SMOKE_ARGS["rag_multihop.py"], "--out", str(tmp_path / "rag")])
    assert [(e["retriever"], e["method"]) for e in result["summary"]] == [
        (r, m) for r in ("bm25", "minilm") for m in rag.METHODS
    ]
    for entry in result["summary"]:
        assert entry["questions"] == 1
        assert 0.0 <= entry["recall@1"] <= entry["recall@3"] <= 1.0
    row = result["rows"][0]
    assert len(row["dod"]["ids"]) == 3 and len(set(row["dod"]["ids"])) == 3
    assert len(row["dod_iterative"]["ids"]) == 3 and len(set(row["dod_iterative"]["ids"])) == 3
    assert result["meta"]["decomposer"].endswith("+smollm2-135m-multihop-lora.gguf")  # the shipped adapter
    saved = json.loads((tmp_path / "rag.json").read_text())
    assert saved["summary"] == result["summary"]
    assert "| bm25 | dod |" in (tmp_path / "rag.md").read_text()


def test_langgraph_fanout_smoke() -> None:
    fanout = load("langgraph_fanout.py")
    state = fanout.main(SMOKE_ARGS["langgraph_fanout.py"])
    # one branch per sub-question (or one for the question itself when there are none)
    assert len(state["answers"]) == max(1, len(state["subquestions"]))
    assert sorted(a["index"] for a in state["answers"]) == list(range(len(state["answers"])))
    assert all(a["passages"] and isinstance(a["answer"], str) for a in state["answers"])
    assert isinstance(state["solution"], str) and state["solution"].strip()


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in EXAMPLES.glob("*.py") if p.name not in SMOKE_ARGS and not p.name.startswith("_")),
)
def test_other_examples_run(name: str) -> None:
    """Examples without an entry in SMOKE_ARGS run as scripts with their defaults."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
