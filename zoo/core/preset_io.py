"""The zoo preset directory: writing it atomically, reading it safely.

A preset directory holds:

    config.json          the backbone (serialized Keras object)
    model.weights.h5     backbone weights (sharded above a size limit)
    tokenizer.json       the tokenizer; its vocabulary lives in assets/tokenizer/
    preprocessor.json    the preprocessor (without its tokenizer)
    task.json            the task head (without backbone and preprocessor)
    task.weights.h5      the head's weights only
    metadata.json        versions, parameter count, source, sha256 of every file

`metadata.json` is written last; every weight file's sha256 is checked
against it on load, so a truncated download or a half-copied file is caught
with a clear error instead of loading garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import keras

import zoo
from zoo.core import weights_io
from zoo.core.errors import PresetError
from zoo.presets.hub import atomic_directory

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
TOKENIZER_FILE = "tokenizer.json"
PREPROCESSOR_FILE = "preprocessor.json"
TASK_FILE = "task.json"
ASSETS_DIR = "assets"
BACKBONE_WEIGHTS = "model"
TASK_WEIGHTS = "task"
PRESET_FORMAT_VERSION = 1


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def serialize(obj: Any, drop: tuple[str, ...] = ()) -> dict:
    """Serialize a zoo object to a JSON-able dict, leaving out `drop` keys."""
    data = keras.saving.serialize_keras_object(obj)
    data["config"] = {k: v for k, v in data["config"].items() if k not in drop}
    return data


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(directory: Path, name: str) -> dict:
    """Read `directory/name`, with errors that say which file and how to fix."""
    path = Path(directory) / name
    if not path.is_file():
        raise PresetError(
            f"{directory} is missing {name}, so it is not a complete zoo preset. "
            "Fix: point at a directory written by save_to_preset(), or convert "
            "the original checkpoint again."
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PresetError(
            f"{path} is not valid JSON ({e}). Fix: restore the file or write the "
            "preset again with save_to_preset()."
        ) from None


def is_zoo_preset(directory: Path) -> bool:
    """Whether `directory` is a zoo preset (as opposed to a raw checkpoint)."""
    meta = Path(directory) / METADATA_FILE
    if not meta.is_file():
        return False
    try:
        return "zoo_version" in json.loads(meta.read_text())
    except (json.JSONDecodeError, OSError):
        return False


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


def write_preset(
    directory: str | os.PathLike,
    *,
    backbone: Any = None,
    tokenizer: Any = None,
    preprocessor: Any = None,
    task: Any = None,
    source: str | None = None,
) -> Path:
    """Write the given parts into a preset directory, atomically.

    Parts already in `directory` that are not given are kept (so
    `backbone.save_to_preset(d)` then `preprocessor.save_to_preset(d)` builds
    one preset). A task brings its backbone and preprocessor along.

    Args:
        directory: the preset directory to create or update.
        backbone, tokenizer, preprocessor, task: the parts to write.
        source: the handle the weights came from, recorded in metadata.json.
    """
    directory = Path(directory)
    if task is not None:
        backbone = task.backbone
        preprocessor = preprocessor or task.preprocessor
    if preprocessor is not None:
        tokenizer = tokenizer or getattr(preprocessor, "tokenizer", None)
    old_meta: dict = {}
    if directory.exists() and is_zoo_preset(directory):
        old_meta = json.loads((directory / METADATA_FILE).read_text())
    elif directory.exists() and any(directory.iterdir()):
        raise PresetError(
            f"{directory} exists and is not a zoo preset; refusing to write into it. "
            "Fix: choose an empty or new directory."
        )
    written: list[str] = []
    with atomic_directory(directory) as work:
        if backbone is not None:
            write_json(work / CONFIG_FILE, serialize(backbone))
            written += [CONFIG_FILE]
            written += weights_io.save_weights(backbone.weights, work, BACKBONE_WEIGHTS)
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
            write_json(work / TASK_FILE, serialize(task, drop=("backbone", "preprocessor")))
            written += [TASK_FILE]
            written += weights_io.save_weights(task.head_weights(), work, TASK_WEIGHTS)
        if old_meta:
            _copy_untouched(directory, work, set(written))
        files = dict(old_meta.get("files", {}))
        for name in written:
            if (work / name).is_file():
                files[name] = sha256_file(work / name)
        files = {n: h for n, h in files.items() if (work / n).is_file()}
        meta = {
            "zoo_version": zoo.__version__,
            "keras_version": keras.__version__,
            "format_version": PRESET_FORMAT_VERSION,
            "backbone_class": old_meta.get("backbone_class"),
            "task_class": old_meta.get("task_class"),
            "parameter_count": old_meta.get("parameter_count"),
            "source": source or old_meta.get("source"),
            "files": files,
        }
        if backbone is not None:
            meta["backbone_class"] = type(backbone).__name__
            meta["parameter_count"] = int(backbone.count_params())
        if task is not None:
            meta["task_class"] = type(task).__name__
        write_json(work / METADATA_FILE, meta)
    return directory


def read_metadata(directory: Path) -> dict:
    """The preset's metadata.json."""
    return read_json(directory, METADATA_FILE)


def verify_files(directory: Path, names: list[str]) -> None:
    """Check each file's sha256 against metadata.json.

    Raises:
        PresetError: a file is missing or its content changed.
    """
    recorded = read_metadata(directory).get("files", {})
    for name in names:
        path = Path(directory) / name
        if not path.is_file():
            raise PresetError(
                f"{directory} is missing {name}. Fix: delete the directory and "
                "convert or download the preset again."
            )
        expected = recorded.get(name)
        if expected is None:
            raise PresetError(
                f"{name} in {directory} is not listed in {METADATA_FILE}, so its "
                "integrity cannot be checked. Fix: write the preset with save_to_preset()."
            )
        actual = sha256_file(path)
        if actual != expected:
            raise PresetError(
                f"{path} is corrupt or truncated: sha256 {actual[:12]}... does not "
                f"match {expected[:12]}... recorded in {METADATA_FILE}. Fix: delete "
                "the preset directory and convert or download it again."
            )


def verify_preset(directory: Path) -> None:
    """Check that `directory` is a complete zoo preset with intact files."""
    if not is_zoo_preset(directory):
        raise PresetError(
            f"{directory} is not a zoo preset (no {METADATA_FILE} written by zoo). "
            "Fix: write it with save_to_preset() or convert a checkpoint first."
        )
    verify_files(directory, sorted(read_metadata(directory).get("files", {})))


def load_weights(model_weights: list, directory: Path, base: str) -> None:
    """Verify and load the weight files named `base` into `model_weights`."""
    if not weights_io.has_weights(directory, base):
        raise PresetError(
            f"{directory} has no {base}.weights.h5. Fix: write the preset again "
            "with save_to_preset()."
        )
    verify_files(directory, weights_io.weight_files(directory, base))
    weights_io.load_weights(model_weights, directory, base)


def get_class(data: dict, base: type, directory: Path, what: str) -> type:
    """The registered zoo class named in a serialized config, checked against `base`."""
    import zoo.models  # noqa: F401  (registers every family's classes)

    name = data.get("registered_name") or data.get("class_name")
    cls = keras.saving.get_registered_object(name) if name else None
    if cls is None:
        raise PresetError(
            f"The {what} in {directory} is of class {name!r}, which this version of "
            f"zoo ({zoo.__version__}) does not know. Fix: upgrade zoo."
        )
    if not issubclass(cls, base):
        raise PresetError(
            f"{directory} holds a {cls.__name__}, which is not a {base.__name__}. "
            f"Fix: load it with {cls.__name__}.from_preset(...) or a base class "
            "such as zoo.models.Backbone / zoo.models.Task."
        )
    return cls
