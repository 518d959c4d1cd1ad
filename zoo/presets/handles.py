"""Resolve a preset handle to a local zoo preset directory.

Handles:
    "all_minilm_l6_v2"             a catalog name; its sources are tried in order
    "hf://org/repo[@revision]"     a Hugging Face repo (zoo preset or raw checkpoint)
    "hf://org/repo[@rev]/file.pt"  one checkpoint file in a Hugging Face repo
    "pkg://python_package/sub/dir" files shipped inside an installed package
    "/some/dir", Path(...)         a local zoo preset or raw checkpoint

Raw checkpoints are converted once into the hub (`$ZOO_HOME`) and reused.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import time
from pathlib import Path

from zoo.core.errors import ConversionError, InputError, PresetError, PresetNotFoundError, ZooError
from zoo.families import FAMILIES
from zoo.presets import hub
from zoo.presets.catalog import catalog, unknown_name_message
from zoo.presets.formats import converter_for, detect_format
from zoo.utils.progress import download_bars

logger = logging.getLogger(__name__)

#: one part of a Hugging Face repo id (the Hub's own rule; no "--" or "..")
_HF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
#: how long `hf_unreachable` waits for the Hub, and trusts its answer
_PROBE_TIMEOUT_S, _PROBE_TTL_S = 5.0, 60.0
_probes: dict[str, tuple[float, str | None]] = {}

#: files never needed for conversion; skipped when downloading from the Hub
HF_IGNORE = ["*.msgpack", "*.ot", "*.onnx", "*.tflite", "tf_model.h5", "flax_model*",
             "rust_model*", "coreml/*", "onnx/*", "openvino/*", "*.mlmodel"]


def resolve(handle: str | os.PathLike) -> Path:
    """Return the directory of a ready zoo preset for `handle`.

    Example:

    >>> from zoo.presets import resolve
    >>> path = resolve("all_minilm_l6_v2")  # doctest: +SKIP

    Raises:
        PresetNotFoundError: nothing was found (the message lists what was tried).
        PresetError: something was found but it is broken or not convertible.
    """
    if isinstance(handle, os.PathLike):
        return _resolve_local(Path(handle))
    if not isinstance(handle, str) or not handle:
        raise InputError(
            f"A preset handle is a non-empty string or path, got {handle!r}. Fix: pass a "
            "preset name (zoo.presets.list() shows them), a folder, or an hf:// handle."
        )
    if handle.startswith("hf://"):
        return _resolve_hf(handle)
    if handle.startswith("pkg://"):
        return _resolve_pkg(handle)
    if hub.is_preset_name(handle) and (hub.presets_dir() / handle).is_dir():
        return _resolve_local(hub.presets_dir() / handle)  # written by `zoo convert --name`
    entries = catalog()
    if handle in entries:
        return _resolve_catalog(handle, entries[handle]["sources"])
    if os.path.exists(handle) or os.sep in handle or handle.startswith("."):
        return _resolve_local(Path(handle))
    raise PresetNotFoundError(unknown_name_message(handle))


def _resolve_catalog(name: str, sources: list[str]) -> Path:
    failures = []
    for source in sources:
        try:
            return resolve(source)
        except PresetNotFoundError as e:
            failures.append(f"  {source}: {e}")
    raise PresetNotFoundError(
        f"Preset {name!r} could not be found in any of its sources:\n"
        + "\n".join(failures)
        + "\nFix: install the package named above, or connect to the network (or fill "
        "the Hugging Face cache) for hf:// sources."
    )


def _fingerprint(path: Path) -> str:
    """Identify a local checkpoint's content cheaply (names, sizes, mtimes)."""
    digest = hashlib.sha256()
    root = path.parent if path.is_file() else path
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def existing_path(path: str | os.PathLike,
                  fix: str = "use a catalog name from zoo.presets.list()") -> Path:
    """`path` (with `~` expanded), checked to exist.

    Args:
        path: a local file or directory.
        fix: what else to pass, for the error message.

    Raises:
        PresetNotFoundError: it does not exist.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise PresetNotFoundError(f"{path} does not exist. Fix: check the path, or {fix}.")
    return path


def _resolve_local(path: Path, source: str | None = None, cache_source: str | None = None) -> Path:
    path = existing_path(path)
    fmt = detect_format(path)
    if fmt == "zoo":
        return path
    source = source or str(path.resolve())
    cache_source = cache_source or f"{source}#{_fingerprint(path)}"
    return convert_into_hub(path, fmt, source, cache_source)


def convert_into_hub(path: Path, fmt: str, source: str, cache_source: str) -> Path:
    """Convert the checkpoint at `path` into the hub once; return the preset dir."""
    target = hub.cached_preset_path(cache_source)
    if target.is_dir():
        return target
    convert = converter_for(path, fmt)
    logger.info("Converting %s into %s", source, target)
    try:
        with hub.hub_write(cache_source) as work:
            convert(path, work, source)
    except ZooError:
        raise
    except Exception as e:  # a converter bug or a malformed checkpoint
        raise ConversionError(
            f"Converting {source} failed: {type(e).__name__}: {e}. Nothing was "
            "written to the hub."
        ) from e
    return target


def pkg_path(handle: str) -> tuple[Path, str]:
    """`pkg://package/sub/path` -> (the path inside the installed package, its version).

    Raises:
        PresetError: the handle names no importable package.
        PresetNotFoundError: the package is not installed, or has no such path.
    """
    rest = handle[len("pkg://"):]
    package, _, sub = rest.partition("/")
    if not package or not all(part.isidentifier() for part in package.split(".")):
        raise PresetError(f"{handle!r} names no Python package. Fix: write "
                          "pkg://python_package/sub/path.")
    try:
        spec = importlib.util.find_spec(package)
    except ImportError:  # a dotted name whose parent package is missing
        spec = None
    if spec is None:
        from zoo.presets.packages import install_command

        raise PresetNotFoundError(
            f"Python package {package!r} is not installed (needed by {handle}). "
            f"Fix: {install_command(package)}"
        )
    roots = list(spec.submodule_search_locations or [])
    root = Path(roots[0]) if roots else Path(spec.origin).parent
    try:
        version = importlib.metadata.version(package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    path = root / sub
    if not path.exists():
        raise PresetNotFoundError(
            f"{handle}: package {package!r} (version {version}) has no {sub!r}. "
            "Fix: reinstall the package, or check the path."
        )
    return path, version


def _resolve_pkg(handle: str) -> Path:
    path, version = pkg_path(handle)
    return _resolve_local(path, source=handle,
                          cache_source=f"{handle}@{version}#{_fingerprint(path)}")


def parse_hf(handle: str) -> tuple[str, str | None]:
    """`hf://org/repo[@revision]` -> (repo_id, revision).

    Raises:
        PresetError: not `hf://org/repo`, or a name the Hub does not allow.
    """
    rest = handle[len("hf://"):]
    repo_id, _, revision = rest.partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_HF_NAME.fullmatch(p) and ".." not in p and "--" not in p
                                  for p in parts):
        raise PresetError(
            f"{handle!r} is not a Hugging Face handle. Fix: write hf://org/repo "
            "(optionally @revision)."
        )
    return repo_id, revision or None


def split_hf_file(handle: str) -> tuple[str, str | None]:
    """`hf://org/repo[@rev]/path/file` -> (`hf://org/repo[@rev]`, `path/file`);
    a handle without a file path gives (handle, None).

    Raises:
        PresetError: the file path has empty, `.` or `..` parts, or a backslash.
    """
    parts = handle[len("hf://"):].split("/", 2)
    if len(parts) < 3 or not parts[2]:
        return handle, None
    if "\\" in parts[2] or any(p in ("", ".", "..") for p in parts[2].split("/")):
        raise PresetError(f"{handle!r} names the file {parts[2]!r}, which is not a path inside "
                          "the repo. Fix: write hf://org/repo/path/to/file.pt.")
    return f"hf://{parts[0]}/{parts[1]}", parts[2]


def _resolve_hf(handle: str) -> Path:
    repo_handle, filename = split_hf_file(handle)
    repo_id, revision = parse_hf(repo_handle)
    cached = hub.cached_preset_path(handle)
    if cached.is_dir():
        return cached
    if filename is not None:
        local = _hf_file(handle, repo_id, revision, filename)
        return convert_into_hub(local, detect_format(local), handle, handle)
    local = _hf_snapshot(handle, repo_id, revision)
    fmt = detect_format(local)
    if fmt == "zoo":
        return local
    return convert_into_hub(local, fmt, handle, handle)


def hf_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be used now, or None when it answers.

    `HF_HUB_OFFLINE` is honoured (also when set after `huggingface_hub` was
    imported) without a request. Otherwise one request of at most a few seconds
    is made and its answer kept for a minute, so an offline machine fails at
    once instead of retrying every download for half a minute.
    """
    import huggingface_hub.constants

    if (huggingface_hub.constants.HF_HUB_OFFLINE
            or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}):
        return "HF_HUB_OFFLINE is set"
    endpoint = huggingface_hub.constants.ENDPOINT
    checked, reason = _probes.get(endpoint, (float("-inf"), None))
    if time.monotonic() - checked < _PROBE_TTL_S:
        return reason
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=_PROBE_TIMEOUT_S)
        reason = None
    except Exception as e:  # DNS, connection, TLS and proxy errors come in many types
        first_line = (str(e).splitlines() or [""])[0]
        reason = f"{endpoint} cannot be reached ({type(e).__name__}: {first_line})"
    _probes[endpoint] = (time.monotonic(), reason)
    return reason


def _hf_file(handle: str, repo_id: str, revision: str | None, filename: str) -> Path:
    """One file of a Hugging Face repo, from the cache, else from the network."""
    import huggingface_hub
    import huggingface_hub.constants
    import huggingface_hub.errors

    try:
        return Path(huggingface_hub.hf_hub_download(
            repo_id, filename, revision=revision, local_files_only=True))
    except (huggingface_hub.errors.LocalEntryNotFoundError, FileNotFoundError):
        pass
    reason = hf_unreachable()
    if reason is None:
        try:
            with download_bars():
                return Path(huggingface_hub.hf_hub_download(repo_id, filename,
                                                            revision=revision))
        except Exception as e:  # HTTP, connection and DNS errors come in many types
            reason = f"the download failed: {type(e).__name__}: {str(e).splitlines()[0]}"
    raise PresetNotFoundError(
        f"{handle} is not in the Hugging Face cache ({huggingface_hub.constants.HF_HUB_CACHE})"
        f" and {reason}. Fix: connect to the network, or set HF_HUB_CACHE/HF_HOME to a cache "
        "that holds the file, or pass a local path.")


def diffusers_files(files: list[str]) -> list[str]:
    """The files of a diffusers pipeline repo that zoo converts: the index,
    scheduler and tokenizer, each network's config and one weight file per
    network (safetensors before .bin; no fp16/EMA variants, no single-file
    checkpoints at the repo's root, which would be gigabytes more).

    Example:

    >>> diffusers_files(["model_index.json", "unet/config.json",
    ...     "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin",
    ...     "unet/diffusion_pytorch_model.fp16.safetensors", "v1-5-pruned.ckpt"])[-2:]
    ['unet/config.json', 'unet/diffusion_pytorch_model.safetensors']
    """
    allow = ["model_index.json", "scheduler/*", "tokenizer/*"]
    networks = [n for f in FAMILIES if f.diffusers for n in f.diffusers_networks]
    for component, stems in networks:
        candidates = [f"{component}/{stem}{ext}" for ext in (".safetensors", ".bin")
                      for stem in stems]
        pick = next((c for c in candidates if c in files), None)
        if f"{component}/config.json" in files:
            allow.append(f"{component}/config.json")
        if pick is not None:
            allow.append(pick)
    return allow


def _hf_snapshot(handle: str, repo_id: str, revision: str | None) -> Path:
    """The repo's files from the Hugging Face cache, else from the network."""
    import huggingface_hub
    import huggingface_hub.constants
    import huggingface_hub.errors

    try:
        return Path(huggingface_hub.snapshot_download(
            repo_id, revision=revision, local_files_only=True))
    except (huggingface_hub.errors.LocalEntryNotFoundError, FileNotFoundError):
        pass
    cache = huggingface_hub.constants.HF_HUB_CACHE
    reason = hf_unreachable()
    if reason is None:
        try:
            api = huggingface_hub.HfApi()
            files = api.list_repo_files(repo_id, revision=revision)
            if "model_index.json" in files:  # a diffusers pipeline: only what zoo reads
                patterns = {"allow_patterns": diffusers_files(files)}
            else:
                ignore = list(HF_IGNORE)
                if any(f.endswith(".safetensors") for f in files):
                    ignore += ["*.bin", "*.pt", "*.ckpt"]
                patterns = {"ignore_patterns": ignore}
            with download_bars():
                return Path(huggingface_hub.snapshot_download(repo_id, revision=revision,
                                                              **patterns))
        except Exception as e:  # HTTP, connection and DNS errors come in many types
            reason = f"the download failed: {type(e).__name__}: {str(e).splitlines()[0]}"
    raise PresetNotFoundError(
        f"{handle} is not in the Hugging Face cache ({cache}) and {reason}. Fix: "
        "connect to the network, or set HF_HUB_CACHE/HF_HOME to a cache that holds "
        "the repo, or pass a local directory."
    )
