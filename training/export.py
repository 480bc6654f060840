"""Stage 5: fine-tuned model -> GGUF for llama.cpp, then a check that llama.cpp agrees with transformers.

* ``adapter``: a LoRA folder -> a GGUF LoRA adapter (``convert_lora_to_gguf.py``, f16 by default), which the
  runtime applies to the quantised base (``ChatGGUF(model=..., lora_path=...)``);
* ``merged``: LoRA merged into the base (or a full fine-tune) -> GGUF f16 (``convert_hf_to_gguf.py``) ->
  quantised copies (``Q8_0``, ``Q4_K_M``, ``Q4_1`` …) with ``llama_cpp.llama_model_quantize``.

The converters come from :mod:`training.converters`. Verification loads the GGUF in llama.cpp and decodes a
probe prompt greedily; its first tokens must match what the transformers model decodes for the same prompt
(quantised copies are only reported: quantisation may change a token).
"""

from __future__ import annotations

import ctypes
import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.basemodel import is_hf_folder, load_causal_lm, load_tokenizer
from training.converters import run_converter
from training.errors import TrainingError
from training.runs import read_training_info
from training.settings import setting, with_settings

__all__ = [
    "ExportConfig",
    "PROBE_QUESTION",
    "Verification",
    "check_adapter_base",
    "export_and_verify",
    "export_adapter",
    "export_merged",
    "probe_messages",
    "quantize",
    "verify_gguf",
]

PROBE_QUESTION = (
    "A shop sells pencils at 3 for $1. Tom buys 12 pencils and pays with a $10 bill. How much change does he get?"
)


@dataclass
class ExportConfig:
    """What ``export`` writes and how it checks it (the ``[export]`` table, and the CLI flags)."""

    kind: str = setting("adapter", choices=("adapter", "merged"))
    outtype: str = setting("f16", choices=("f32", "f16", "bf16", "q8_0"))
    quantize: list[str] = setting(["Q8_0"], csv=True, help="for merged: comma-separated, e.g. Q8_0,Q4_K_M")
    verify: bool = setting(True, flag="--no-verify", action="store_false")
    probe_tokens: int = setting(8)
    min_match: int = setting(4)


@dataclass
class Verification:
    """How llama.cpp's greedy decoding compares with the transformers model's on one probe prompt."""

    gguf: str
    lora: str | None
    hf_text: str
    gguf_text: str
    matched_tokens: int
    compared_tokens: int
    ok: bool


def _is_adapter(model_dir: Path) -> bool:
    return (model_dir / "adapter_config.json").is_file()


def _base_dir(model_dir: Path, base: str | Path | None) -> Path:
    if base is not None:
        from training.basemodel import prepare_base

        return prepare_base(base)
    recorded = read_training_info(model_dir).get("base") or json.loads(
        (model_dir / "adapter_config.json").read_text()
    ).get("base_model_name_or_path")
    if not recorded or not is_hf_folder(Path(recorded)):
        raise TrainingError(
            f"Cannot find the base model of {model_dir} (recorded: {recorded!r}); pass base= (the HF folder or GGUF "
            "it was trained from)."
        )
    return Path(recorded)


def _safetensor_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


def check_adapter_base(adapter_dir: Path, base_dir: Path) -> None:
    """Refuse a base whose layers the adapter does not fit (other model, other size), with a clear message."""
    adapter = _safetensor_shapes(adapter_dir)
    base = _safetensor_shapes(base_dir)
    if not adapter:
        raise TrainingError(f"{adapter_dir} holds no adapter weights (*.safetensors).")
    for key, shape in adapter.items():
        if ".lora_A." not in key and ".lora_B." not in key:
            continue
        module = key.split(".lora_")[0].removeprefix("base_model.model.")
        target = base.get(module + ".weight")
        if target is None:
            raise TrainingError(
                f"The adapter in {adapter_dir} trains {module!r}, which the base {base_dir} does not have: wrong base. "
                "Export with the base the adapter was trained on."
            )
        width = shape[1] if ".lora_A." in key else shape[0]
        expected = target[1] if ".lora_A." in key else target[0]
        if width != expected:
            raise TrainingError(
                f"The adapter in {adapter_dir} does not fit the base {base_dir}: {module} is {target} there but the "
                f"adapter expects width {width}. Wrong base; export with the base the adapter was trained on."
            )


def export_adapter(
    model_dir: str | Path, out: str | Path, *, base: str | Path | None = None, outtype: str = "f16"
) -> Path:
    """Convert a peft LoRA folder into a GGUF LoRA adapter at ``out``."""
    model_dir = Path(model_dir)
    if not _is_adapter(model_dir):
        raise TrainingError(
            f"{model_dir} is not a LoRA adapter folder (no adapter_config.json); a full fine-tune exports with "
            "kind='merged'."
        )
    base_dir = _base_dir(model_dir, base)
    check_adapter_base(model_dir, base_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    run_converter(
        "convert_lora_to_gguf.py",
        ["--base", str(base_dir), "--outfile", str(tmp), "--outtype", outtype, str(model_dir)],
    )
    tmp.replace(out)
    return out


def quantize(src: Path, dst: Path, qtype: str) -> Path:
    """Quantise a GGUF with llama.cpp (``Q8_0``, ``Q4_K_M``, ``Q4_1``, ...)."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}", None)
    if ftype is None:
        known = sorted(
            n.removeprefix("LLAMA_FTYPE_MOSTLY_") for n in dir(llama_cpp) if n.startswith("LLAMA_FTYPE_MOSTLY_")
        )
        raise TrainingError(f"Unknown quantisation {qtype!r}; choose one of {', '.join(known)}.")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    tmp = dst.with_name(dst.name + ".tmp")
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if status != 0:
        tmp.unlink(missing_ok=True)
        raise TrainingError(f"llama.cpp could not quantise {src} to {qtype} (status {status}).")
    tmp.replace(dst)
    return dst


def export_merged(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    base: str | Path | None = None,
    quantizations: list[str] | tuple[str, ...] = ("Q8_0",),
    name: str = "model",
) -> dict[str, Path]:
    """Merge (LoRA) or take (full) the fine-tuned model, write GGUF f16 and quantised copies into ``out_dir``."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = out_dir / "merged-hf"
    if _is_adapter(model_dir):
        from peft import PeftModel

        base_dir = _base_dir(model_dir, base)
        check_adapter_base(model_dir, base_dir)
        model = PeftModel.from_pretrained(load_causal_lm(base_dir), str(model_dir)).merge_and_unload()
        shutil.rmtree(merged, ignore_errors=True)
        model.save_pretrained(merged, safe_serialization=True)
        load_tokenizer(model_dir if (model_dir / "tokenizer_config.json").is_file() else base_dir).save_pretrained(
            merged
        )
        source = merged
    elif is_hf_folder(model_dir):
        source = model_dir
    else:
        raise TrainingError(f"{model_dir} is neither a LoRA adapter nor an HF model folder; pass sft's final folder.")
    f16 = out_dir / f"{name}-f16.gguf"
    tmp = f16.with_name(f16.name + ".tmp")
    run_converter("convert_hf_to_gguf.py", [str(source), "--outfile", str(tmp), "--outtype", "f16"])
    tmp.replace(f16)
    outputs = {"f16": f16, "hf": source}
    for qtype in quantizations:
        outputs[qtype] = quantize(f16, out_dir / f"{name}-{qtype.upper()}.gguf", qtype)
    return outputs


def _hf_greedy(
    model_dir: Path, messages: list[dict[str, str]], n_tokens: int, base: Path | None
) -> tuple[list[int], Any]:
    import torch

    if _is_adapter(model_dir):
        from peft import PeftModel

        assert base is not None
        model = PeftModel.from_pretrained(load_causal_lm(base), str(model_dir))
    else:
        model = load_causal_lm(model_dir)
    tokenizer = load_tokenizer(model_dir if (model_dir / "tokenizer_config.json").is_file() else base)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    if tokenizer.eos_token_id in new:
        new = new[: new.index(tokenizer.eos_token_id)]
    return new, tokenizer


def verify_gguf(
    gguf: str | Path,
    hf_model: str | Path,
    *,
    lora: str | Path | None = None,
    base: str | Path | None = None,
    messages: list[dict[str, str]] | None = None,
    n_tokens: int = 8,
    min_match: int = 4,
    strict: bool = True,
) -> Verification:
    """Greedy-decode ``messages`` with llama.cpp (``gguf`` + optional ``lora``) and with the HF model; compare.

    ``ok`` when the first ``min(min_match, len(hf tokens))`` tokens agree; with ``strict`` a mismatch raises.
    """
    from langchain_dod.chat_models import ChatGGUF
    from langchain_dod.prompts import decomposer_messages

    hf_model = Path(hf_model)
    messages = messages or decomposer_messages(PROBE_QUESTION)
    base_dir = _base_dir(hf_model, base) if _is_adapter(hf_model) else None
    hf_ids, tokenizer = _hf_greedy(hf_model, messages, n_tokens, base_dir)
    llm = ChatGGUF(
        model=str(gguf),
        lora_path=str(lora) if lora else None,
        max_tokens=n_tokens,
        temperature=0.0,
        n_ctx=2048,
    )
    gguf_text = llm.invoke(messages).content
    gguf_ids = tokenizer(gguf_text, add_special_tokens=False)["input_ids"]
    matched = 0
    for a, b in zip(hf_ids, gguf_ids, strict=False):
        if a != b:
            break
        matched += 1
    need = min(min_match, len(hf_ids))
    result = Verification(
        gguf=str(gguf),
        lora=str(lora) if lora else None,
        hf_text=tokenizer.decode(hf_ids),
        gguf_text=gguf_text,
        matched_tokens=matched,
        compared_tokens=min(len(hf_ids), len(gguf_ids)),
        ok=matched >= need,
    )
    if strict and not result.ok:
        raise TrainingError(
            f"Export check failed: llama.cpp ({gguf}{' + ' + str(lora) if lora else ''}) decodes {gguf_text!r} but "
            f"transformers decodes {result.hf_text!r} (first {matched} tokens agree, {need} needed). The GGUF does "
            "not reproduce the fine-tuned model; check the base and the converter version."
        )
    return result


def verification_dict(result: Verification) -> dict[str, Any]:
    """A JSON-ready dict."""
    return asdict(result)


def probe_messages(records: list[dict[str, Any]]) -> list[dict[str, str]] | None:
    """The prompt of the first SFT record (its messages without the reply): what the export is verified on."""
    return records[0]["messages"][:-1] if records else None


def export_and_verify(
    model_dir: Path,
    out: Path,
    settings: ExportConfig | Mapping[str, Any],
    probe: list[dict[str, str]] | None,
    base_gguf: str | None,
    base: str | Path | None = None,
) -> dict[str, Any]:
    """Export as ``settings`` say (the ``[export]`` table: kind, outtype, quantize, verify, ...), write ``verify.json``.

    What ``dod-train export`` and ``distill`` run. ``probe``: the chat to verify on (see :func:`probe_messages`);
    ``base_gguf``: the GGUF base an adapter is verified on (``sft`` records the one it started from).
    """
    cfg = (
        settings if isinstance(settings, ExportConfig) else with_settings(ExportConfig, None, dict(settings), "export")
    )
    kind, verify, tokens, need = cfg.kind, cfg.verify, cfg.probe_tokens, cfg.min_match
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"kind": kind}
    if kind == "adapter":
        adapter = export_adapter(model_dir, out / "adapter.gguf", base=base, outtype=cfg.outtype)
        result["adapter"] = str(adapter)
        result["adapter_bytes"] = adapter.stat().st_size
        if verify:
            if not base_gguf:
                raise TrainingError("Cannot verify the adapter: the base was not a GGUF. Set [export] verify = false.")
            result["verify"] = verification_dict(
                verify_gguf(
                    base_gguf,
                    model_dir,
                    lora=adapter,
                    base=base,
                    messages=probe,
                    n_tokens=tokens,
                    min_match=need,
                )
            )
    elif kind == "merged":
        outputs = export_merged(model_dir, out, base=base, quantizations=cfg.quantize)
        result.update({k: str(v) for k, v in outputs.items()})
        if verify:
            result["verify"] = verification_dict(
                verify_gguf(outputs["f16"], outputs["hf"], messages=probe, n_tokens=tokens, min_match=need)
            )
            result["verify_quantized"] = {
                q: verification_dict(
                    verify_gguf(
                        outputs[q],
                        outputs["hf"],
                        messages=probe,
                        n_tokens=tokens,
                        min_match=need,
                        strict=False,
                    )
                )
                for q in cfg.quantize
            }
    else:
        raise TrainingError(f"[export] kind must be 'adapter' or 'merged', got {kind!r}.")
    (out / "verify.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
