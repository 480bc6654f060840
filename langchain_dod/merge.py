"""Merge a GGUF LoRA adapter into its base once, and keep the merged GGUF in the cache.

llama.cpp applies a LoRA at run time as two extra small matrix products per adapted weight and token; for a
135M model that is most of the decoding time (issue 16 measured 0.63 s per decomposition with the adapter vs
0.39 s for the same weights merged). The wheel keeps the small adapter; the first use writes
``W + (alpha / r) · B·A`` for every adapted weight into a merged GGUF in ``cache_dir()/merged/`` and later
processes load that file directly.

The merge needs only numpy and gguf-py: each adapted weight is dequantised from the base's type (Q4_1 for the
shipped base), the LoRA product is added in float32, and the result is quantised to ``qtype`` (Q8_0 by default:
requantising to 4 bits compounds two rounding errors, and the training notes measured merged Q4_1 looping).
Weights the adapter does not touch are copied byte for byte.

Cache rules: the file name carries the base's name and size and the adapter's sha256, so a new adapter or base
gets a new file; two processes merging at once wait on a lock and the second reuses the first's file; the
merged file is written to a temporary name and renamed when complete, and a cached file that fails the GGUF
check is rebuilt with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["MERGE_QTYPES", "MergeError", "merge_lora", "merged_gguf", "merged_path"]

logger = logging.getLogger(__name__)

MERGE_QTYPES = ("Q8_0", "F16", "Q4_0")
"""Types a merged weight may be written in. Q8_0 (the default) and F16 keep the base's quality (see the module
docstring); Q4_0 decodes 1.5× faster here (llama.cpp repacks it for an AVX2 kernel,
benchmarks/results/decode_builds/README.md) but rounds twice, so it is opt-in until it passes an accuracy check."""

_FILE_TYPES = {"Q8_0": "MOSTLY_Q8_0", "F16": "MOSTLY_F16", "Q4_0": "MOSTLY_Q4_0"}  # gguf.LlamaFileType names

_LORA_A, _LORA_B = ".lora_a", ".lora_b"
_MERGED_FROM = "langchain_dod.merged_from"  # metadata key: which adapter (sha256) this file holds


class MergeError(ValueError):
    """The adapter does not fit the base, or a file is not what it should be."""


def _sha256(path: Path) -> str:
    """The file's sha256, read once per process while its size and mtime stay the same (a load asks twice)."""
    stat = path.stat()
    return _sha256_of(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:  # size, mtime: the cache key, so an edit rehashes
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_metadata(reader, writer, *, skip: set[str]) -> None:  # noqa: ANN001 - gguf-py classes
    """Every key/value of the base except the file's own bookkeeping (writer adds those) and ``skip``."""
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in skip:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if len(field.types) > 1 else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)


def merge_lora(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    qtype: str = "Q8_0",
    scale: float = 1.0,
) -> Path:
    """Write ``base`` with ``adapter`` merged into ``out`` (no cache, no lock: see :func:`merged_gguf`)."""
    import gguf
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
    from gguf.quants import dequantize, quantize

    if qtype not in MERGE_QTYPES:
        raise MergeError(f"qtype must be one of {MERGE_QTYPES}, not {qtype!r}.")
    target_type = GGMLQuantizationType[qtype]
    base_r, lora_r = GGUFReader(str(base)), GGUFReader(str(adapter))
    if "adapter.lora.alpha" not in lora_r.fields:
        raise MergeError(f"{adapter} has no adapter.lora.alpha: is it a GGUF LoRA adapter?")
    alpha = float(lora_r.fields["adapter.lora.alpha"].contents())
    pairs = {t.name: t for t in lora_r.tensors}
    arch = str(base_r.fields["general.architecture"].contents())
    names = {t.name for t in base_r.tensors}
    unknown = sorted({n.removesuffix(_LORA_A).removesuffix(_LORA_B) for n in pairs} - names)
    if unknown:
        raise MergeError(f"{adapter} adapts tensors {unknown[:3]} that {base} does not have: wrong base.")
    writer = GGUFWriter(str(out), arch)
    _copy_metadata(base_r, writer, skip={"general.architecture", "general.file_type"})
    writer.add_file_type(gguf.LlamaFileType[_FILE_TYPES[qtype]])
    writer.add_string(_MERGED_FROM, _sha256(Path(adapter)))
    for tensor in base_r.tensors:
        a, b = pairs.get(tensor.name + _LORA_A), pairs.get(tensor.name + _LORA_B)
        if a is None and b is None:  # untouched: copy its bytes in their own type
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
            continue
        if a is None or b is None:
            raise MergeError(f"{adapter}: {tensor.name} has only one of lora_a/lora_b; the adapter is damaged.")
        weight = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)  # (out, in)
        lora_a = np.asarray(a.data, dtype=np.float32)  # (r, in)
        lora_b = np.asarray(b.data, dtype=np.float32)  # (out, r)
        if lora_b.shape[0] != weight.shape[0] or lora_a.shape[1] != weight.shape[1]:
            raise MergeError(f"{tensor.name}: LoRA shapes {lora_b.shape}·{lora_a.shape} do not fit {weight.shape}.")
        weight += (scale * alpha / lora_a.shape[0]) * (lora_b @ lora_a)
        if not np.isfinite(weight).all():
            raise MergeError(f"{tensor.name}: the merged weight is not finite; the adapter holds NaN or Inf.")
        writer.add_tensor(tensor.name, quantize(weight, target_type), raw_dtype=target_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(out)


def merged_path(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str],
    *,
    qtype: str = "Q8_0",
    cache: str | os.PathLike[str] | None = None,
) -> Path:
    """Where :func:`merged_gguf` keeps the merge of ``adapter`` into ``base`` (the file may not exist yet).

    The name carries the base's name and size and the adapter's sha256: a file there holds exactly these bytes.
    """
    from langchain_dod.models import cache_dir

    base, adapter = Path(base).expanduser().resolve(), Path(adapter).expanduser().resolve()
    folder = Path(cache) if cache is not None else cache_dir() / "merged"
    return folder / f"{base.stem}-{base.stat().st_size}+{_sha256(adapter)[:16]}-{qtype}.gguf"


def merged_gguf(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str],
    *,
    qtype: str = "Q8_0",
    cache: str | os.PathLike[str] | None = None,
) -> Path:
    """The cached merge of ``adapter`` into ``base``, made on first use (module docstring)."""
    from langchain_dod.gguf_file import GGUFError, inspect_gguf
    from langchain_dod.models import file_lock

    target = merged_path(base, adapter, qtype=qtype, cache=cache)
    with file_lock(target.with_suffix(".lock")):
        if target.exists():
            try:
                inspect_gguf(target)
                return target
            except GGUFError as err:
                warnings.warn(
                    f"Rebuilding the merged decomposer {target}: the cached file is damaged ({err}).", stacklevel=2
                )
                target.unlink()
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        logger.info(
            "Merging %s into %s once (a few seconds); cached as %s", Path(adapter).name, Path(base).name, target
        )
        try:
            merge_lora(base, adapter, tmp, qtype=qtype)
            inspect_gguf(tmp)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
    return target
