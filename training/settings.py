"""Stage settings declared once: a dataclass per stage, from which the CLI flags and the recipe schema derive.

Each stage (``DataConfig`` in :mod:`training.data`, ``GenerateConfig``, ``ScreenConfig``, ``BuildConfig``,
``SFTConfig``, ``ExportConfig``) lists its settings as dataclass fields made with :func:`setting`: a default
and a help text, plus, where the command line spells it differently, the flag. ``dod-train`` builds its flags
with :func:`add_flags`, the ``distill`` config accepts :func:`names` in the stage's table, and the Python
functions take the dataclass (or the same names as keywords).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import MISSING, Field, field, fields, replace
from typing import Any, TypeVar

from training.errors import TrainingError

__all__ = ["add_flags", "csv_list", "from_args", "names", "setting", "with_settings"]

T = TypeVar("T")


def csv_list(value: str) -> list[str]:
    """``"a, b"`` → ``["a", "b"]`` (a comma-separated flag)."""
    return [v.strip() for v in value.split(",") if v.strip()]


def setting(
    default: Any = MISSING,
    *,
    help: str | None = None,  # noqa: A002 - argparse's name
    flag: str | None = None,
    type: Callable[[str], Any] | None = None,  # noqa: A002 - argparse's name
    choices: Iterable[Any] | None = None,
    action: str | None = None,
    csv: bool = False,
    cli_default: Any = MISSING,
    cli: bool = True,
    metavar: str | None = None,
) -> Any:
    """A dataclass field with what its command-line flag needs.

    ``flag``: the flag when it is not ``--name-with-dashes`` (e.g. ``--keep-restatement`` for the negation of
    ``drop_restatement``: ``action="store_false"``). ``csv``: a comma-separated list. ``cli_default``: the flag's
    default when it differs from the field's (``None``: "not given", resolved by the stage). ``cli=False``:
    no flag (set in a recipe or from Python only).
    """
    meta = {
        "help": help,
        "flag": flag,
        "type": type,
        "choices": tuple(choices) if choices is not None else None,
        "action": action,
        "csv": csv,
        "cli_default": cli_default,
        "cli": cli,
        "metavar": metavar,
    }
    if isinstance(default, (list, dict, set)):
        return field(default_factory=default.copy, metadata=meta)
    return field(default=default, metadata=meta)


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def names(cls: type) -> set[str]:
    """The setting names of a stage's dataclass (the keys its recipe table accepts)."""
    return {f.name for f in fields(cls)}


def add_flags(group: Any, cls: type, *, skip: Iterable[str] = (), only: Iterable[str] | None = None) -> None:
    """Add one flag per field of ``cls`` (or of those in ``only``) to an argparse parser or group."""
    skip, only = set(skip), set(only) if only is not None else None
    for f in fields(cls):
        meta = f.metadata
        if f.name in skip or (only is not None and f.name not in only) or not meta.get("cli", True):
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = _default(f)
        if meta.get("cli_default", MISSING) is not MISSING:
            default = meta["cli_default"]
        kwargs: dict[str, Any] = {"dest": f.name}
        if meta.get("help"):
            kwargs["help"] = meta["help"]
        elif default not in (MISSING, None) and not isinstance(default, bool):
            kwargs["help"] = f"default {default}"
        if default is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        action = meta.get("action") or (argparse.BooleanOptionalAction if isinstance(default, bool) else None)
        if action is not None:
            kwargs["action"] = action
        if action in (None, "append"):
            kind = csv_list if meta.get("csv") else meta.get("type")
            if kind is None and default not in (MISSING, None) and not isinstance(default, list):
                kind = type(default)
            if kind is not None:
                kwargs["type"] = kind
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        group.add_argument(flag, **kwargs)


def from_args(cls: type[T], args: argparse.Namespace, **extra: Any) -> T:
    """The stage's settings from parsed flags (fields without a flag keep their default), plus ``extra``."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}  # type: ignore[arg-type]
    return cls(**{**values, **extra})


def with_settings(cls: type[T], config: T | None, settings: dict[str, Any], stage: str) -> T:
    """``config`` (or the defaults) with keyword ``settings`` on top; an unknown name is a :class:`TrainingError`."""
    unknown = sorted(set(settings) - names(cls))
    if unknown:
        raise TrainingError(f"{stage}: unknown settings {unknown}; allowed: {sorted(names(cls))}.")
    base = config if config is not None else cls()
    return replace(base, **settings) if settings else base  # type: ignore[type-var]
