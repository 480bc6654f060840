"""Check a GGUF file before llama.cpp sees it.

llama.cpp validates less than one would hope: a damaged file can crash the process instead of raising.
Reading the header and tensor table in Python first turns a missing, truncated or foreign file into a
Python exception that says what is wrong and what to do. Results are memoised per (path, size, mtime).
"""

from __future__ import annotations

import functools
import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType

__all__ = ["GGUFError", "GGUFInfo", "inspect_gguf"]

_MAGIC = b"GGUF"


class GGUFError(ValueError):
    """The file is missing, not a GGUF, truncated, or otherwise unusable."""


@dataclass(frozen=True)
class GGUFInfo:
    """What the runtime needs to know about a checked GGUF file."""

    path: Path
    architecture: str
    file_type: str  # "model" or "adapter"
    adapter_type: str | None
    n_tensors: int
    context_length: int | None
    tensor_shapes: tuple[tuple[str, tuple[int, ...]], ...]


def inspect_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Parse and check a GGUF file; raise :class:`GGUFError` with a remedy when it is unusable."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise GGUFError(f"GGUF file not found: {file}. Check the path or run `dod models` to see known models.")
    stat = file.stat()
    return _inspect(str(file.resolve()), stat.st_size, stat.st_mtime_ns)


_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_KEEP = ("general.architecture", "general.type", "general.alignment", "adapter.type")


class _Cursor:
    """Bounds-checked little-endian reads over a memory-mapped file: a bad length raises, never overreads."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise GGUFError("header ends early")
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> bytes:
        n = self.take("Q")
        if self.pos + n > len(self.data):
            raise GGUFError(f"string of {n} bytes runs past the end of the file")
        value = self.data[self.pos : self.pos + n]
        self.pos += n
        return value

    def value(self, kind: int, keep: bool) -> Any:
        if kind in _SCALAR:
            return self.take(_SCALAR[kind])
        if kind == _STRING:
            raw = self.string()
            return raw.decode("utf-8", "replace") if keep else None
        if kind == _ARRAY:
            item, count = self.take("I"), self.take("Q")
            if item in _SCALAR:  # skip fixed-size items without reading them
                self.pos += struct.calcsize(_SCALAR[item]) * count
                if self.pos > len(self.data):
                    raise GGUFError("array runs past the end of the file")
                return None
            for _ in range(count):
                self.value(item, False)
            return None
        raise GGUFError(f"unknown metadata value type {kind}")


@functools.lru_cache(maxsize=64)
def _inspect(path: str, size: int, mtime_ns: int) -> GGUFInfo:
    """Walk the header and tensor table (the ``gguf`` package's reader parses every token string into numpy
    and takes seconds on a 150k-token vocabulary; only the layout and a few keys are needed here).
    """
    file = Path(path)
    if size < 24:
        raise GGUFError(f"{file} is too small to be a GGUF file ({size} bytes). Download or export it again.")
    with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        magic = data[:4]
        if magic != _MAGIC:
            raise GGUFError(
                f"{file} is not a GGUF file (starts with {magic!r}, expected b'GGUF'). Convert the model to GGUF "
                "(e.g. `dod-train export`) or pass the right file."
            )
        cur = _Cursor(data)
        cur.pos = 4
        try:
            version = cur.take("I")
            if version not in (2, 3):
                raise GGUFError(f"unsupported GGUF version {version}")
            n_tensors, n_kv = cur.take("Q"), cur.take("Q")
            if n_tensors > 1_000_000 or n_kv > 1_000_000:
                raise GGUFError(f"implausible counts ({n_tensors} tensors, {n_kv} keys)")
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = cur.string().decode("utf-8", "replace")
                keep = key in _KEEP or key.endswith(".context_length")
                value = cur.value(cur.take("I"), keep)
                if keep:
                    meta[key] = value
            tensors = []
            for _ in range(n_tensors):
                name = cur.string().decode("utf-8", "replace")
                dims = tuple(cur.take("Q") for _ in range(cur.take("I")))
                kind, offset = cur.take("I"), cur.take("Q")
                tensors.append((name, dims, kind, offset))
        except GGUFError as err:
            raise GGUFError(f"{file} is a damaged GGUF file ({err}). Download or export it again.") from None
        alignment = int(meta.get("general.alignment") or GGUF_DEFAULT_ALIGNMENT)
        start = -(-cur.pos // alignment) * alignment
    end = start
    for name, dims, kind, offset in tensors:
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise GGUFError(f"{file}: tensor {name} has unknown type {kind}; is llama-cpp-python too old?") from None
        end = max(end, start + offset + math.prod(dims) // block * type_size)
    if end > size:
        raise GGUFError(
            f"{file} is truncated: its tensors need {end} bytes but the file has {size}. The download or copy "
            "was interrupted; fetch or export it again."
        )
    arch = str(meta.get("general.architecture") or "unknown")
    ctx = meta.get(f"{arch}.context_length")
    return GGUFInfo(
        path=file,
        architecture=arch,
        file_type=str(meta.get("general.type") or "model"),
        adapter_type=meta.get("adapter.type"),
        n_tensors=len(tensors),
        context_length=int(ctx) if ctx is not None else None,
        tensor_shapes=tuple((name, dims) for name, dims, _, _ in tensors),
    )
