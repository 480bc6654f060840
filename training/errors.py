"""The one error type the training pipeline raises for bad input, so the CLI can print it without a traceback."""

from __future__ import annotations

__all__ = ["TrainingError"]


class TrainingError(ValueError):
    """Bad input to a training stage: the message says what is wrong and what to do about it."""
