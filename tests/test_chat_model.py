"""``ChatGGUF`` beyond the standard suites: its own behaviour (usage, stop, grammar-constrained JSON, LoRA,
per-call overrides, timeout, KV-cache reuse), bad input that must fail clearly, and concurrent use.

Every test runs the real SmolLM2-135M GGUF through llama.cpp; the process-wide cache loads it once. Inputs
that reach llama.cpp and could crash it run in a child process, so a crash fails the test instead of
killing pytest.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import llama_cpp
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from pydantic import BaseModel, Field, ValidationError

from langchain_dod.chat_models import ChatGGUF, ContextWindowExceededError, ModelLoadError
from langchain_dod.gguf_file import GGUFError
from langchain_dod.models import ModelNotFoundError

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from fake_gguf import corrupt, truncated_copy, write_lora  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
SYSTEM = "You are a careful assistant who answers in one short sentence. " * 25  # ~300 tokens


@pytest.fixture(scope="module")
def llm() -> ChatGGUF:
    return ChatGGUF(model=MODEL, max_tokens=12).load()


class City(BaseModel):
    """A city and its country."""

    city: str = Field(description="name of the city", max_length=40)
    country: str = Field(description="name of the country", max_length=40)


# -- behaviour -------------------------------------------------------------------------------------------------


def test_greedy_invoke_is_reproducible_and_reports_usage(llm: ChatGGUF) -> None:
    messages = [HumanMessage("Name a fruit.")]
    first, second = llm.invoke(messages), llm.invoke(messages)
    assert isinstance(first, AIMessage) and first.content
    assert first.content == second.content  # temperature 0 is greedy, and the reused KV cache changes nothing
    usage = first.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == llm.get_num_tokens_from_messages(messages)
    assert 0 < usage["output_tokens"] <= 12
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert first.response_metadata["model_name"] == MODEL
    assert first.response_metadata["finish_reason"] in ("stop", "length")


def test_max_tokens_cut_is_reported_as_length(llm: ChatGGUF) -> None:
    reply = llm.invoke("Write a long story about a dragon.", max_tokens=3)
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.usage_metadata["output_tokens"] <= 3


def test_stream_yields_the_same_text_as_invoke(llm: ChatGGUF) -> None:
    prompt = "Name three colours."
    chunks = list(llm.stream(prompt))
    assert len(chunks) > 2  # token by token, not one block
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks) == llm.invoke(prompt).content
    assert chunks[-1].chunk_position == "last" and chunks[-1].usage_metadata is not None
    assert all(c.usage_metadata is None for c in chunks[:-1])


def test_stop_sequence_ends_the_reply(llm: ChatGGUF) -> None:
    prompt = "Count from one to ten."
    free = str(llm.invoke(prompt, max_tokens=16).content)
    stop = free[len(free) // 2 : len(free) // 2 + 2]  # any text the free reply contains, cut mid-token or not
    assert len(stop) == 2
    stopped = llm.invoke(prompt, max_tokens=16, stop=[stop])
    assert stopped.content == free[: free.index(stop)]
    assert stopped.response_metadata["finish_reason"] == "stop"
    # the same through the constructor's stop list
    assert ChatGGUF(model=MODEL, max_tokens=16, stop=[stop]).invoke(prompt).content == stopped.content


def test_sampling_with_a_seed_is_reproducible(llm: ChatGGUF) -> None:
    args = {"temperature": 1.0, "seed": 1234, "max_tokens": 10}
    assert llm.invoke("Say something.", **args).content == llm.invoke("Say something.", **args).content


def test_streaming_flag_sends_tokens_to_callbacks() -> None:
    class Collect(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            self.tokens.append(token)

    collect = Collect()
    reply = ChatGGUF(model=MODEL, max_tokens=6, streaming=True).invoke("Hi", config={"callbacks": [collect]})
    assert len(collect.tokens) > 1
    assert "".join(collect.tokens) == reply.content


def test_bind_json_schema_constrains_output(llm: ChatGGUF) -> None:
    schema = {
        "type": "object",
        "properties": {
            "subquestions": {
                "type": "array",
                "items": {"type": "string", "maxLength": 60},
                "minItems": 1,
                "maxItems": 3,
            }
        },
        "required": ["subquestions"],
    }
    reply = llm.bind(json_schema=schema, max_tokens=120, repeat_penalty=1.3).invoke(
        "Break 'How many legs do 3 cats and 2 birds have?' into sub-questions."
    )
    assert reply.response_metadata["finish_reason"] == "stop"
    data = json.loads(reply.content)
    assert list(data) == ["subquestions"]
    assert 1 <= len(data["subquestions"]) <= 3
    assert all(isinstance(q, str) and len(q) <= 60 for q in data["subquestions"])


def test_with_structured_output_returns_the_pydantic_object(llm: ChatGGUF) -> None:
    structured = ChatGGUF(model=MODEL, max_tokens=60, repeat_penalty=1.3).with_structured_output(City)
    city = structured.invoke("Which city is the capital of France?")
    assert isinstance(city, City)
    assert city.city and city.country


def test_structured_output_include_raw(llm: ChatGGUF) -> None:
    structured = ChatGGUF(model=MODEL, max_tokens=60, repeat_penalty=1.3).with_structured_output(City, include_raw=True)
    out = structured.invoke("Which city is the capital of Italy?")
    assert set(out) == {"raw", "parsed", "parsing_error"}
    assert isinstance(out["raw"], AIMessage) and isinstance(out["parsed"], City) and out["parsing_error"] is None


def test_structured_output_cut_by_max_tokens_says_so() -> None:
    tight = ChatGGUF(model=MODEL, max_tokens=4)
    with pytest.raises(OutputParserException, match="cut off by max_tokens.*Raise max_tokens"):
        tight.with_structured_output(City).invoke("Capital of Spain?")
    out = tight.with_structured_output(City, include_raw=True).invoke("Capital of Spain?")
    assert out["parsed"] is None and isinstance(out["parsing_error"], OutputParserException)


def test_json_mode_gives_a_json_object(llm: ChatGGUF) -> None:
    structured = ChatGGUF(model=MODEL, max_tokens=40, repeat_penalty=1.3).with_structured_output(method="json_mode")
    assert isinstance(structured.invoke('Repeat this JSON exactly: {"ok": true}'), dict)


def test_model_override_per_call(llm: ChatGGUF) -> None:
    reply = llm.invoke("Hi", model="smollm2", max_tokens=2)
    assert reply.response_metadata["model_name"] == "smollm2"
    assert llm._get_ls_params(model="smollm2")["ls_model_name"] == "smollm2"


def test_timeout_stops_a_long_call() -> None:
    with pytest.raises(TimeoutError, match="timeout=1e-09s"):
        ChatGGUF(model=MODEL, max_tokens=50, timeout=1e-9).invoke("Tell me a story.")
    # the model is usable again afterwards (the lock was released, the context is consistent)
    assert ChatGGUF(model=MODEL, max_tokens=3).invoke("Hi").content


def test_response_cache_tells_settings_apart() -> None:
    """LangChain's response cache keys on ``_identifying_params``: settings that change the output must be in it."""
    from langchain_core.caches import InMemoryCache

    cache = InMemoryCache()
    first = ChatGGUF(model=MODEL, max_tokens=4, cache=cache).invoke("Hi")
    assert ChatGGUF(model=MODEL, max_tokens=4, cache=cache).invoke("Hi").content == first.content  # a hit
    ChatGGUF(model=MODEL, max_tokens=4, cache=cache, repeat_penalty=1.3).invoke("Hi")
    ChatGGUF(model=MODEL, max_tokens=4, cache=cache, stop=["!"]).invoke("Hi")
    assert len(cache._cache) == 3


def test_load_seconds_is_zero_for_an_instance_that_reused_the_loaded_model() -> None:
    # n_ctx=320 is used by no other test, so the first instance here really loads (the cache is per process)
    first = ChatGGUF(model=MODEL, n_ctx=320).load()
    second = ChatGGUF(model=MODEL, n_ctx=320).load()
    assert first.load_seconds > 0.0 and second.load_seconds == 0.0
    assert first.load_seconds > 0.0  # asking again does not change it


def test_token_counting(llm: ChatGGUF) -> None:
    assert llm.get_num_tokens("hello world") == 2
    one = llm.get_num_tokens_from_messages([SystemMessage("Be brief."), HumanMessage("hi")])
    two = llm.get_num_tokens_from_messages([SystemMessage("Be brief."), HumanMessage("hi there")])
    assert two == one + 1
    assert one > llm.get_num_tokens("Be brief.") + llm.get_num_tokens("hi")  # role markers from the template


# -- LoRA adapters -----------------------------------------------------------------------------------------------


def test_lora_that_changes_nothing_gives_the_base_output(llm: ChatGGUF, tmp_path: Path) -> None:
    """An adapter with B = 0 is a no-op: llama.cpp really applies it, and greedy output is unchanged."""
    adapter = write_lora(tmp_path / "zero.gguf", layers=tuple(range(30)), b_scale=0.0)
    with_lora = ChatGGUF(model=MODEL, max_tokens=12, lora_path=str(adapter))
    assert with_lora.invoke("Name a fruit.").content == llm.invoke("Name a fruit.").content


def test_lora_that_changes_weights_changes_the_output(llm: ChatGGUF, tmp_path: Path) -> None:
    adapter = write_lora(tmp_path / "noisy.gguf", layers=tuple(range(30)), b_scale=0.5, seed=1)
    with_lora = ChatGGUF(model=MODEL, max_tokens=12, lora_path=str(adapter))
    assert with_lora.invoke("Name a fruit.").content != llm.invoke("Name a fruit.").content


# -- KV-cache reuse for a repeated prefix ---------------------------------------------------------------------------


def test_repeated_system_prompt_reuses_the_kv_cache(llm: ChatGGUF) -> None:
    """Observed through llama.cpp's own counters, not through time: the second call with the same ~300-token
    system prompt decodes only the part after it, and usage reports the reused part as ``cache_read``."""
    loaded = llm._loaded()
    ctx = loaded.llm._ctx.ctx

    def decoded() -> int:
        perf = llama_cpp.llama_perf_context(ctx)
        return perf.n_p_eval + perf.n_eval

    llm.invoke("Unrelated warm-up.", max_tokens=1)
    before = decoded()
    cold = llm.invoke([SystemMessage(SYSTEM), HumanMessage("What is 2 + 2?")], max_tokens=1)
    cold_decoded = decoded() - before
    before = decoded()
    warm = llm.invoke([SystemMessage(SYSTEM), HumanMessage("What colour is the sky?")], max_tokens=1)
    warm_decoded = decoded() - before

    n_system = llm.get_num_tokens_from_messages([SystemMessage(SYSTEM)])
    assert cold.usage_metadata["input_tokens"] > 250
    assert cold.usage_metadata["input_token_details"]["cache_read"] < 10  # only the shared BOS/role marker
    assert warm.usage_metadata["input_token_details"]["cache_read"] >= n_system - 5
    for reply, seen in ((cold, cold_decoded), (warm, warm_decoded)):
        # what llama.cpp decoded is what usage says was not read from the cache (its counter may miss one)
        expected = reply.usage_metadata["input_tokens"] - reply.usage_metadata["input_token_details"]["cache_read"]
        assert expected - 1 <= seen <= expected
    assert warm_decoded < cold_decoded / 5


# -- bad input -------------------------------------------------------------------------------------------------------


def test_empty_message_list(llm: ChatGGUF) -> None:
    with pytest.raises(ValueError, match="empty message list"):
        llm.invoke([])


def test_prompt_longer_than_the_context_names_the_limit() -> None:
    small = ChatGGUF(model=MODEL, n_ctx=256, max_tokens=8)
    with pytest.raises(
        ContextWindowExceededError,
        match=r"is \d+ tokens but the context window .* n_ctx=256.*"
        r"larger n_ctx \(its GGUF allows up to 8192\)",
    ):
        small.invoke("word " * 400)


def test_prompt_that_leaves_no_room_to_answer() -> None:
    small = ChatGGUF(model=MODEL, n_ctx=256, max_tokens=64)
    overhead = small.get_num_tokens_from_messages([HumanMessage("word")]) - 1
    prompt = "word " * (256 - 8 - overhead)  # fits, but leaves 8 tokens: fewer than 16 and than max_tokens
    assert 256 - 16 < small.get_num_tokens_from_messages([HumanMessage(prompt)]) < 256
    with pytest.raises(ContextWindowExceededError, match="leaves no room to answer"):
        small.invoke(prompt)


def test_unknown_constructor_argument_is_named() -> None:
    with pytest.raises(ValidationError, match=r"unknown argument\(s\) \['max_token'\].*model_kwargs"):
        ChatGGUF(model=MODEL, max_token=5)


def test_unknown_call_argument_is_named(llm: ChatGGUF) -> None:
    with pytest.raises(TypeError, match=r"unsupported generation arguments: \['frequency_penaltyy'\]"):
        llm.invoke("Hi", frequency_penaltyy=1.0)


@pytest.mark.parametrize(
    "schema",
    [
        42,
        "not a schema",
        {"type": "object", "properties": {"a": {"type": "frobnicate"}}},
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}},
    ],
)
def test_invalid_schema_fails_at_bind_time(llm: ChatGGUF, schema: Any) -> None:
    with pytest.raises(ValueError, match="(Invalid schema|cannot build a grammar)"):
        llm.with_structured_output(schema)


def test_structured_output_without_schema_or_with_bad_arguments(llm: ChatGGUF) -> None:
    with pytest.raises(ValueError, match="needs a schema"):
        llm.with_structured_output(None)
    with pytest.raises(ValueError, match="method must be"):
        llm.with_structured_output(City, method="xml")
    with pytest.raises(ValueError, match="Unsupported arguments"):
        llm.with_structured_output(City, tools=[])


def test_bound_json_schema_must_be_a_dict(llm: ChatGGUF) -> None:
    with pytest.raises(ValueError, match="json_schema must be a dict"):
        llm.bind(json_schema="{}").invoke("Hi")


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="No such model file.*nowhere.gguf"):
        ChatGGUF(model=str(tmp_path / "nowhere.gguf")).invoke("Hi")


def test_missing_adapter_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="LoRA adapter not found: .*gone.gguf"):
        ChatGGUF(model=MODEL, lora_path=str(tmp_path / "gone.gguf")).invoke("Hi")


#: Each case runs in one child process that loads the file through ChatGGUF and prints what was raised.
CHILD = textwrap.dedent(
    """
    import json, sys
    from langchain_dod.chat_models import ChatGGUF
    kwargs = json.loads(sys.argv[1])
    try:
        ChatGGUF(max_tokens=2, **kwargs).invoke("Hi")
    except Exception as err:
        print(json.dumps({"type": type(err).__name__, "message": str(err)}))
    else:
        print(json.dumps({"type": None, "message": "no error"}))
    """
)


def _in_child(**kwargs: Any) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, f"child crashed with {proc.returncode}: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _bad_files(smollm2_path: Path, tmp: Path) -> dict[str, tuple[dict[str, Any], str, str]]:
    """name -> (ChatGGUF kwargs, expected exception type, regex its message must match)."""
    size = smollm2_path.stat().st_size
    arch_at = smollm2_path.read_bytes()[:4096].index(b"llama")  # value of general.architecture
    text = tmp / "notes.gguf"
    text.write_text("these are not weights\n" * 10)
    return {
        "not GGUF": ({"model": str(text)}, "GGUFError", "is not a GGUF file"),
        "truncated": (
            {"model": str(truncated_copy(smollm2_path, tmp / "t.gguf", size - 4096))},
            "GGUFError",
            "is truncated",
        ),
        "corrupted header": (
            {"model": str(corrupt(smollm2_path, tmp / "h.gguf", 4, b"\x09\x00\x00\x00"))},
            "GGUFError",
            "unsupported GGUF version 9",
        ),
        # parses as GGUF, so llama.cpp itself gets it: it must come back as an exception, not a crash
        "unknown architecture": (
            {"model": str(corrupt(smollm2_path, tmp / "arch.gguf", arch_at, b"llamx"))},
            "ModelLoadError",
            "llama.cpp could not load the model",
        ),
        "adapter as model": (
            {"model": str(write_lora(tmp / "lora.gguf"))},
            "ModelLoadError",
            "is a LoRA adapter, not a model. Pass it as lora_path=",
        ),
        "model as adapter": (
            {"model": MODEL, "lora_path": str(smollm2_path)},
            "ModelLoadError",
            "is not a GGUF LoRA adapter \\(general.type='model'",
        ),
        "adapter for another architecture": (
            {"model": MODEL, "lora_path": str(write_lora(tmp / "qwen.gguf", arch="qwen2"))},
            "ModelLoadError",
            "made for a 'qwen2' model but the base .* is 'llama'",
        ),
        "adapter of other widths": (
            {"model": MODEL, "lora_path": str(write_lora(tmp / "w.gguf", targets={"attn_q": (896, 896)}))},
            "ModelLoadError",
            "does not fit base .*maps 896 -> 896 but the base maps 576 -> 576",
        ),
        "adapter of other output width": (
            {"model": MODEL, "lora_path": str(write_lora(tmp / "o.gguf", targets={"attn_k": (576, 576)}))},
            "ModelLoadError",
            "does not fit base .*attn_k.weight it maps 576 -> 576 but the base maps 576 -> 192",
        ),
        "adapter for missing layers": (
            {"model": MODEL, "lora_path": str(write_lora(tmp / "deep.gguf", layers=(40,)))},
            "ModelLoadError",
            "targets blk.40.attn_q.weight, which the base .* does not have",
        ),
        "half an adapter": (
            {"model": MODEL, "lora_path": str(write_lora(tmp / "half.gguf", only_a=True))},
            "ModelLoadError",
            "only half of the LoRA pair",
        ),
        "adapter with mismatched ranks": (
            {"model": MODEL, "lora_path": str(write_lora(tmp / "r.gguf", rank=4, b_rank=8))},
            "ModelLoadError",
            "lora_a has rank 4 but .lora_b has rank 8",
        ),
    }


BAD_CASES = [
    "not GGUF",
    "truncated",
    "corrupted header",
    "unknown architecture",
    "adapter as model",
    "model as adapter",
    "adapter for another architecture",
    "adapter of other widths",
    "adapter of other output width",
    "adapter for missing layers",
    "half an adapter",
    "adapter with mismatched ranks",
]


@pytest.fixture(scope="module")
def bad_files(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _bad_files(smollm2_path, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", [c for c in BAD_CASES if c != "unknown architecture"])
def test_bad_file_is_a_clear_error_in_process(bad_files: dict[str, Any], case: str) -> None:
    """Our checks stop these before llama.cpp sees them (the one that reaches llama.cpp runs only in a child)."""
    kwargs, kind, pattern = bad_files[case]
    errors = {"GGUFError": GGUFError, "ModelLoadError": ModelLoadError}
    with pytest.raises(errors[kind], match=pattern):
        ChatGGUF(max_tokens=2, **kwargs).invoke("Hi")


@pytest.mark.parametrize("case", ["unknown architecture", "truncated", "adapter of other widths"])
def test_bad_file_never_crashes_the_process(bad_files: dict[str, Any], case: str) -> None:
    kwargs, kind, pattern = bad_files[case]
    result = _in_child(**kwargs)
    assert result["type"] == kind, result
    assert re.search(pattern, result["message"]), result["message"]


def test_bad_files_are_subclasses_users_can_catch() -> None:
    assert issubclass(GGUFError, ValueError)
    assert issubclass(ModelNotFoundError, FileNotFoundError)
    assert issubclass(ContextWindowExceededError, ValueError)


# -- concurrency -----------------------------------------------------------------------------------------------------

ANSWER = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
QUESTIONS = [f"What is {a} plus {b}? Reply as JSON." for a, b in zip(range(1, 17), range(30, 14, -1), strict=True)]


def _check(replies: list[Any], questions: list[str], llm: ChatGGUF) -> None:
    """Every reply is complete, parses against the schema, and belongs to its own prompt (token counts differ
    with the numbers' lengths, so a reply mixed up with another call's would show)."""
    assert len(replies) == len(questions)
    for reply, question in zip(replies, questions, strict=True):
        assert isinstance(reply, AIMessage)
        assert reply.response_metadata["finish_reason"] == "stop", reply
        assert isinstance(json.loads(reply.content)["n"], int)
        assert reply.usage_metadata["input_tokens"] == llm.get_num_tokens_from_messages([HumanMessage(question)])


def test_batch_16_threads(llm: ChatGGUF) -> None:
    bound = llm.bind(json_schema=ANSWER, max_tokens=24)
    _check(bound.batch(QUESTIONS, config={"max_concurrency": 8}), QUESTIONS, llm)


async def test_abatch_16(llm: ChatGGUF) -> None:
    bound = llm.bind(json_schema=ANSWER, max_tokens=24)
    _check(await bound.abatch(QUESTIONS, config={"max_concurrency": 16}), QUESTIONS, llm)


async def test_gather_ainvoke_and_astream_together(llm: ChatGGUF) -> None:
    bound = llm.bind(json_schema=ANSWER, max_tokens=24)

    async def streamed(question: str) -> AIMessage:
        full = None
        async for chunk in bound.astream(question):
            full = chunk if full is None else full + chunk
        assert full is not None and full.chunk_position == "last"
        return AIMessage(
            content=full.content, usage_metadata=full.usage_metadata, response_metadata=full.response_metadata
        )

    calls = [bound.ainvoke(q) if i % 2 else streamed(q) for i, q in enumerate(QUESTIONS)]
    replies = await asyncio.wait_for(asyncio.gather(*calls), timeout=600)  # a guard against a hang only
    _check(list(replies), QUESTIONS, llm)


async def test_abandoned_astream_frees_the_model(llm: ChatGGUF) -> None:
    """Leaving an astream early stops generation and releases the lock; the next calls run normally."""
    stream = llm.astream("Write a long story about the sea.", max_tokens=200)
    got = 0
    async for _ in stream:
        got += 1
        if got == 2:
            break
    await stream.aclose()
    replies = await asyncio.wait_for(asyncio.gather(*(llm.ainvoke("Hi", max_tokens=3) for _ in range(4))), 300)
    assert all(r.content for r in replies)
