"""An oracle "decomposer" that returns the data's own sub-questions (GSM8K's Socratic split).

GSM8K's Socratic sub-questions were written by a model, not by people (GSM8K's README says so).

GSM8K's ``*_socratic.jsonl`` writes each reasoning step as ``SUB-QUESTION ** step``. Fed to the solver in
place of a model's decomposition, these are an upper-bound teacher: what a perfect decomposer could give.
The oracle looks a question up by its text (whitespace-insensitive) and reports zero tokens: nobody was paid
to write them at run time.

The steps become sub-questions by the data layer's one rule
(:func:`~langchain_dod.evaluation.datasets.socratic_subquestions` with ``cap=max_subquestions``: a final
restatement of the question dropped, then the first ``max_subquestions`` kept), the rule that makes the
training data of teacher ``given``. So the oracle measures the decompositions an adapter could learn from, not
a variant of them (before, the oracle kept the restatement the training data drops).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, PrivateAttr

from langchain_dod.decomposer import Decomposition, DecompositionError, normalize_input
from langchain_dod.evaluation.datasets import DatasetError, SocraticOptions, socratic_subquestions

__all__ = ["ORACLE_LABEL", "ORACLE_RULE", "SocraticOracle"]

ORACLE_LABEL = "oracle:gsm8k-socratic"
#: Recorded in an oracle run's description: runs made by another rule (the old one kept the restatement) must not
#: be extended with this one's sub-questions.
ORACLE_RULE = "datasets.socratic_subquestions: final restatement dropped, first max_subquestions kept"


def _key(question: str) -> str:
    return " ".join(question.split()).lower()


class SocraticOracle(RunnableSerializable[Any, Decomposition]):
    """Runnable: question → the data's sub-questions for it, as a :class:`Decomposition` with 0 tokens."""

    path: str
    """The Socratic JSONL (e.g. ``../shared/data/gsm8k/test_socratic.jsonl``)."""
    max_subquestions: int = Field(default=3, ge=1, le=10)

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _table: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        """Read the file once, now, so a wrong path fails before any solver call."""
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise DatasetError(
                f"Socratic file not found: {path}. Pass path= a Socratic JSONL such as test_socratic.jsonl "
                "(--socratic PATH on the command line)."
            )
        options = SocraticOptions(cap=self.max_subquestions)
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    subquestions = socratic_subquestions(row["question"], row["answer"], options)
                    self._table[_key(row["question"])] = subquestions or []
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as err:
                    raise DatasetError(
                        f"{path}:{number} is not a Socratic GSM8K row {{question, answer}} ({err})."
                    ) from err

    def __len__(self) -> int:
        return len(self._table)

    def _lookup(self, value: Any, run_manager: Any, config: RunnableConfig) -> Decomposition:
        question, _ = normalize_input(value)
        subs = self._table.get(_key(question))
        if subs is None:
            raise DecompositionError(f"No Socratic sub-questions for this question in {self.path}.")
        return Decomposition(
            subquestions=subs[: self.max_subquestions],
            model=ORACLE_LABEL,
            input_tokens=0,
            output_tokens=0,
            seconds=0.0,
            raw=json.dumps(subs),
        )

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Decomposition:
        """The Socratic sub-questions of ``input`` (a question or ``{question, context}``)."""
        return self._call_with_config(self._lookup, input, config, run_type="chain", **kwargs)
