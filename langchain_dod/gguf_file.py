"""Check a GGUF file before llama.cpp sees it.

llama.cpp validates less than one would hope: a damaged file can crash the process instead of raising.
Reading the header and tensor table in Python first turns a missing, truncated or foreign file into a
Python exception that says what is wrong and what to do. Results are memoised per (path, size, mtime); a file found
finite is also remembered on disk (``cache_dir()/checked/``), so that a new process skips the scan.

Importing this module costs numpy but not gguf-py (~0.15 s of a cold ``dod decompose``: its package imports its
writer, vocabulary and YAML code too); gguf-py is imported only for a tensor type outside :data:`LAYOUTS`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LAYOUTS", "GGUFError", "GGUFInfo", "check_finite", "inspect_gguf"]

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32  # the GGUF spec's, when general.alignment is absent

LAYOUTS: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    30: ("BF16", 1, 2),
}
"""ggml type id -> (name, values per block, bytes per block) of the usual types (ggml.h); a test checks it
against gguf-py's table, which :func:`_layout` asks for any other type."""


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
            if item == _STRING:
                self._skip_strings(count)
                return None
            if item in _SCALAR:  # skip fixed-size items without reading them
                self.pos += struct.calcsize(_SCALAR[item]) * count
                if self.pos > len(self.data):
                    raise GGUFError("array runs past the end of the file")
                return None
            for _ in range(count):
                self.value(item, False)
            return None
        raise GGUFError(f"unknown metadata value type {kind}")

    def _skip_strings(self, count: int) -> None:
        """Skip ``count`` strings unread: a vocabulary's tokens and merges, ~100k strings for SmolLM2.

        The hot loop of a cold start (0.3 s through :meth:`string`, which copies each one), so it only adds up
        lengths; the bounds checks are :meth:`take`'s and :meth:`string`'s.
        """
        data, pos, end, length = self.data, self.pos, len(self.data), struct.Struct("<Q").unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise GGUFError("header ends early")
            n = length(data, pos)[0]
            pos += 8 + n
            if pos > end:
                raise GGUFError(f"string of {n} bytes runs past the end of the file")
        self.pos = pos


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
        alignment = int(meta.get("general.alignment") or _DEFAULT_ALIGNMENT)
        start = -(-cur.pos // alignment) * alignment
    end = start
    data = []
    for name, dims, kind, offset in tensors:
        layout = _layout(kind)
        if layout is None:
            raise GGUFError(f"{file}: tensor {name} has unknown type {kind}; is llama-cpp-python too old?")
        _, block, type_size = layout
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


def _layout(kind: int) -> tuple[str, int, int] | None:
    """(name, values per block, bytes per block) of ggml type ``kind``; ``None`` for a type gguf-py does not know."""
    if kind in LAYOUTS:
        return LAYOUTS[kind]
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        qtype = GGMLQuantizationType(kind)
        return (qtype.name, *GGML_QUANT_SIZES[qtype])
    except (ValueError, KeyError):
        return None


# Where NaN/Inf can hide in each ggml block: its float fields, as (byte offset in the block, exponent mask of a
# little-endian float of that width), per ggml type name. The quantised integers around them are always finite, so
# checking these few bytes per block is exact, and far cheaper than dequantising. Offsets from ggml-common.h; the
# test suite re-derives them from gguf-py's dequantize. A float is NaN or Inf exactly when its exponent bits are all
# ones.
_F16, _BF16, _F32 = ("<u2", 0x7C00), ("<u2", 0x7F80), ("<u4", 0x7F800000)
FLOAT_FIELDS: dict[str, tuple[tuple[int, tuple[str, int]], ...]] = {
    "F32": ((0, _F32),),
    "F16": ((0, _F16),),
    "BF16": ((0, _BF16),),
    "Q4_0": ((0, _F16),),
    "Q4_1": ((0, _F16), (2, _F16)),
    "Q5_0": ((0, _F16),),
    "Q5_1": ((0, _F16), (2, _F16)),
    "Q8_0": ((0, _F16),),
    "Q2_K": ((80, _F16), (82, _F16)),
    "Q3_K": ((108, _F16),),
    "Q4_K": ((0, _F16), (2, _F16)),
    "Q5_K": ((0, _F16), (2, _F16)),
    "Q6_K": ((208, _F16),),
    "Q8_K": ((0, _F32),),
    **{t: ((0, _F16),) for t in ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ4_NL")},
    "IQ4_XS": ((0, _F16),),
    "TQ1_0": ((52, _F16),),
    "TQ2_0": ((64, _F16),),
}
_NO_FLOATS = {"I8", "I16", "I32", "I64"}
_SAMPLE_BLOCKS = 64  # other types (IQ1_M, MXFP4, ...): dequantise this many blocks at each end and the middle


def check_finite(path: str | os.PathLike[str]) -> None:
    """Raise :class:`GGUFError` when a tensor of the file holds NaN or Inf.

    A header-valid file with such weights (a damaged download, a diverged training run) makes llama.cpp's
    grammar sampler call abort() at the first constrained decode, taking the whole process with it. Every block's
    scale fields are checked (exact for the usual types); a type without a known layout is sampled. It touches
    every page of the file once (llama.cpp reads them all anyway) and is memoised per (path, size, mtime), in the
    process and, for a file found finite, on disk (:func:`_finite_marker`).
    """
    info = inspect_gguf(path)
    stat = info.path.stat()
    marker = _finite_marker(info.path.resolve(), stat)
    if marker is not None and marker.is_file():
        return
    _check_finite(str(info.path.resolve()), stat.st_size, stat.st_mtime_ns)
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:  # a read-only cache only costs the next process the scan
            pass


def _finite_marker(path: Path, stat: os.stat_result) -> Path | None:
    """The empty file that says ``path`` was found finite (``None`` when no cache dir can be named).

    Named by the path, size, mtime, ctime and inode: rewriting the file in place or replacing it changes one of
    them (ctime cannot be set back, unlike mtime), so a changed file is scanned again. Saves a new process the
    scan, 0.15 s of a cold ``dod decompose`` for the 100 MB SmolLM2 base.
    """
    from langchain_dod.models import cache_dir

    try:
        folder = cache_dir() / "checked"
    except RuntimeError:  # no home directory to put the cache in
        return None
    identity = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    return folder / f"{path.stem}-{hashlib.sha256(repr(identity).encode()).hexdigest()[:32]}.finite"


@functools.lru_cache(maxsize=64)
def _check_finite(path: str, size: int, mtime_ns: int) -> None:
    info = _inspect(path, size, mtime_ns)
    if not size:
        return
    data = np.memmap(path, dtype=np.uint8, mode="r")
    for name, kind, offset, nbytes in info.tensor_data:
        layout = _layout(kind)
        assert layout is not None  # _inspect refused unknown types
        qname, _, type_size = layout
        if qname in _NO_FLOATS or not nbytes:
            continue
        n_blocks = nbytes // type_size
        bad: int | None = None
        if qname in FLOAT_FIELDS:
            for at, (dtype, exponent) in FLOAT_FIELDS[qname]:
                # one field of every block, read in place through a strided view of the mapped file
                values = np.ndarray((n_blocks,), dtype=dtype, buffer=data, offset=offset + at, strides=(type_size,))
                hits = np.flatnonzero((values & exponent) == exponent)
                if hits.size:
                    bad = int(hits[0]) if bad is None else min(bad, int(hits[0]))
        else:
            bad = _sample(data, offset, n_blocks, kind, type_size)
        if bad is not None:
            raise GGUFError(
                f"{path}: tensor {name} holds NaN or Inf weights (block {bad} of {n_blocks}); llama.cpp would abort "
                "the process on it. The file is damaged or was exported from a training run that diverged: "
                "download or export it again."
            )


def _sample(data: np.ndarray, offset: int, n_blocks: int, kind: int, type_size: int) -> int | None:
    """Dequantise a few blocks of a type whose float fields are not listed; the first bad block or ``None``."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    starts = sorted({0, max(0, n_blocks // 2 - _SAMPLE_BLOCKS // 2), max(0, n_blocks - _SAMPLE_BLOCKS)})
    for first in starts:
        count = min(_SAMPLE_BLOCKS, n_blocks - first)
        raw = np.array(data[offset + first * type_size : offset + (first + count) * type_size])
        try:
            values = dequantize(raw, GGMLQuantizationType(kind)).reshape(count, -1)
        except NotImplementedError:  # gguf-py cannot read this type: nothing to check with
            return None
        rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if rows.size:
            return first + int(rows[0])
    return None
