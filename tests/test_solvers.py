"""SPEC strings: the one parser (``parse_spec``) and the one factory (``load_chat_model``) every command uses."""

from __future__ import annotations

import pytest

from langchain_dod import ChatGGUF
from langchain_dod.solvers import Spec, is_local_spec, load_chat_model, parse_spec, spec_label


@pytest.mark.parametrize(
    ("text", "allow_path", "expected"),
    [
        ("openai:gpt-4o-mini", False, Spec("openai", "gpt-4o-mini")),
        (" ollama:qwen2.5 ", False, Spec("ollama", "qwen2.5")),
        ("llamacpp:smollm2-135m-instruct", False, Spec("llamacpp", "smollm2-135m-instruct")),
        ("gguf:/models/x.gguf", False, Spec("llamacpp", "/models/x.gguf")),  # gguf: is an alias
        ("smollm2-135m-instruct", True, Spec("llamacpp", "smollm2-135m-instruct")),  # a bare registry name
        ("/models/a:b.gguf", True, Spec("llamacpp", "/models/a:b.gguf")),  # a path, colon and all
        ("./a:b.gguf", True, Spec("llamacpp", "./a:b.gguf")),
    ],
)
def test_parse_spec(text: str, allow_path: bool, expected: Spec) -> None:
    assert parse_spec(text, allow_path=allow_path) == expected
    assert parse_spec(text, allow_path=allow_path).local is (expected.provider == "llamacpp")
    assert is_local_spec(text, allow_path=allow_path) is expected.local


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "A model SPEC is"),
        ("smollm2-135m-instruct", "is not a SPEC"),  # a bare name only where a caller allows paths
        ("/models/x.gguf", "is not a SPEC"),
        ("openai:", "is not a SPEC"),
        ("llamacpp:", "names no model"),
        ("gguf:  ", "names no model"),
    ],
)
def test_parse_spec_refuses_with_the_accepted_forms(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_spec(text)
    assert is_local_spec(text) is text.startswith(("llamacpp:", "gguf:"))  # never raises


def test_local_kwargs_go_only_to_a_local_model(monkeypatch: pytest.MonkeyPatch) -> None:
    local = load_chat_model("llamacpp:smollm2-135m-instruct", local_kwargs={"n_threads": 1}, max_tokens=7)
    assert isinstance(local, ChatGGUF) and (local.n_threads, local.max_tokens) == (1, 7)
    bare = load_chat_model("smollm2-135m-instruct", allow_path=True, local_kwargs={"seed": 3})
    assert isinstance(bare, ChatGGUF) and bare.seed == 3
    pytest.importorskip("langchain_openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # constructing the client makes no request
    hosted = load_chat_model("openai:gpt-4o-mini", local_kwargs={"n_threads": 1, "seed": 3})
    assert not isinstance(hosted, ChatGGUF) and getattr(hosted, "seed", None) is None


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("openai:gpt-4o-mini", "gpt-4o-mini"),
        ("llamacpp:smollm2-135m-instruct", "smollm2-135m-instruct"),
        ("llamacpp:/models/student.Q8_0.gguf", "student.Q8_0"),
        ("/models/student.gguf", "student"),
        ("default", "default"),
    ],
)
def test_spec_label(text: str, label: str) -> None:
    assert spec_label(text) == label
