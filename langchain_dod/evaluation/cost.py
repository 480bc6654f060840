"""Dollars from token counts, with a configurable price table (default: the paper's cost model).

The paper prices its big model at $0.001 per 1K input and $0.002 per 1K output tokens and a smaller model
at that rate scaled by the parameter ratio. So, by default:

- the solver stage is priced at the paper's rate, as if it were a hosted model (a local solver too, so runs
  are comparable with the paper's Table 1; set its rate to 0 in a table to count it as free);
- a decomposer that is a different model from the solver is priced at the paper's rate × (its parameters /
  175B, GPT-3.5's size), when its label names a size (``smollm2-135m`` → 135M, ``qwen2.5-1.5b`` → 1.5B);
  a decomposer that is the solver model itself pays the solver's rate (the paper's teacher setting);
- oracle (the data's own) sub-questions cost nothing (no tokens).

Local stages also get their CPU seconds reported separately (see the runner), since a dollar price for
your own CPU is a guess. A JSON table overrides any of this::

    {"default": {"input_per_1k": 0.001, "output_per_1k": 0.002},
     "models": {"gpt-4o-mini*": {"input_per_1k": 0.00015, "output_per_1k": 0.0006},
                "qwen2.5-coder-1.5b-instruct": {"input_per_1k": 0, "output_per_1k": 0}},
     "scale_decomposer_by_params": true}
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PAPER_RATE", "REFERENCE_PARAMS", "PriceTable", "Rate", "parameter_count"]

REFERENCE_PARAMS = 175e9
"""GPT-3.5's assumed size, the reference of the paper's parameter-ratio scaling."""


@dataclass(frozen=True)
class Rate:
    """Dollars per 1,000 input and output tokens."""

    input_per_1k: float
    output_per_1k: float

    def dollars(self, input_tokens: int | None, output_tokens: int | None) -> float:
        """Cost of one call; a missing count is taken as 0."""
        return ((input_tokens or 0) * self.input_per_1k + (output_tokens or 0) * self.output_per_1k) / 1000.0

    def scaled(self, factor: float) -> Rate:
        """The rate multiplied by ``factor``."""
        return Rate(self.input_per_1k * factor, self.output_per_1k * factor)


PAPER_RATE = Rate(0.001, 0.002)
_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([mb])(?![a-z])", re.I)


def parameter_count(label: str | None) -> float | None:
    """Parameters named in a model label (``SmolLM2-135M`` → 1.35e8, ``qwen2.5-coder-1.5b`` → 1.5e9)."""
    if not label:
        return None
    found = _SIZE.findall(Path(label).name)
    if not found:
        return None
    number, unit = found[-1]
    return float(number) * (1e6 if unit.lower() == "m" else 1e9)


@dataclass
class PriceTable:
    """Rates per model label (glob patterns), a default rate, and the paper's small-model scaling."""

    default: Rate = PAPER_RATE
    models: dict[str, Rate] = field(default_factory=dict)
    scale_decomposer_by_params: bool = True

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        """Read a JSON table (see the module docstring); a malformed one raises ``ValueError``."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"Cannot read the price table {path}: {err}. Expected JSON like "
                '{"default": {"input_per_1k": 0.001, "output_per_1k": 0.002}, "models": {"NAME*": {...}}}.'
            ) from err

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PriceTable:
        """Build from the JSON shape of :meth:`to_dict`."""

        def rate(d: dict[str, Any]) -> Rate:
            return Rate(float(d["input_per_1k"]), float(d["output_per_1k"]))

        return cls(
            default=rate(data["default"]) if "default" in data else PAPER_RATE,
            models={str(k): rate(v) for k, v in (data.get("models") or {}).items()},
            scale_decomposer_by_params=bool(data.get("scale_decomposer_by_params", True)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape (recorded in reports so a number can be traced to its prices)."""

        def d(r: Rate) -> dict[str, float]:
            return {"input_per_1k": r.input_per_1k, "output_per_1k": r.output_per_1k}

        return {
            "default": d(self.default),
            "models": {k: d(v) for k, v in self.models.items()},
            "scale_decomposer_by_params": self.scale_decomposer_by_params,
        }

    def _explicit(self, label: str) -> Rate | None:
        for pattern, rate in self.models.items():
            if fnmatch.fnmatch(label.lower(), pattern.lower()) or fnmatch.fnmatch(
                Path(label).name.lower(), pattern.lower()
            ):
                return rate
        return None

    def rate(self, stage: str, model: str | None, solver_model: str | None = None) -> Rate:
        """The rate of ``stage`` (``decomposer``/``solver``) run by ``model`` in a pipeline with ``solver_model``."""
        if model is None or model.startswith("oracle"):
            return Rate(0.0, 0.0)
        if (explicit := self._explicit(model)) is not None:
            return explicit
        if stage == "decomposer" and self.scale_decomposer_by_params and model != solver_model:
            params = parameter_count(model)
            if params is not None:
                return self.default.scaled(min(1.0, params / REFERENCE_PARAMS))
        return self.default

    def stage_dollars(self, stage: str, usage: dict[str, Any] | None, solver_model: str | None = None) -> float:
        """Dollars of one recorded stage usage (``{model, input_tokens, output_tokens, ...}``)."""
        if not usage:
            return 0.0
        return self.rate(stage, usage.get("model"), solver_model).dollars(
            usage.get("input_tokens"), usage.get("output_tokens")
        )
