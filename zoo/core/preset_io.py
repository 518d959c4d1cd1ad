"""The zoo preset directory: writing it atomically, reading it safely.

A preset directory holds:

    config.json          the backbone (serialized Keras object)
    model.weights.h5     backbone weights (sharded above a size limit)
    tokenizer.json       the tokenizer; its vocabulary lives in assets/tokenizer/
    preprocessor.json    the preprocessor (without its tokenizer)
    task.json            the task head (without backbone and preprocessor)
    task.weights.h5      the head's weights only
    metadata.json        versions, parameter count, source, sha256 of every file

`metadata.json` is written last and records the sha256 of every other file
(`files`, keyed by path relative to the preset, e.g.
`assets/tokenizer/vocabulary.txt`). Each loader checks the files it reads
just before reading them (weights, JSON files, assets), so a truncated
download, a half-copied file or an edited config or vocabulary is caught with
a clear error instead of loading garbage; every file is hashed once per load,
streaming, and not again while it stays unchanged (`zoo.core.verified`). Presets of format version 1 (written before assets were hashed)
still load: their recorded files are checked, their unrecorded assets are not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import keras

import zoo
from zoo.core import preset_handlers, processes, verified, weights_io
from zoo.core.errors import PresetError, ZooError
from zoo.utils.atomic import atomic_directory

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
TOKENIZER_FILE = "tokenizer.json"
PREPROCESSOR_FILE = "preprocessor.json"
TASK_FILE = "task.json"
ASSETS_DIR = "assets"
BACKBONE_WEIGHTS = "model"
TASK_WEIGHTS = "task"
#: 2: every file is hashed, assets included (1: JSON and weight files only)
PRESET_FORMAT_VERSION = 2
#: errors a library raises on a malformed file or config (wrapped in PresetError)
_LIBRARY_ERRORS = (OSError, KeyError, IndexError, TypeError, ValueError, RuntimeError)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def serialize(obj: Any, drop: tuple[str, ...] = (), dtype: str | None = None) -> dict:
    """Serialize a zoo object to a JSON-able dict, leaving out `drop` keys;
    `dtype`: the dtype policy to record instead of the object's own (a
    quantized model's `DTypePolicyMap` keeps its quantized layers, computing
    in `dtype`)."""
    data = keras.saving.serialize_keras_object(obj)
    config = data["config"] = {k: v for k, v in data["config"].items() if k not in drop}
    if dtype is not None and "dtype" in config:
        recorded = config["dtype"]
        if isinstance(recorded, dict) and recorded.get("class_name") == "DTypePolicyMap":
            recorded["config"]["default_policy"] = dtype
            for policy in recorded["config"]["policy_map"].values():
                if isinstance(policy, dict) and "source_name" in policy.get("config", {}):
                    policy["config"]["source_name"] = dtype
        else:
            config["dtype"] = keras.dtype_policies.serialize(keras.dtype_policies.get(dtype))
    return data


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def repair_hint(directory: Path, meta: Mapping | None = None) -> str:
    """The "Fix: ..." sentence for a broken preset: how to get an intact copy.

    A preset in the hub is deleted and fetched again (`zoo pull NAME` when its
    source is a catalog entry's); a user's own folder is saved again.

    Args:
        directory: the broken preset.
        meta: its metadata when already read (else read here, if it can be).
    """
    directory = Path(directory)
    if meta is None:
        try:  # the hint must not fail on the very damage it reports
            meta = json.loads((directory / METADATA_FILE).read_bytes())
        except (OSError, ValueError):
            meta = None
    source = meta.get("source") if isinstance(meta, Mapping) else None
    source = source if isinstance(source, str) and source else None
    hint = preset_handlers.hub_hint(directory, source)
    if hint:
        return hint
    where = f", or fetch it again from {source}" if source else ""
    return ("Fix: save the preset again with save_to_preset() into a new or empty "
            f"directory{where}.")


def _safe_name(directory: Path, name: str) -> Path:
    """`directory / name`, refusing names that point outside the preset."""
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts or name.startswith("~"):
        raise PresetError(
            f"{directory} names the file {name!r}, which is outside the preset. "
            f"{repair_hint(directory)}"
        )
    return Path(directory) / name


def _recorded_digest(directory: Path, name: str, meta: Mapping) -> str | None:
    """The sha256 metadata.json records for `name`; None only for the assets
    of a format-1 preset (written before assets were hashed)."""
    expected = meta["files"].get(name)
    legacy_asset = meta.get("format_version", 1) < 2 and name.startswith(f"{ASSETS_DIR}/")
    if expected is None and not legacy_asset:
        raise PresetError(
            f"{name} in {directory} is not listed in {METADATA_FILE}, so its integrity "
            f"cannot be checked. {repair_hint(directory, meta)}"
        )
    return expected


def _check_digest(directory: Path, name: str, actual: str, expected: str,
                  meta: Mapping) -> None:
    if actual != expected:
        raise PresetError(
            f"{Path(directory) / name} is corrupt or truncated, or was edited: sha256 "
            f"{actual[:12]}... does not match {expected[:12]}... recorded in "
            f"{METADATA_FILE}. {repair_hint(directory, meta)}"
        )


def read_json(directory: Path, name: str) -> dict:
    """Read the JSON object `directory/name`, checked against metadata.json.

    The file is read once: its bytes are parsed, hashed and compared with
    the sha256 metadata.json records.

    Raises:
        PresetError: the file is missing, changed since it was written, not
            valid JSON, or not a JSON object; the message says how to fix it.
    """
    directory = Path(directory)
    path = _safe_name(directory, name)
    if not path.is_file():
        raise PresetError(
            f"{directory} is missing {name}, so it is not a complete zoo preset. "
            "Fix: point at a directory written by save_to_preset(), or convert "
            "the original checkpoint again."
        )
    raw = path.read_bytes()
    meta = None
    if name != METADATA_FILE:  # the digest first: an edited file is reported as edited
        meta = read_metadata(directory)
        expected = _recorded_digest(directory, name, meta)
        if expected is not None:
            _check_digest(directory, name, hashlib.sha256(raw).hexdigest(), expected, meta)
    try:
        data = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise PresetError(f"{path} is not valid JSON ({e}). "
                          f"{repair_hint(directory, meta)}") from None
    if not isinstance(data, dict):
        raise PresetError(
            f"{path} holds a JSON {type(data).__name__}, not the object zoo writes. "
            f"{repair_hint(directory, meta)}"
        )
    return data


def is_zoo_preset(directory: Path) -> bool:
    """Whether `directory` is a zoo preset (as opposed to a raw checkpoint).

    A metadata.json that cannot be read next to zoo weights counts: that is a
    broken zoo preset (loading it says what is wrong), not a raw checkpoint.
    """
    meta = Path(directory) / METADATA_FILE
    if not meta.is_file():
        return False
    try:
        data = json.loads(meta.read_bytes())
    except (ValueError, OSError):
        data = None
    if isinstance(data, dict) and "zoo_version" in data:
        return True
    return weights_io.has_weights(Path(directory), BACKBONE_WEIGHTS)


def _copy_untouched(src: Path, dst: Path, skip: set[str]) -> None:
    for entry in src.iterdir():
        if entry.name in skip or entry.name == METADATA_FILE:
            continue
        target = dst / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target)
        else:
            try:
                os.link(entry, target)
            except OSError:
                shutil.copy2(entry, target)


def _digests(work: Path, written: set[str], old: Mapping[str, str]) -> dict[str, str]:
    """sha256 of every file under `work` (but metadata.json), by relative path.

    Files kept from the old preset (not under a `written` top-level name)
    keep their recorded digest, so updating one part of a big preset does not
    hash its weights again; an old file that was never recorded (the assets of
    a format-1 preset) is hashed now.
    """
    files = {}
    for path in sorted(p for p in work.rglob("*") if p.is_file()):
        name = path.relative_to(work).as_posix()
        if name == METADATA_FILE:
            continue
        kept = name.split("/", 1)[0] not in written and name in old
        files[name] = old[name] if kept else sha256_file(path)
    return files


def write_preset(
    directory: str | os.PathLike,
    *,
    backbone: Any = None,
    tokenizer: Any = None,
    preprocessor: Any = None,
    task: Any = None,
    source: str | None = None,
    storage_dtype: str | None = None,
    config_dtype: str | None = None,
) -> Path:
    """Write the given parts into a preset directory, atomically.

    Parts already in `directory` that are not given are kept (so
    `backbone.save_to_preset(d)` then `preprocessor.save_to_preset(d)` builds
    one preset). A task brings its backbone and preprocessor along.

    In a multi-process job (jax) every process calls this: process 0 writes,
    gathering each weight whose shards other processes hold (they take part
    in the gathers), and every process returns once the preset is complete.
    A refusal (the directory is not a preset) is raised on every process.

    Args:
        directory: the preset directory to create or update.
        backbone, tokenizer, preprocessor, task: the parts to write.
        source: the handle the weights came from, recorded in metadata.json.
        storage_dtype: the dtype floating-point weights are written in
            (converters pass the checkpoint's, so a float16 source stays
            float16 on disk); None: the variables' own. Loading casts each
            tensor to the model's dtype as it is read. Recorded in
            metadata.json as `storage_dtype`.
        config_dtype: the dtype policy config.json and task.json record, i.e.
            what `from_preset` builds the model in unless told otherwise;
            None: the model's own. Converters build the model in the storage
            dtype (no float32 copy of a 16-bit checkpoint) and pass "float32".
    """
    directory = Path(directory)
    if task is not None:
        backbone = task.backbone
        preprocessor = preprocessor or task.preprocessor
    if preprocessor is not None:
        tokenizer = tokenizer or getattr(preprocessor, "tokenizer", None)
    old_meta: dict = {}
    refusal = None
    if processes.is_writer():  # (in a multi-process job only process 0 writes)
        try:
            if directory.exists() and is_zoo_preset(directory):
                old_meta = read_metadata(directory)
            elif directory.exists() and any(directory.iterdir()):
                raise PresetError(
                    f"{directory} exists and is not a zoo preset; refusing to write into it. "
                    "Fix: choose an empty or new directory."
                )
        except PresetError as e:
            refusal = e
    processes.agree(refusal is None, f"write the preset {directory}")
    if refusal is not None:
        raise refusal
    if not processes.is_writer():  # gathers its shards for process 0, waits for the files
        processes.follow_gathers(list(backbone.weights if backbone is not None else [])
                                 + list(task.head_weights() if task is not None else []))
        processes.barrier("zoo.write_preset")
        return directory
    written: list[str] = []
    with atomic_directory(directory) as work:
        if backbone is not None:
            write_json(work / CONFIG_FILE, serialize(backbone, dtype=config_dtype))
            written += [CONFIG_FILE]
            written += weights_io.save_weights(backbone.weights, work, BACKBONE_WEIGHTS,
                                               storage_dtype=storage_dtype)
        if tokenizer is not None:
            assets = work / ASSETS_DIR / "tokenizer"
            assets.mkdir(parents=True)
            tokenizer.save_assets(assets)
            write_json(work / TOKENIZER_FILE, serialize(tokenizer))
            written += [TOKENIZER_FILE, ASSETS_DIR]
        if preprocessor is not None:
            write_json(work / PREPROCESSOR_FILE, serialize(preprocessor, drop=("tokenizer",)))
            written += [PREPROCESSOR_FILE]
        if task is not None:
            write_json(work / TASK_FILE, serialize(task, drop=("backbone", "preprocessor"),
                                                     dtype=config_dtype))
            written += [TASK_FILE]
            written += weights_io.save_weights(task.head_weights(), work, TASK_WEIGHTS,
                                               storage_dtype=storage_dtype)
        if old_meta:
            _copy_untouched(directory, work, set(written))
        files = _digests(work, set(written), old_meta.get("files", {}))
        meta = {
            "zoo_version": zoo.__version__,
            "keras_version": keras.__version__,
            "format_version": PRESET_FORMAT_VERSION,
            "backbone_class": old_meta.get("backbone_class"),
            "task_class": old_meta.get("task_class"),
            "parameter_count": old_meta.get("parameter_count"),
            "source": source or old_meta.get("source"),
            "storage_dtype": old_meta.get("storage_dtype"),
            "files": files,
        }
        if backbone is not None:
            meta["backbone_class"] = type(backbone).__name__
            meta["parameter_count"] = int(backbone.count_params())
            floats = {weights_io.stored_dtype(v.dtype, storage_dtype) for v in backbone.weights
                      if weights_io.is_floating(v.dtype)}
            meta["storage_dtype"] = floats.pop() if len(floats) == 1 else "mixed"
        if task is not None:
            meta["task_class"] = type(task).__name__
        write_json(work / METADATA_FILE, meta)
    processes.barrier("zoo.write_preset")
    return directory


def read_metadata(directory: Path) -> dict:
    """The preset's metadata.json, checked to be zoo's.

    Raises:
        PresetError: metadata.json is missing, not valid JSON, lacks the
            `files` table of sha256 digests, or comes from a newer zoo.
    """
    directory = Path(directory)
    meta = read_json(directory, METADATA_FILE)
    files = meta.get("files")
    version = meta.get("format_version", 1)
    if ("zoo_version" not in meta or not isinstance(files, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
            or isinstance(version, bool) or not isinstance(version, int)):
        raise PresetError(
            f"{directory / METADATA_FILE} is not zoo preset metadata (it needs "
            "'zoo_version', an integer 'format_version' and a 'files' table of sha256 "
            f"digests). {repair_hint(directory)}"
        )
    if version > PRESET_FORMAT_VERSION:
        raise PresetError(
            f"{directory} is a zoo preset of format version {version}, newer than this "
            f"zoo ({zoo.__version__}) reads ({PRESET_FORMAT_VERSION}). Fix: upgrade zoo."
        )
    return meta


def verify_files(directory: Path, names: Iterable[str], meta: Mapping | None = None) -> None:
    """Check each file's sha256 against metadata.json (streaming, once each).

    Args:
        directory: the preset directory.
        names: paths relative to `directory`.
        meta: the preset's metadata, when the caller has read it already.

    Raises:
        PresetError: a file is missing, not recorded, or its content changed.
    """
    directory = Path(directory)
    meta = read_metadata(directory) if meta is None else meta
    for name in names:
        path = _safe_name(directory, name)
        if not path.is_file():
            raise PresetError(
                f"{directory} is missing {name}. {repair_hint(directory, meta)}"
            )
        expected = _recorded_digest(directory, name, meta)
        if expected is not None and not verified.known(path, expected):
            _check_digest(directory, name, sha256_file(path), expected, meta)
            verified.remember(path, expected)  # an unchanged file is not hashed again


def verify_preset(directory: Path) -> None:
    """Check that `directory` is a complete zoo preset with intact files."""
    if not is_zoo_preset(directory):
        raise PresetError(
            f"{directory} is not a zoo preset (no {METADATA_FILE} written by zoo). "
            "Fix: write it with save_to_preset() or convert a checkpoint first."
        )
    meta = read_metadata(directory)
    verify_files(directory, sorted(meta["files"]), meta)


def verify_weights(directory: Path, base: str, meta: Mapping | None = None) -> None:
    """Check the sha256 of every file of the weights named `base` (the index
    of sharded weights first, before its list of shards is trusted).

    Raises:
        PresetError: there are no such weights, or a file is missing or changed.
    """
    directory = Path(directory)
    if not weights_io.has_weights(directory, base):
        raise PresetError(
            f"{directory} has no {base}.weights.h5. Fix: write the preset again "
            "with save_to_preset()."
        )
    meta = read_metadata(directory) if meta is None else meta
    index = f"{base}.weights.json"
    if (directory / index).exists():
        verify_files(directory, [index], meta)
    try:
        names = weights_io.weight_files(directory, base)
    except _LIBRARY_ERRORS as e:
        raise PresetError(
            f"{directory / index} is not a zoo weight index ({type(e).__name__}: {e}). "
            f"{repair_hint(directory, meta)}"
        ) from None
    verify_files(directory, [n for n in names if n != index], meta)


def load_weights(model_weights: list, directory: Path, base: str,
                 verified: bool = False) -> None:
    """Verify and load the weight files named `base` into `model_weights`.

    A file that cannot be read although its sha256 matches (it was damaged
    and its recorded sha256 updated) gives a `PresetError`, not the HDF5
    library's error.

    Args:
        model_weights: the variables to fill, matched by path.
        directory: the preset directory.
        base: `"model"` or `"task"`.
        verified: the caller already ran `verify_weights` (hash once per load).
    """
    directory = Path(directory)
    if not verified:
        verify_weights(directory, base)
    try:
        weights_io.load_weights(model_weights, directory, base)
    except ZooError:
        raise
    except _LIBRARY_ERRORS as e:
        try:
            files = ", ".join(weights_io.weight_files(directory, base))
        except _LIBRARY_ERRORS:
            files = f"{base}.weights.*"
        raise PresetError(
            f"The weights in {directory} ({files}) cannot be read: they are damaged "
            f"({type(e).__name__}: {e}). {repair_hint(directory)}"
        ) from None


def load_assets(obj: Any, directory: Path, kind: str) -> None:
    """Verify the files under `assets/<kind>/`, then `obj.load_assets(folder)`.

    Every file recorded there and every file found there is checked, so a
    deleted, added or edited vocabulary file is caught before it is read.

    Raises:
        PresetError: an asset is missing, changed, or cannot be read.
    """
    directory = Path(directory)
    meta = read_metadata(directory)
    folder = directory / ASSETS_DIR / kind
    prefix = f"{ASSETS_DIR}/{kind}/"
    found = {p.relative_to(directory).as_posix() for p in folder.rglob("*")
             if p.is_file()} if folder.is_dir() else set()
    verify_files(directory, sorted(found | {n for n in meta["files"] if n.startswith(prefix)}),
                 meta)
    try:
        obj.load_assets(folder)
    except ZooError:
        raise
    except _LIBRARY_ERRORS as e:
        raise PresetError(
            f"The {kind} assets in {folder} cannot be read ({type(e).__name__}: {e}). "
            f"{repair_hint(directory, meta)}"
        ) from None
