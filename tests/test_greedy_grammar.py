"""Greedy grammar decoding that checks one token per step gives exactly what the full grammar sampler gives.

``engine.completion_args`` hands greedy, unpenalised constrained calls to ``_GreedyGrammar`` (a logits processor
that checks only the highest-scoring token against the grammar) instead of llama-cpp-python's grammar sampler
(which checks the whole vocabulary at every step). Each case here decodes the same prompt both ways with the real
SmolLM2-135M GGUF and compares the text and the finish reason; the prompts include ones the free model answers
in prose, so the grammar has to reject its choice and the full-vocabulary path runs too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from langchain_dod import engine
from langchain_dod.decomposition import subquestion_schema
from langchain_dod.prompts import decomposer_messages

MODEL = "smollm2-135m-instruct"

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "country": {"type": "string", "maxLength": 30},
        "population": {"type": "integer"},
    },
    "required": ["city", "country", "population"],
}
MOOD = {"type": "object", "properties": {"mood": {"enum": ["calm", "stormy", "grey"]}}, "required": ["mood"]}
NUMBERS = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 4}


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


CASES = [
    # the base model is not trained to write this JSON: its first greedy tokens are prose the grammar rejects
    ("decomposer", decomposer_messages("Tom has 3 boxes of 12 pens and gives away 7. How many are left?"), None),
    ("prose", _user("Write a short poem about the sea. Do not use JSON."), CITY),
    ("city", _user("Name a big city in France as JSON with its country and population."), CITY),
    ("enum", _user("How does the sea look today? Answer in a full sentence."), MOOD),
    ("numbers", _user("List a few prime numbers, separated by commas."), NUMBERS),
]


@pytest.fixture(scope="module")
def loaded() -> Any:
    return engine.load(MODEL, None, engine.llama_params(n_threads=1))[0]


def _decode(loaded: Any, messages: list[dict[str, Any]], schema: dict[str, Any], *, full: bool, **kw: Any) -> Any:
    tokens, stops = engine.render(loaded, messages)
    args = engine.completion_args(loaded, tokens, stops, model=MODEL, json_schema=schema, **kw)
    if full:  # what completion_args built before: llama-cpp-python's grammar sampler over the whole vocabulary
        args["grammar"] = engine._grammar(schema)
        args["logits_processor"] = args["logits_processor"][:1]
    pieces, finish = [], None
    for piece, reason in engine.run(loaded, args, model=MODEL):
        pieces.append(piece)
        finish = reason or finish
    return "".join(pieces), finish, args["logits_processor"][1:]


@pytest.mark.parametrize(("name", "messages", "schema"), CASES, ids=[c[0] for c in CASES])
def test_one_token_check_gives_the_full_grammar_output(
    loaded: Any, name: str, messages: list[dict[str, Any]], schema: dict[str, Any] | None
) -> None:
    schema = schema or subquestion_schema()
    full_text, full_finish, _ = _decode(loaded, messages, schema, full=True, max_tokens=48)
    text, finish, (greedy,) = _decode(loaded, messages, schema, full=False, max_tokens=48)
    assert isinstance(greedy, engine._GreedyGrammar)
    assert (text, finish) == (full_text, full_finish)
    assert greedy.steps >= 1
    if finish == "stop":  # a reply the grammar let end is complete JSON
        json.loads(text)


def test_rejected_tokens_take_the_full_vocabulary_path(loaded: Any) -> None:
    """The prose case really exercises the fallback: otherwise the comparison above would prove little."""
    _, _, (greedy,) = _decode(loaded, CASES[1][1], CITY, full=False, max_tokens=24)
    assert greedy.rejected >= 1
    assert greedy.rejected < greedy.steps  # and most steps are still checked by one token


def test_a_short_schema_stops_where_the_grammar_ends(loaded: Any) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    for full in (True, False):
        text, finish, _ = _decode(loaded, _user("What is 2 plus 3? Reply as JSON."), schema, full=full, max_tokens=40)
        assert finish == "stop", text
        assert isinstance(json.loads(text)["n"], int)


def test_the_same_arguments_run_twice_give_the_same_reply(loaded: Any) -> None:
    """A second run of one argument set starts the grammar over rather than continuing the first reply's state."""
    tokens, stops = engine.render(loaded, CASES[2][1])
    args = engine.completion_args(loaded, tokens, stops, model=MODEL, json_schema=CITY, max_tokens=32)
    first = "".join(p for p, _ in engine.run(loaded, args, model=MODEL))
    second = "".join(p for p, _ in engine.run(loaded, args, model=MODEL))
    assert first == second


@pytest.mark.parametrize("kw", [{"temperature": 0.7, "seed": 1}, {"repeat_penalty": 1.3}])
def test_sampling_or_penalties_keep_the_full_grammar(loaded: Any, kw: dict[str, Any]) -> None:
    """The one-token check is exact only when llama.cpp picks the argmax of the processed scores."""
    tokens, stops = engine.render(loaded, CASES[2][1])
    args = engine.completion_args(loaded, tokens, stops, model=MODEL, json_schema=CITY, **kw)
    assert args["grammar"] is not None
    assert len(args["logits_processor"]) == 1


def test_a_grammar_llama_cpp_cannot_parse_is_a_clear_error(loaded: Any) -> None:
    with pytest.raises(ValueError, match="cannot parse the grammar"):
        engine._GreedyGrammar(loaded.llm, "root ::= (", 0)


def test_the_greedy_path_parses_the_grammar_once(loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Greedy calls hand the GBNF to llama.cpp's sampler only; building a LlamaGrammar too cost ~10-30 ms a call."""
    import llama_cpp

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("LlamaGrammar built on the greedy path")

    monkeypatch.setattr(llama_cpp.LlamaGrammar, "from_string", refuse)
    tokens, stops = engine.render(loaded, CASES[2][1])
    args = engine.completion_args(loaded, tokens, stops, model=MODEL, json_schema=CITY, max_tokens=32)
    assert args["grammar"] is None and isinstance(args["logits_processor"][1], engine._GreedyGrammar)
    assert json.loads("".join(p for p, _ in engine.run(loaded, args, model=MODEL)))["city"]


def test_an_unusable_schema_on_the_greedy_path_is_a_clear_error(loaded: Any) -> None:
    tokens, stops = engine.render(loaded, CASES[2][1])
    with pytest.raises(ValueError, match="cannot build a grammar"):
        engine.completion_args(loaded, tokens, stops, model=MODEL, json_schema={"type": "frobnicate"})
    with pytest.raises(ValueError, match="json_schema must be a dict"):
        engine.completion_args(loaded, tokens, stops, model=MODEL, json_schema="{}")  # type: ignore[arg-type]
