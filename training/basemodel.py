"""The base model for fine-tuning: an HF folder, or a GGUF file turned into one (once, cached).

transformers loads a GGUF with ``from_pretrained(dir, gguf_file=...)`` (dequantised to fp32, chat template
kept) but the model still carries the GGUF quantizer marker, and then refuses ``save_pretrained`` and
``Trainer``. We clear ``hf_quantizer`` / ``is_quantized`` / ``config.quantization_config`` and save a plain
safetensors folder into the cache (``~/.cache/langchain-dod/hf/``), keyed by the GGUF's path, size and mtime,
so later runs (and tests) load the folder in seconds instead of dequantising again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from langchain_dod.models import file_lock
from training.errors import TrainingError

__all__ = ["gguf_to_hf", "is_hf_folder", "load_causal_lm", "load_tokenizer", "prepare_base"]


def is_hf_folder(path: Path) -> bool:
    """A transformers model folder with safetensors weights."""
    return path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _cache_root() -> Path:
    from langchain_dod.models import cache_dir

    return cache_dir() / "hf"


def gguf_to_hf(gguf: Path, target: Path | None = None) -> Path:
    """Dequantise ``gguf`` into a plain HF folder (fp32 safetensors + tokenizer with chat template)."""
    gguf = gguf.resolve()
    if target is None:
        stat = gguf.stat()
        key = hashlib.sha1(f"{gguf}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:12]
        target = _cache_root() / f"{gguf.stem}-{key}"
    if is_hf_folder(target) and (target / "dod_source.json").is_file():
        return target
    with file_lock(target.with_name(target.name + ".lock")):
        if is_hf_folder(target) and (target / "dod_source.json").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except Exception as err:  # unsupported architecture, corrupt file
            raise TrainingError(
                f"transformers could not load {gguf} as a model ({type(err).__name__}: {err}). Use an HF folder "
                "as base, or a GGUF of an architecture transformers can dequantise (llama, qwen2, ...)."
            ) from err
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "dod_source.json").write_text(json.dumps({"gguf": str(gguf)}, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def prepare_base(base: str | Path) -> Path:
    """An HF folder for ``base``: a folder as is; a GGUF path or registry name converted (cached)."""
    path = Path(str(base)).expanduser()
    if path.is_dir():
        if not is_hf_folder(path):
            raise TrainingError(
                f"{path} is a folder but not a transformers model (no config.json + *.safetensors). Pass an HF "
                "model folder or a .gguf file."
            )
        return path
    from langchain_dod.gguf_file import GGUFError, inspect_gguf
    from langchain_dod.models import ModelNotFoundError, resolve

    try:
        gguf = resolve(str(base))
        info = inspect_gguf(gguf)
    except (ModelNotFoundError, GGUFError) as err:
        raise TrainingError(f"Base {base!r}: {err}") from None
    if info.file_type == "adapter":
        raise TrainingError(f"Base {gguf} is a LoRA adapter, not a model; pass the model it was made for.")
    return gguf_to_hf(gguf)


def load_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer; it must have a chat template (the prompts are chats)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if not tokenizer.chat_template:
        raise TrainingError(
            f"The tokenizer in {folder} has no chat template; fine-tune an instruct/chat model (its template is "
            "what llama.cpp applies at inference)."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(folder: Path, dtype: Any = None) -> Any:
    """Load safetensors weights only (never pickle), no remote code."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=dtype or torch.float32, use_safetensors=True, trust_remote_code=False
    )
