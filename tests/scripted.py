"""A scripted solver for chain tests: it records what it was asked and how many calls overlapped.

Used where the solver is not under test (the chain's plumbing is); the decomposer stays the real model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr


class ScriptedSolver(BaseChatModel):
    """Replies ``reply`` (word by word when streamed); raises ``fail`` if set."""

    reply: str = "First, 2 + 3 = 5. The answer is: 5"
    delay: float = 0.0
    fail: str | None = None
    _seen: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _active: int = PrivateAttr(default=0)
    _peak: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def seen(self) -> list[list[BaseMessage]]:
        """Every message list the solver received."""
        return self._seen

    @property
    def peak_concurrency(self) -> int:
        """The most calls that were in flight at once."""
        return self._peak

    def _enter(self, messages: list[BaseMessage]) -> None:
        with self._lock:
            self._seen.append(messages)
            self._active += 1
            self._peak = max(self._peak, self._active)
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            with self._lock:
                self._active -= 1
            raise RuntimeError(self.fail)

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self._enter(messages)
        self._leave()
        usage = {
            "input_tokens": 10,
            "output_tokens": len(self.reply.split()),
            "total_tokens": 10 + len(self.reply.split()),
        }
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.reply, usage_metadata=usage))])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        self._enter(messages)
        try:
            words = self.reply.split(" ")
            for i, word in enumerate(words):
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=word if i == 0 else " " + word))
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            self._leave()
