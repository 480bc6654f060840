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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType

__all__ = ["GGUFError", "GGUFInfo", "check_finite", "inspect_gguf"]

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
    #: (name, ggml type, absolute byte offset, byte size) of each tensor's data, for :func:`check_finite`
    tensor_data: tuple[tuple[str, int, int, int], ...] = field(default=(), repr=False, compare=False)


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
    """Walk the header and tensor table, reading only the layout and a few keys.

    The ``gguf`` package's reader parses every token string into numpy and takes seconds on a 150k-token
    vocabulary.
    """
    file = Path(path)
    if size < 24:
        raise GGUFError(f"{file} is too small to be a GGUF file ({size} bytes). Download or export it again.")
    with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        magic = mapped[:4]
        if magic != _MAGIC:
            raise GGUFError(
                f"{file} is not a GGUF file (starts with {magic!r}, expected b'GGUF'). Convert the model to GGUF "
                "(e.g. `dod-train export`) or pass the right file."
            )
        cur = _Cursor(mapped)
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
    data = []
    for name, dims, kind, offset in tensors:
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise GGUFError(f"{file}: tensor {name} has unknown type {kind}; is llama-cpp-python too old?") from None
        nbytes = math.prod(dims) // block * type_size
        data.append((name, kind, start + offset, nbytes))
        end = max(end, start + offset + nbytes)
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
        tensor_data=tuple(data),
    )


# Where NaN/Inf can hide in each ggml block: its float fields, as (byte offset in the block, exponent mask of a
# little-endian float of that width). The quantised integers around them are always finite, so checking these
# few bytes per block is exact, and far cheaper than dequantising. Offsets from ggml-common.h; the test suite
# re-derives them from gguf-py's dequantize. A float is NaN or Inf exactly when its exponent bits are all ones.
_F16, _BF16, _F32 = ("<u2", 0x7C00), ("<u2", 0x7F80), ("<u4", 0x7F800000)
_T = GGMLQuantizationType
FLOAT_FIELDS: dict[GGMLQuantizationType, tuple[tuple[int, tuple[str, int]], ...]] = {
    _T.F32: ((0, _F32),),
    _T.F16: ((0, _F16),),
    _T.BF16: ((0, _BF16),),
    _T.Q4_0: ((0, _F16),),
    _T.Q4_1: ((0, _F16), (2, _F16)),
    _T.Q5_0: ((0, _F16),),
    _T.Q5_1: ((0, _F16), (2, _F16)),
    _T.Q8_0: ((0, _F16),),
    _T.Q2_K: ((80, _F16), (82, _F16)),
    _T.Q3_K: ((108, _F16),),
    _T.Q4_K: ((0, _F16), (2, _F16)),
    _T.Q5_K: ((0, _F16), (2, _F16)),
    _T.Q6_K: ((208, _F16),),
    _T.Q8_K: ((0, _F32),),
    **{t: ((0, _F16),) for t in (_T.IQ2_XXS, _T.IQ2_XS, _T.IQ2_S, _T.IQ3_XXS, _T.IQ3_S, _T.IQ1_S, _T.IQ4_NL)},
    _T.IQ4_XS: ((0, _F16),),
    _T.TQ1_0: ((52, _F16),),
    _T.TQ2_0: ((64, _F16),),
}
_NO_FLOATS = {_T.I8, _T.I16, _T.I32, _T.I64}
_SAMPLE_BLOCKS = 64  # other types (IQ1_M, MXFP4, ...): dequantise this many blocks at each end and the middle


def check_finite(path: str | os.PathLike[str]) -> None:
    """Raise :class:`GGUFError` when a tensor of the file holds NaN or Inf.

    A header-valid file with such weights (a damaged download, a diverged training run) makes llama.cpp's
    grammar sampler call abort() at the first constrained decode, taking the whole process with it. Every block's
    scale fields are checked (exact for the usual types); a type without a known layout is sampled. It touches
    every page of the file once (llama.cpp reads them all anyway) and is memoised per (path, size, mtime).
    """
    info = inspect_gguf(path)
    stat = info.path.stat()
    _check_finite(str(info.path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _check_finite(path: str, size: int, mtime_ns: int) -> None:
    info = _inspect(path, size, mtime_ns)
    if not size:
        return
    data = np.memmap(path, dtype=np.uint8, mode="r")
    for name, kind, offset, nbytes in info.tensor_data:
        qtype = GGMLQuantizationType(kind)
        if qtype in _NO_FLOATS or not nbytes:
            continue
        block, type_size = GGML_QUANT_SIZES[qtype]
        n_blocks = nbytes // type_size
        bad: int | None = None
        if qtype in FLOAT_FIELDS:
            for at, (dtype, exponent) in FLOAT_FIELDS[qtype]:
                # one field of every block, read in place through a strided view of the mapped file
                values = np.ndarray((n_blocks,), dtype=dtype, buffer=data, offset=offset + at, strides=(type_size,))
                hits = np.flatnonzero((values & exponent) == exponent)
                if hits.size:
                    bad = int(hits[0]) if bad is None else min(bad, int(hits[0]))
        else:
            bad = _sample(data, offset, n_blocks, qtype)
        if bad is not None:
            raise GGUFError(
                f"{path}: tensor {name} holds NaN or Inf weights (block {bad} of {n_blocks}); llama.cpp would abort "
                "the process on it. The file is damaged or was exported from a training run that diverged: "
                "download or export it again."
            )


def _sample(data: np.ndarray, offset: int, n_blocks: int, qtype: GGMLQuantizationType) -> int | None:
    """Dequantise a few blocks of a type whose float fields are not listed; the first bad block or ``None``."""
    from gguf.quants import dequantize

    _, type_size = GGML_QUANT_SIZES[qtype]
    starts = sorted({0, max(0, n_blocks // 2 - _SAMPLE_BLOCKS // 2), max(0, n_blocks - _SAMPLE_BLOCKS)})
    for first in starts:
        count = min(_SAMPLE_BLOCKS, n_blocks - first)
        raw = np.array(data[offset + first * type_size : offset + (first + count) * type_size])
        try:
            values = dequantize(raw, qtype).reshape(count, -1)
        except NotImplementedError:  # gguf-py cannot read this type: nothing to check with
            return None
        rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if rows.size:
            return first + int(rows[0])
    return None
