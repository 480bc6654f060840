"""What every benchmark writes: its run's ``meta`` block and its result as ``OUT.json`` + ``OUT.md``."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["run_meta", "write_result"]


def run_meta(module: str, argv: Sequence[str] | None = None, **fields: Any) -> dict[str, Any]:
    """``command`` (``python -m MODULE ARGS``), then ``fields``, then the CPUs, load average and machine.

    ``argv`` is what ``main`` was given (``None``: the process's own arguments). Take it at the end of the run:
    the load average says how busy the machine was while it ran.
    """
    args = sys.argv[1:] if argv is None else argv
    return {
        "command": " ".join(["python", "-m", module, *args]),
        **fields,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.processor() or platform.machine()}, python {platform.python_version()}",
    }


def write_result(out: Path, result: dict[str, Any], markdown: str) -> None:
    """``result`` to ``OUT.json`` and ``markdown`` to ``OUT.md`` (``out`` without a suffix; folders made)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    out.with_suffix(".md").write_text(markdown.rstrip("\n") + "\n")
