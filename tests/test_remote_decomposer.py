"""Decomposer against llama-cpp-python's OpenAI-compatible server running the same SmolLM2 GGUF.

The server is a real subprocess on a free port, started once for this module and always stopped. The remote
decomposition must be JSON that obeys the sub-question schema (llama.cpp enforces it with a grammar from
``response_format={"type": "json_object", "schema": ...}``), and, both sides greedy with the same grammar, it
must equal what the in-process ChatGGUF decomposer writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip(
    "llama_cpp.server.app", reason="needs llama-cpp-python[server] (pip install 'langchain-dod[server]')"
)
pytest.importorskip("langchain_openai", reason="needs langchain-openai")

from langchain_openai import ChatOpenAI  # noqa: E402

from benchmarks.bench_concurrency import llama_cpp_python_server  # noqa: E402
from langchain_dod import ChatGGUF, Decomposer  # noqa: E402
from langchain_dod.decomposer import DecompositionError, subquestion_schema  # noqa: E402

QUESTIONS = [
    "In which country was the architect of the Sydney Opera House born?",
    "What currency is used in the country where the Petronas Towers stand?",
]


@pytest.fixture(scope="module")
def server_url(smollm2_path: Path) -> Iterator[str]:
    """``python -m llama_cpp.server`` on a free port, as the concurrency benchmark starts it; stopped afterwards."""
    with llama_cpp_python_server(smollm2_path, threads=1, n_ctx=2048) as url:
        yield url


def remote_decomposer(url: str) -> Decomposer:
    # greedy like ChatGGUF; the server's own default repeat_penalty is 1.1, ChatGGUF's is 1.0
    llm = ChatOpenAI(
        base_url=url,
        api_key="x",
        model="smollm2",
        temperature=0,
        timeout=120,
        max_retries=0,
        extra_body={"repeat_penalty": 1.0},
    )
    return Decomposer(llm=llm, profile="multihop", max_tokens=96)


def test_remote_decomposition_is_schema_json_and_matches_local(server_url: str, smollm2_path: Path) -> None:
    remote = remote_decomposer(server_url).invoke(QUESTIONS[0])
    reply = json.loads(remote.raw)  # the grammar makes the whole reply one JSON object
    assert set(reply) == {"subquestions"} and isinstance(reply["subquestions"], list)
    assert len(reply["subquestions"]) <= subquestion_schema()["properties"]["subquestions"]["maxItems"]
    assert remote.model == "smollm2"
    assert remote.input_tokens and remote.input_tokens > 50  # the system prompt alone is longer
    assert remote.output_tokens and remote.output_tokens <= 96
    local = Decomposer(
        llm=ChatGGUF(model=str(smollm2_path), n_ctx=2048, n_threads=1), profile="multihop", max_tokens=96
    )
    assert remote.subquestions == local.invoke(QUESTIONS[0]).subquestions


async def test_remote_decomposer_async_and_concurrent(server_url: str) -> None:
    decomposer = remote_decomposer(server_url)
    results = await decomposer.abatch(QUESTIONS)
    assert len(results) == len(QUESTIONS)
    for result in results:
        assert isinstance(json.loads(result.raw)["subquestions"], list)
    # the same greedy request gives the same reply however it is sent
    assert results[0].subquestions == (await decomposer.ainvoke(QUESTIONS[0])).subquestions


def test_reply_cut_off_by_max_tokens_keeps_complete_items(server_url: str, smollm2_path: Path) -> None:
    """A reply that hits max_tokens mid-list is read up to its last complete sub-question; one cut before its first
    sub-question is an error, never an empty plan (which would mean "answer directly")."""
    full = remote_decomposer(server_url).invoke(QUESTIONS[0])
    assert full.raw and len(full.subquestions) >= 2
    with pytest.raises(DecompositionError, match="cut off by max_tokens=12"):
        Decomposer(llm=remote_decomposer(server_url).llm, profile="multihop", max_tokens=12).invoke(QUESTIONS[0])
    first = full.raw[: full.raw.index(json.dumps(full.subquestions[0])) + len(json.dumps(full.subquestions[0]))]
    limit = ChatGGUF(model=str(smollm2_path)).get_num_tokens(first) + 2  # the first item and a little more
    short = Decomposer(llm=remote_decomposer(server_url).llm, profile="multihop", max_tokens=limit).invoke(QUESTIONS[0])
    assert short.output_tokens == limit
    assert short.raw and short.raw in full.raw  # greedy: the cut reply is a prefix of the full one
    assert 1 <= len(short.subquestions) < len(full.subquestions)
    assert short.subquestions == full.subquestions[: len(short.subquestions)]


def test_forced_json_object_mode_on_any_base_url(server_url: str) -> None:
    """``structured_output="json_object"`` takes the same path even when the URL looks like OpenAI's."""
    llm = ChatOpenAI(base_url=server_url, api_key="x", model="smollm2", temperature=0, max_retries=0)
    decomposer = Decomposer(llm=llm, profile="multihop", structured_output="json_object", max_tokens=96)
    assert isinstance(json.loads(decomposer.invoke(QUESTIONS[1]).raw)["subquestions"], list)


def test_path_chosen_per_endpoint() -> None:
    """Pick the request shape from the endpoint (no network needed).

    A local server gets json_object + schema (and max_tokens in extra_body); OpenAI's own API gets
    with_structured_output, which needs the schema's title (without it ChatOpenAI refused and the decomposer
    silently fell back to parsing free text).
    """
    local = ChatOpenAI(base_url="http://127.0.0.1:9/v1", api_key="x", model="m", extra_body={"repeat_penalty": 1.0})
    runnable, how = Decomposer(llm=local, max_tokens=77)._bound()
    assert how == "grammar"
    body = runnable.kwargs["extra_body"]
    assert body["response_format"]["type"] == "json_object"
    assert body["response_format"]["schema"]["required"] == ["subquestions"]
    assert body["repeat_penalty"] == 1.0 and body["max_tokens"] == 77
    hosted = ChatOpenAI(api_key="x", model="gpt-4o-mini")
    assert Decomposer(llm=hosted)._bound()[1] == "structured"
    assert Decomposer(llm=hosted, structured_output="never")._bound()[1] == "text"
