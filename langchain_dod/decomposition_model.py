"""The decomposer's output as the pydantic model LangChain callers get (kept apart: pydantic costs ~0.2 s to import).

The lean ``dod decompose`` path reads replies into the plain :class:`~langchain_dod.decomposition.Reading` and never
imports this module.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from langchain_dod.decomposition import Reading

__all__ = ["Decomposition"]


class Decomposition(BaseModel):
    """The decomposer's output: sub-questions (0 means "answer directly") and what produced them."""

    subquestions: list[str] = Field(default_factory=list)
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    seconds: float | None = None
    raw: str | None = Field(default=None, description="the model's reply before parsing")
    constrained: bool | None = Field(
        default=None, description="True: the reply was decoded under the grammar; False: written freely"
    )

    @classmethod
    def from_reading(cls, reading: Reading) -> Decomposition:
        """The model of a plain :class:`~langchain_dod.decomposition.Reading` (same fields)."""
        return cls(**asdict(reading))
