"""Distil a question decomposer: teacher data -> SD-T / SD-R -> fine-tune (LoRA or full) -> GGUF.

Stages (each also a ``dod-train`` subcommand): :func:`generate`, :func:`screen`, :func:`build`, :func:`sft`,
:func:`export_adapter` / :func:`export_merged` (+ :func:`verify_gguf`), and :func:`distill` for all of them
from one config. The runtime (``langchain_dod``) never imports this package; this package uses the runtime's
prompts, so a model is trained on exactly what it is sent at inference. Heavy imports (torch, transformers)
happen only when a stage that needs them is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "BuildConfig",
    "DataConfig",
    "Example",
    "ExportConfig",
    "GenerateConfig",
    "SFTConfig",
    "ScreenConfig",
    "SocraticOptions",
    "TrainingError",
    "build",
    "distill",
    "export_adapter",
    "export_merged",
    "generate",
    "load_config",
    "load_examples",
    "quantize",
    "screen",
    "sft",
    "verify_gguf",
]

_WHERE = {
    "DataConfig": "training.data",
    "GenerateConfig": "training.generate",
    "ScreenConfig": "training.screen",
    "BuildConfig": "training.build",
    "ExportConfig": "training.export",
    "Example": "training.data",
    "load_examples": "training.data",
    "SocraticOptions": "training.data",
    "TrainingError": "training.errors",
    "generate": "training.generate",
    "screen": "training.screen",
    "build": "training.build",
    "SFTConfig": "training.sft",
    "sft": "training.sft",
    "export_adapter": "training.export",
    "export_merged": "training.export",
    "quantize": "training.export",
    "verify_gguf": "training.export",
    "distill": "training.distill",
    "load_config": "training.config",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
