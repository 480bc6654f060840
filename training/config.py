"""The ``dod-train distill`` config: one small TOML or YAML file naming every stage's settings.

Every key is checked against the stages' settings dataclasses (:mod:`training.settings`), so a typo
(``lora_rank`` for ``lora_r``) is an error naming the allowed keys, never a silently ignored setting. Relative
paths are relative to the directory you run ``dod-train`` from (the repository root for the shipped recipes).

Example (``training/recipes/smollm2-socratic.toml`` is a full one)::

    out_dir = "runs/demo"
    [data]
    source = "../shared/data/gsm8k/test_socratic.jsonl"
    format = "socratic"
    [generate]
    teacher = "given"
    [build]
    kinds = ["SD-T"]
    [sft]
    base = "smollm2-135m-instruct"
    max_steps = 100
    [export]
    kind = "adapter"
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from training.build import BuildConfig
from training.data import DataConfig
from training.errors import TrainingError
from training.export import ExportConfig
from training.generate import GenerateConfig
from training.screen import ScreenConfig
from training.settings import names
from training.sft import SFTConfig

__all__ = ["SCHEMA", "load_config", "validate_config"]

SCHEMA: dict[str, set[str] | None] = {
    "out_dir": None,
    "seed": None,
    "data": names(DataConfig),
    "generate": {"teacher"} | names(GenerateConfig),
    "screen": {"solver"} | names(ScreenConfig),
    "build": names(BuildConfig),
    "sft": {"base", "resume"} | names(SFTConfig),
    "export": names(ExportConfig),
}
"""Each stage's table: its settings dataclass's fields, plus the inputs that are not settings (teacher, solver,
base)."""
REQUIRED = {"data": {"source"}, "generate": {"teacher"}, "sft": {"base"}}


def validate_config(config: Any, where: str = "config") -> dict[str, Any]:
    """Check sections and keys; returns the config. Raises :class:`TrainingError` naming what is wrong."""
    if not isinstance(config, dict):
        raise TrainingError(f"{where}: the config must be a table/mapping of sections, got {type(config).__name__}.")
    unknown = sorted(set(config) - set(SCHEMA))
    if unknown:
        raise TrainingError(f"{where}: unknown top-level keys {unknown}; allowed: {sorted(SCHEMA)}.")
    for section, keys in SCHEMA.items():
        if keys is None or section not in config:
            continue
        value = config[section]
        if not isinstance(value, dict):
            raise TrainingError(f"{where}: [{section}] must be a table of settings, got {type(value).__name__}.")
        bad = sorted(set(value) - keys)
        if bad:
            raise TrainingError(f"{where}: unknown keys in [{section}]: {bad}; allowed: {sorted(keys)}.")
    for section, keys in REQUIRED.items():
        missing = sorted(keys - set(config.get(section, {})))
        if missing:
            raise TrainingError(f"{where}: [{section}] needs {missing}.")
    if "out_dir" not in config:
        raise TrainingError(f"{where}: set out_dir (the folder for every stage's outputs).")
    return config


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a ``.toml``, ``.yaml``/``.yml`` or ``.json`` config."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"Config {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            config = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            config = yaml.safe_load(text)
        elif suffix == ".json":
            config = json.loads(text)
        else:
            raise TrainingError(f"Config {path}: use a .toml, .yaml or .json file.")
    except TrainingError:
        raise
    except Exception as err:  # syntax errors of any of the three parsers
        raise TrainingError(f"Config {path} does not parse: {err}") from None
    return validate_config(config, str(path))
