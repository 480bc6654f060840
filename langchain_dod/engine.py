"""The llama.cpp core of the local models, without LangChain: load a GGUF once, render a chat prompt, generate.

:class:`~langchain_dod.chat_models.ChatGGUF` (the LangChain chat model) and the lean ``dod decompose`` path
(:func:`langchain_dod.decomposition.decompose_gguf`) both run through these functions, so loading, the chat
template, the context-window check, grammars, stops, the finite-logits guard and the per-model lock exist once.

* a model loads lazily, once per process per (file, adapter, settings), and every call on a loaded model holds
  that model's lock, because ``llama_cpp.Llama`` is not thread-safe;
* the chat template comes from the GGUF; the prompt is tokenised here so a prompt longer than the context window
  fails with an error naming the limit, before llama.cpp sees it;
* consecutive calls that share a prompt prefix (a system prompt) reuse llama.cpp's KV cache: ``Llama`` keeps the
  last evaluated tokens and only evaluates what differs.

Importing this module costs numpy and the GGUF checker; ``llama_cpp`` is imported at the first load, and
``langchain_core`` never.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import json
import math
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from langchain_dod.gguf_file import check_finite, inspect_gguf
from langchain_dod.models import resolve

__all__ = [
    "DEFAULTS",
    "Completion",
    "ContextWindowExceededError",
    "ModelLoadError",
    "NonFiniteLogitsError",
    "check_merge",
    "check_range",
    "complete",
    "completion_args",
    "count_tokens",
    "llama_params",
    "load",
    "locked",
    "physical_cores",
    "render",
    "run",
    "warm_prefix",
]

DEFAULTS: dict[str, Any] = {
    "n_ctx": 4096,
    "n_batch": 512,
    "lora_scale": 1.0,
    "temperature": 0.0,
    "top_p": 0.95,
    "top_k": 40,
    "repeat_penalty": 1.0,
    "max_tokens": 512,
}
"""Default settings of a local model: ``ChatGGUF``'s field defaults and the lean CLI path's."""


class ContextWindowExceededError(ValueError):
    """The prompt does not fit in the model's context window."""


class ModelLoadError(RuntimeError):
    """llama.cpp could not load the model or the adapter."""


class NonFiniteLogitsError(RuntimeError):
    """The model computed NaN or Inf scores: its weights are damaged or overflow."""


class _FiniteLogits:
    """A llama.cpp logits processor that keeps NaN/Inf scores away from the grammar sampler.

    Finite weights can still overflow in the forward pass (every scale of a layer at 6e4, say); the grammar
    sampler then accepts a token its grammar forbids and calls abort(). An exception raised here would be
    swallowed by the ctypes callback, so the processor only notes the fact and hands on zeros (any allowed token
    will do); ``ChatGGUF._run`` raises after the step. About 20 µs per token for a 49k vocabulary.
    """

    def __init__(self) -> None:
        self.tripped = False

    def __call__(self, input_ids: Any, scores: np.ndarray) -> np.ndarray:
        if np.isfinite(scores).all():
            return scores
        self.tripped = True
        return np.zeros_like(scores)


class _GreedyGrammar:
    """A llama.cpp logits processor that enforces a grammar on greedy decoding, checking one token per step.

    llama-cpp-python's grammar sampler tests every token of the vocabulary (49k for SmolLM2) at every step:
    about 10 ms a token on one thread, a third of a constrained step for a 135M model. Greedy decoding picks
    the highest score, so only that token needs the grammar: when the grammar accepts it, the scores are left
    as they are (the greedy sampler picks it); only when it is rejected are the grammar's rejections applied
    to the whole vocabulary, as the full grammar sampler would. The chosen token is the same either way, so the
    output is identical.

    Exact only where the token llama.cpp picks is the argmax of the scores handed back: temperature 0, no
    repeat/frequency/presence penalty (those samplers run after the logits processors) and no processor after
    this one. ``completion_args`` uses it only then. The tokens appended to ``input_ids`` since the last call
    (the ones chosen) are accepted into the grammar at the start of the next call, since llama.cpp tells a
    logits processor nothing else.
    """

    def __init__(self, llm: Any, gbnf: str, prompt_length: int) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._vocab = llm._model.vocab
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            raise ValueError(
                "llama.cpp cannot parse the grammar built from this JSON schema. Simplify the schema (plain "
                "objects, arrays, strings, numbers, enums)."
            )
        self._sampler = sampler
        # the sampler is C memory: free it with this object, whichever way the generation ended
        weakref.finalize(self, llama_cpp.llama_sampler_free, sampler)
        self._prompt_length = prompt_length
        self._accepted = prompt_length
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)
        self._all: Any = None  # the whole vocabulary's token data, allocated at the first rejection
        self.steps = 0
        self.rejected = 0
        """Steps, and steps whose greedy token the grammar rejected (those cost a full-vocabulary check)."""

    def __call__(self, input_ids: Any, scores: np.ndarray) -> np.ndarray:
        llama_cpp = self._llama_cpp
        if len(input_ids) < self._accepted:  # the same arguments run again: start the grammar over
            llama_cpp.llama_sampler_reset(self._sampler)
            self._accepted = self._prompt_length
        for token in input_ids[self._accepted :]:
            llama_cpp.llama_sampler_accept(self._sampler, int(token))
        self._accepted = len(input_ids)
        self.steps += 1
        best = int(np.argmax(scores))  # the first of equal maxima, as llama.cpp's greedy sampler takes
        self._one[0] = llama_cpp.llama_token_data(id=best, logit=0.0, p=0.0)
        self._one_array.selected = -1
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(self._one_array))
        if self._one[0].logit != -math.inf:
            return scores
        self.rejected += 1
        if self._all is None:
            self._all = (llama_cpp.llama_token_data * len(scores))()
            self._all_view = np.frombuffer(
                self._all, dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
            )
            self._ids = np.arange(len(scores), dtype=np.intc)
        view = self._all_view
        view["id"] = self._ids
        view["logit"] = scores
        array = llama_cpp.llama_token_data_array(data=self._all, size=len(scores), selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(array))
        scores[view["id"][view["logit"] == -np.inf]] = -np.inf
        return scores


def physical_cores() -> int:
    """Physical cores available to this process: llama.cpp decoding slows down on hyperthreads."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        allowed = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        physical = core = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                physical = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
                cores.add((physical, core))
    except OSError:
        pass
    return max(1, min(allowed, len(cores) or allowed))


@dataclass
class _Loaded:
    """One loaded ``Llama`` with the lock that serialises every call on it."""

    llm: Any
    lock: threading.Lock
    render: Callable[[list[dict[str, Any]]], tuple[list[int], list[str]]]
    n_ctx: int
    load_seconds: float
    key: tuple[Any, ...] = ()
    """What was loaded: (model path, adapter path, settings); names the cached prompt states."""


_LOADED: dict[tuple[Any, ...], _Loaded] = {}
_LOAD_LOCK = threading.Lock()


_EXIT_WAIT_S = 5.0  # the longest exit waits for a model still being loaded by another thread


@atexit.register
def _free_loaded() -> None:
    """Free the loaded models at exit, while ``llama_cpp`` is still whole.

    Left to interpreter shutdown, ``Llama.__del__`` can run after ``llama_cpp``'s functions are gone and prints
    "Exception ignored ... TypeError: 'NoneType' object is not callable" (seen at the end of the test suite). A
    model still in use by another thread is left alone rather than freed under it, and so is everything while
    another thread is still loading a model: exiting must never wait on a lock for long.
    """
    if not _LOAD_LOCK.acquire(timeout=_EXIT_WAIT_S):
        return
    try:
        for key, loaded in list(_LOADED.items()):
            if loaded.lock.acquire(timeout=1.0):
                try:
                    loaded.llm.close()
                finally:
                    loaded.lock.release()
                del _LOADED[key]
    finally:
        _LOAD_LOCK.release()


def _load(key: tuple[Any, ...], path: Path, lora: Path | None, params: dict[str, Any]) -> tuple[_Loaded, bool]:
    """Load (once per process) the model described by ``key``; also say whether this call loaded it."""
    with _LOAD_LOCK:
        if key in _LOADED:
            return _LOADED[key], False
        info = inspect_gguf(path)
        if info.file_type == "adapter":
            raise ModelLoadError(f"{path} is a LoRA adapter, not a model. Pass it as lora_path= with its base.")
        if lora is not None:
            _check_adapter(lora, info)
        # NaN/Inf weights pass llama.cpp's own load, then abort() the process at the first grammar-constrained
        # decode; a Python error here instead costs ~30 ms for a 100 MB model, once per file
        check_finite(path)
        if lora is not None:
            check_finite(lora)
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        started = time.perf_counter()
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                lora_path=str(lora) if lora else None,
                verbose=False,
                **params,
            )
        except (ValueError, RuntimeError) as err:
            what = f"adapter {lora} on base {path}" if lora else f"model {path}"
            raise ModelLoadError(
                f"llama.cpp could not load the {what}: {err}. Check that the file is a complete GGUF for this "
                "llama.cpp version (and that an adapter was exported from this base)."
            ) from err
        seconds = time.perf_counter() - started
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelLoadError(
                f"{path} has no chat template (tokenizer.chat_template) and cannot be used as a chat model. "
                "Use an instruct/chat GGUF, or re-export it with its tokenizer's template."
            )
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(llm.token_eos()),
            bos_token=llm._model.token_get_text(llm.token_bos()),
            add_generation_prompt=True,
        )

        def render(messages: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
            result = formatter(messages=messages)  # type: ignore[arg-type]  # plain dicts, not llama_cpp's TypedDicts
            tokens = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
            stops = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
            return tokens, stops

        loaded = _Loaded(
            llm=llm, lock=threading.Lock(), render=render, n_ctx=llm.n_ctx(), load_seconds=seconds, key=key
        )
        _LOADED[key] = loaded
        return loaded, True


def _check_adapter(lora: Path, base: Any) -> None:
    """Refuse an adapter that is not a LoRA GGUF or does not fit the base, before llama.cpp sees it.

    The shape rules are llama.cpp's (``llama-adapter.cpp``): every ``<tensor>.lora_a``/``.lora_b`` pair
    targets a base tensor that exists; in ggml order ``a`` is (in, rank) and ``b`` is (rank, out), where the
    base weight is (in, out).
    """
    adapter = inspect_gguf(lora)
    if adapter.file_type != "adapter" or adapter.adapter_type != "lora":
        raise ModelLoadError(
            f"{lora} is not a GGUF LoRA adapter (general.type={adapter.file_type!r}, adapter.type="
            f"{adapter.adapter_type!r}). Pass a model as model= and a LoRA exported for it as lora_path=."
        )
    if adapter.architecture != base.architecture:
        raise ModelLoadError(
            f"Adapter {lora} was made for a {adapter.architecture!r} model but the base {base.path} is "
            f"{base.architecture!r}. Use the base the adapter was trained on."
        )
    base_shapes = dict(base.tensor_shapes)
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, shape in adapter.tensor_shapes:
        stem, dot, half = name.rpartition(".lora_")
        if not dot or half not in ("a", "b"):
            raise ModelLoadError(f"Adapter {lora} has a tensor {name!r} that is not a LoRA half (.lora_a/.lora_b).")
        pairs.setdefault(stem, {})[half] = shape
    if not pairs:
        raise ModelLoadError(f"Adapter {lora} holds no LoRA tensors.")
    hint = "Use the base the adapter was trained on."
    for stem, halves in pairs.items():
        if stem not in base_shapes:
            raise ModelLoadError(f"Adapter {lora} targets {stem}, which the base {base.path} does not have. {hint}")
        if set(halves) != {"a", "b"}:
            raise ModelLoadError(f"Adapter {lora} has only half of the LoRA pair for {stem}. Export it again.")
        a, b, target = halves["a"], halves["b"], base_shapes[stem]
        if len(a) != 2 or len(b) != 2 or len(target) != 2:
            raise ModelLoadError(f"Adapter {lora}: {stem} is not a matrix pair (a {a}, b {b}, base {target}).")
        if a[0] != target[0] or b[1] != target[1]:
            raise ModelLoadError(
                f"Adapter {lora} does not fit base {base.path}: for {stem} it maps {a[0]} -> {b[1]} but the base "
                f"maps {target[0]} -> {target[1]}. {hint}"
            )
        if a[1] != b[0]:
            raise ModelLoadError(
                f"Adapter {lora} is inconsistent: {stem}.lora_a has rank {a[1]} but .lora_b has rank {b[0]}. "
                "Export it again."
            )


def _reused_prefix(llm: Any, prompt: list[int]) -> int:
    """Prompt tokens llama.cpp will not evaluate again: the common prefix with what the context holds.

    Mirrors ``Llama.generate`` (llama-cpp-python 0.3.x): the longest common prefix of the evaluated tokens
    and the new prompt is kept; when the whole prompt is a prefix, one token is evaluated again to refresh
    the logits, unless the context holds exactly this prompt with its logits still live.
    """
    held = llm.input_ids[: llm.n_tokens]
    same = 0
    for a, b in zip(held, prompt, strict=False):  # the prompt may be longer than what is held
        if a != b:
            break
        same += 1
    if same == len(prompt) and same > 0:
        # the very same prompt with live logits is not evaluated at all; otherwise one token is replayed
        exact = llm.n_tokens == len(prompt) and not getattr(llm, "_requires_eval", True)
        return same if exact else same - 1
    return same


#: Allowed values of the numeric settings, ``(low, high, low_is_exclusive)``. The bounds are wide: they refuse what
#: llama.cpp cannot use, not unusual choices.
_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "lora_scale": (-100.0, 100.0, False),
    "temperature": (0.0, 100.0, False),
    "top_p": (0.0, 1.0, False),
    "top_k": (0, None, False),
    "repeat_penalty": (0.0, 100.0, True),
    "n_ctx": (0, 1 << 24, False),  # 0 means the GGUF's own training context
    "n_threads": (1, 4096, False),
    "n_batch": (1, None, False),
    "max_tokens": (1, None, False),
    "timeout": (0.0, None, True),
}

_MAY_BE_NONE = {
    "n_threads": " (or None: one per physical core)",
    "max_tokens": " (or None: up to the context window)",
    "timeout": " (or None: no limit)",
}


def check_range(name: str, value: Any) -> None:
    """Raise a ``ValueError`` naming ``name`` and its allowed range unless ``value`` is a finite number in it."""
    if value is None and name in _MAY_BE_NONE:
        return
    low, high, exclusive = _RANGES[name]
    kind = "an integer" if isinstance(low, int) else "a number"
    bounds = f"{'above' if exclusive else 'at least'} {low}" + (f" and at most {high}" if high is not None else "")
    ok = (
        isinstance(value, int if isinstance(low, int) else (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if exclusive else value >= low)
        and (high is None or value <= high)
    )
    if not ok:
        raise ValueError(f"{name} must be {kind} {bounds}{_MAY_BE_NONE.get(name, '')}; got {value!r}.")


def check_merge(merge_lora: bool, lora_path: str | None, lora_scale: float) -> None:
    """Refuse ``merge_lora`` with a ``lora_scale`` other than 1: the cached merge holds the adapter at scale 1."""
    if merge_lora and lora_path and lora_scale != 1.0:
        raise ValueError(
            f"merge_lora=True merges the adapter at scale 1, but lora_scale={lora_scale}. Drop merge_lora to apply "
            "the adapter at run time at another scale."
        )


def _text(content: Any) -> str:
    """Flatten OpenAI-style content blocks to text (local models here are text-only)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
    return "".join(parts)


def llama_params(
    *,
    n_ctx: int = DEFAULTS["n_ctx"],
    n_threads: int | None = None,
    n_batch: int = DEFAULTS["n_batch"],
    lora_scale: float = DEFAULTS["lora_scale"],
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The keyword arguments for ``llama_cpp.Llama`` (``n_threads=None``: one per physical core)."""
    return {
        "n_ctx": n_ctx,
        "n_threads": n_threads or physical_cores(),
        "n_threads_batch": n_threads or physical_cores(),
        "n_batch": n_batch,
        "lora_scale": lora_scale,
        **(model_kwargs or {}),
    }


def load(
    model: str, lora_path: str | None, params: dict[str, Any], *, merge_lora: bool = False
) -> tuple[_Loaded, bool]:
    """Resolve ``model`` and load it with ``lora_path`` (once per process); also say whether this call loaded it.

    ``merge_lora``: load the adapter merged into the base (:func:`langchain_dod.merge.merged_gguf`, made once and
    cached) instead of applying it at run time; the merged file then names the loaded model, so it never shares
    a loaded model with the runtime-adapter path.
    """
    path = resolve(model).resolve()
    lora = Path(lora_path).expanduser().resolve() if lora_path else None
    if lora is not None and not lora.is_file():
        raise ModelLoadError(f"LoRA adapter not found: {lora}. Check lora_path.")
    if lora is not None and merge_lora:
        check_merge(merge_lora, lora_path, params.get("lora_scale", DEFAULTS["lora_scale"]))
        path, lora = _merged(path, lora), None
    key = (str(path), str(lora) if lora else None, tuple(sorted((k, repr(v)) for k, v in params.items())))
    return _load(key, path, lora, params)


#: merged files found this process, per (base, adapter) and their stats: ``merged_gguf`` hashes the adapter and
#: takes a file lock, too much to repeat on every call of a ``ChatGGUF`` (each call goes through :func:`load`)
_MERGED: dict[tuple[Any, ...], Path] = {}


def _merged(base: Path, lora: Path) -> Path:
    """The cached merge of ``lora`` into ``base``, checked like a runtime adapter first (same errors)."""
    from langchain_dod.merge import MergeError, merged_gguf, merged_path
    from langchain_dod.models import cache_dir

    stats = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in (base, lora))
    key = (str(base), str(lora), stats, str(cache_dir()))
    if (known := _MERGED.get(key)) is not None and known.is_file():
        return known
    # a merge already cached was made from these very bytes (its name holds the adapter's sha256) after the checks
    # below passed: a cold start skips them (~0.1-0.2 s); merged_gguf still checks the file itself
    if not merged_path(base, lora).is_file():
        info = inspect_gguf(base)
        if info.file_type == "adapter":
            raise ModelLoadError(f"{base} is a LoRA adapter, not a model. Pass it as lora_path= with its base.")
        _check_adapter(lora, info)
        check_finite(lora)
    with _LOAD_LOCK:  # one merge per process at a time; merged_gguf's file lock covers other processes
        try:
            merged = merged_gguf(base, lora)
        except MergeError as err:
            raise ModelLoadError(
                f"Could not merge adapter {lora} into {base}: {err} Apply it at run time instead (merge_lora=False)."
            ) from err
        except OSError as err:  # the cache is not writable, or the disk is full
            raise ModelLoadError(
                f"Could not write the merged model into {cache_dir() / 'merged'} ({err}). Set DOD_CACHE_DIR to a "
                "writable folder with ~150 MB free, or apply the adapter at run time: merge_lora=False (for the "
                "default decomposer DOD_DECOMPOSER_MERGE=0, or dod --no-merge-adapter)."
            ) from err
    _MERGED[key] = merged
    return merged


@contextlib.contextmanager
def locked(loaded: _Loaded, deadline: float | None, *, model: str = "", timeout: float | None = None) -> Iterator[None]:
    """Hold the model's lock, waiting at most until ``deadline`` (``time.monotonic()``)."""
    wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
    if not loaded.lock.acquire(timeout=wait):
        raise TimeoutError(
            f"ChatGGUF timed out after timeout={timeout}s waiting for {model}, which is busy with "
            "other calls. Raise timeout or lower the batch's max_concurrency."
        )
    try:
        yield
    finally:
        loaded.lock.release()


def render(
    loaded: _Loaded,
    messages: list[dict[str, Any]],
    deadline: float | None = None,
    *,
    model: str = "",
    timeout: float | None = None,
) -> tuple[list[int], list[str]]:
    """The prompt tokens and the template's stop strings for OpenAI-style ``messages`` (content may be blocks)."""
    if not messages:
        raise ValueError("ChatGGUF got an empty message list; pass at least one message.")
    dicts = [{"role": m["role"], "content": _text(m.get("content"))} for m in messages]
    with locked(loaded, deadline, model=model, timeout=timeout):
        return loaded.render(dicts)


def completion_args(
    loaded: _Loaded,
    tokens: list[int],
    template_stops: list[str],
    *,
    model: str,
    max_tokens: int | None = DEFAULTS["max_tokens"],
    temperature: float = DEFAULTS["temperature"],
    top_p: float = DEFAULTS["top_p"],
    top_k: int = DEFAULTS["top_k"],
    repeat_penalty: float = DEFAULTS["repeat_penalty"],
    seed: int | None = None,
    stop: list[str] | None = None,
    json_schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The arguments of ``Llama.create_completion`` for this prompt; refuses a prompt that leaves no room."""
    room = loaded.n_ctx - len(tokens)
    if room < 1 or (max_tokens is not None and room < min(max_tokens, 16)):
        raise ContextWindowExceededError(
            f"The prompt is {len(tokens)} tokens but the context window of {model} is n_ctx="
            f"{loaded.n_ctx} tokens, which leaves no room to answer. Shorten the input, or create the model "
            f"with a larger n_ctx (its GGUF allows up to {loaded.llm._model.n_ctx_train()})."
        )
    max_tokens = room if max_tokens is None else min(max_tokens, room)
    grammar = None
    processors: list[Any] = [_FiniteLogits()]
    if json_schema is not None and temperature == 0 and repeat_penalty == 1:
        # greedy and unpenalised: the grammar needs checking against one token per step, not the vocabulary;
        # llama.cpp parses the GBNF once, in the sampler (a LlamaGrammar would parse it again, ~10-30 ms)
        processors.append(_GreedyGrammar(loaded.llm, _gbnf(json_schema), len(tokens)))
    elif json_schema is not None:
        grammar = _grammar(json_schema)
    stops = [*(stop or []), *template_stops]
    return {
        "prompt": tokens,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "repeat_penalty": repeat_penalty,
        "seed": seed,
        "stop": stops or None,
        "grammar": grammar,
        "logits_processor": processors,
    }


def run(
    loaded: _Loaded,
    args: dict[str, Any],
    *,
    model: str = "",
    timeout: float | None = None,
    cancelled: threading.Event | None = None,
    deadline: float | None = None,
    cached: list[int] | None = None,
) -> Iterator[tuple[str, str | None]]:
    """Yield ``(text, finish_reason)`` per llama.cpp step while holding the model's lock.

    ``cached`` receives the number of prompt tokens whose KV cache is reused from the previous call.
    """
    with locked(loaded, deadline, model=model, timeout=timeout):
        if cached is not None:
            cached.append(_reused_prefix(loaded.llm, args["prompt"]))
        guard = args["logits_processor"][0]
        for chunk in loaded.llm.create_completion(stream=True, **args):
            if guard.tripped:
                raise NonFiniteLogitsError(
                    f"{model} computed NaN or Inf scores (its weights are finite but overflow, or the "
                    "adapter/lora_scale pushes them there); its output would be garbage. Use an undamaged "
                    "model file, or re-export the model or adapter."
                )
            choice = chunk["choices"][0]
            yield choice["text"], choice.get("finish_reason")
            if cancelled is not None and cancelled.is_set():
                return
            if deadline is not None and time.monotonic() > deadline and choice.get("finish_reason") is None:
                raise TimeoutError(
                    f"ChatGGUF call exceeded timeout={timeout}s while generating. Raise timeout or lower max_tokens."
                )


def count_tokens(loaded: _Loaded, text: str) -> int:
    """Tokens of ``text`` under the model's own tokenizer (special tokens recognised, no BOS)."""
    if not text:
        return 0
    with loaded.lock:
        return len(loaded.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))


@dataclass
class Completion:
    """One finished generation: the text and what it cost."""

    text: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    seconds: float


def complete(
    loaded: _Loaded,
    messages: list[dict[str, Any]],
    *,
    model: str,
    timeout: float | None = None,
    **generation: Any,
) -> Completion:
    """Render ``messages``, generate to the end and count the tokens (``generation``: :func:`completion_args`'s)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    tokens, template_stops = render(loaded, messages, deadline, model=model, timeout=timeout)
    args = completion_args(loaded, tokens, template_stops, model=model, **generation)
    started = time.perf_counter()
    text: list[str] = []
    finish: str | None = None
    cached: list[int] = []
    for piece, finish_reason in run(loaded, args, model=model, timeout=timeout, deadline=deadline, cached=cached):
        finish = finish_reason or finish
        text.append(piece)
    full = "".join(text)
    return Completion(
        text=full,
        finish_reason=finish or "stop",
        input_tokens=len(tokens),
        output_tokens=count_tokens(loaded, full),
        cached_tokens=cached[0] if cached else 0,
        seconds=round(time.perf_counter() - started, 4),
    )


def _prefix_file(loaded: _Loaded, prefix: list[int], folder: Path) -> Path:
    """The cache file of ``prefix``'s state: named by the model and adapter files, the settings and the tokens."""
    import llama_cpp

    files = [Path(p) for p in loaded.key[:2] if p]
    identity = (loaded.key, [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files], llama_cpp.__version__)
    digest = hashlib.sha256(repr((identity, prefix)).encode()).hexdigest()[:32]
    return folder / f"{Path(loaded.key[0]).stem}-{len(prefix)}-{digest}.kv"


def warm_prefix(loaded: _Loaded, prefix: list[int], folder: Path | None = None) -> str:
    """Make a freshly loaded model's KV cache hold ``prefix`` (a fixed system prompt), from disk when cached.

    A new process otherwise evaluates the whole system prompt before the first question (most of a cold
    ``dod decompose``). The state of sequence 0 after ``prefix`` (its KV cells, ~23 KB per token for SmolLM2-135M) is
    written once to ``folder`` (``cache_dir()/prompt-states``) and read back by later processes; the tokens stored
    with it must equal ``prefix``. A model that already holds other tokens is left alone (in-process prefix reuse
    does the rest). Writes go to a temporary name and are renamed into place, so two processes filling the cache at
    once both succeed; a file that does not load is removed with a warning and rebuilt.

    Returns how the prefix got there: ``memory``, ``disk``, ``computed`` or ``skipped`` (the model holds other
    tokens).
    """
    import llama_cpp

    from langchain_dod.models import cache_dir

    llm, n = loaded.llm, len(prefix)
    with loaded.lock:
        if llm.n_tokens >= n and list(llm.input_ids[:n]) == prefix:
            return "memory"
        if llm.n_tokens or not n:
            return "skipped"
        path = _prefix_file(loaded, prefix, folder or cache_dir() / "prompt-states")
        if path.is_file():
            tokens, count = (llama_cpp.llama_token * n)(), ctypes.c_size_t(0)
            read = llama_cpp.llama_state_seq_load_file(
                llm._ctx.ctx, os.fsencode(path), 0, tokens, n, ctypes.byref(count)
            )
            if read and count.value == n and list(tokens) == prefix:
                llm.input_ids[:n] = prefix
                llm.n_tokens = n
                return "disk"
            llm._ctx.kv_cache_clear()
            llm.reset()
            warnings.warn(f"Rebuilding the cached prompt state {path}: it does not load.", stacklevel=2)
            path.unlink(missing_ok=True)
        llm.eval(prefix)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            if llama_cpp.llama_state_seq_save_file(
                llm._ctx.ctx, os.fsencode(tmp), 0, (llama_cpp.llama_token * n)(*prefix), n
            ):
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return "computed"


#: llama-cpp-python's schema converter lets a JSON string hold raw control characters (a newline, say), which
#: strict JSON parsers reject; llama.cpp's own converter excludes them. We use the latter's rule.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def _gbnf(schema: dict[str, Any]) -> str:
    """The GBNF text that enforces a JSON schema (a Python conversion; llama.cpp parses it later)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not isinstance(schema, dict):
        raise ValueError(f"json_schema must be a dict, got {type(schema).__name__}")
    try:
        return json_schema_to_gbnf(json.dumps(schema)).replace(_LOOSE_CHAR, _STRICT_CHAR)
    except Exception as err:
        raise _unusable(err) from err


def _grammar(schema: dict[str, Any]) -> Any:
    """Build a llama.cpp grammar from a JSON schema; an unusable schema is an error, never silently ignored."""
    from llama_cpp import LlamaGrammar

    gbnf = _gbnf(schema)
    try:
        return LlamaGrammar.from_string(gbnf, verbose=False)
    except Exception as err:
        raise _unusable(err) from err


def _unusable(err: Exception) -> ValueError:
    return ValueError(
        f"llama.cpp cannot build a grammar from this JSON schema ({type(err).__name__}: {err}). Simplify it "
        "(plain objects, arrays, strings, numbers, enums)."
    )
