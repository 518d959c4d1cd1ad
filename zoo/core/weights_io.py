"""Read and write zoo weight files.

A weight file is HDF5 with one dataset per variable, keyed by the variable's
path (`transformer_layer_0/self_attention/query/kernel`). Keying by path, not
by Keras' object graph, lets a task save only its head, lets a loader put each
weight straight into its (sharded) variable, and keeps files readable with
plain h5py. bfloat16 is stored as its raw uint16 bits with a `dtype`
attribute, since HDF5 has no bfloat16 type.

Above `max_shard_bytes` the weights are split into
`{base}-00001-of-0000N.weights.h5` files plus an index `{base}.weights.json`
mapping each path to its file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import keras
import ml_dtypes
import numpy as np

from zoo.core import processes
from zoo.core.errors import PresetError, ZooError
from zoo.utils.dtypes import numpy_dtype  # noqa: F401  (also used from here)

FORMAT = "zoo.weights"
FORMAT_VERSION = 1
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3


def index_shards(index: Path, error: type[ZooError] = PresetError) -> list[str]:
    """The shard file names a sharded-weights index lists in its `weight_map`.

    Used for zoo's own `{base}.weights.json` and for transformers'
    `*.index.json`. Each shard must be a plain file name that exists next to
    the index: a name with a path in it (`../x`, `a/b`) is refused, so an
    index can never make zoo read outside its folder.

    Args:
        index: the JSON index file.
        error: the exception class to raise (`PresetError` for zoo presets,
            `ConversionError` for checkpoints being converted).

    Raises:
        error: the index is not JSON, has no `weight_map` of names to shard
            files, or names a shard that is not a file in its folder.
    """
    fix = "Fix: download the complete checkpoint or preset folder again."
    try:
        data = json.loads(index.read_text())
    except (ValueError, RecursionError) as e:
        raise error(f"{index} is not valid JSON ({e}). {fix}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not (isinstance(weight_map, dict) and weight_map
            and all(isinstance(v, str) for v in weight_map.values())):
        raise error(f"{index} has no 'weight_map' of weight names to shard files. {fix}")
    shards = sorted(set(weight_map.values()))
    for name in shards:
        if Path(name).name != name or name in (".", "..") or "\\" in name or "\0" in name:
            raise error(
                f"{index} lists the shard {name!r}, which is not a file name in "
                f"{index.parent}; zoo reads shards only from the index's own folder. {fix}")
        if not (index.parent / name).is_file():
            raise error(f"{index} lists the shard {name!r}, which is missing. {fix}")
    return shards


def weight_files(directory: Path, base: str) -> list[str]:
    """File names (relative to `directory`) holding the weights named `base`.

    Raises:
        PresetError: the sharded index is broken (see `index_shards`).
    """
    index = directory / f"{base}.weights.json"
    if index.exists():
        return [f"{base}.weights.json"] + index_shards(index)
    return [f"{base}.weights.h5"]


def has_weights(directory: Path, base: str) -> bool:
    """Whether `directory` holds weights named `base` (single file or sharded)."""
    return (directory / f"{base}.weights.h5").exists() or (
        directory / f"{base}.weights.json"
    ).exists()


def _unique_paths(variables: Sequence[keras.Variable]) -> list[str]:
    paths = [v.path for v in variables]
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise ValueError(
                f"Two variables share the path {path!r}; give every layer an "
                "explicit, unique name so weights can be saved by path."
            )
        seen.add(path)
    return paths


def _to_storable(array: np.ndarray) -> tuple[np.ndarray, str]:
    dtype = str(array.dtype)
    if dtype == "bfloat16":
        return array.view(np.uint16), dtype
    return array, dtype


#: the dtypes floating-point weights may be stored in
STORAGE_DTYPES = ("float32", "float16", "bfloat16")


def is_floating(dtype: Any) -> bool:
    """Whether `dtype` (a Keras, numpy or ml_dtypes dtype) is floating point."""
    return keras.backend.standardize_dtype(dtype) in ("float16", "bfloat16", "float32",
                                                      "float64")


def stored_dtype(variable_dtype: str, storage_dtype: str | None) -> str:
    """The dtype a variable is written in: `storage_dtype` for floating-point
    variables when given, else the variable's own (integers never change).

    >>> stored_dtype("float32", "bfloat16"), stored_dtype("int32", "bfloat16")
    ('bfloat16', 'int32')
    """
    dtype = keras.backend.standardize_dtype(variable_dtype)
    return storage_dtype if storage_dtype is not None and is_floating(dtype) else dtype


def save_weights(
    variables: Sequence[keras.Variable],
    directory: Path,
    base: str,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    storage_dtype: str | None = None,
) -> list[str]:
    """Write `variables` under `directory`; return the file names written.

    Args:
        variables: the variables to save; their `.path` values must be unique.
        directory: an existing directory.
        base: file stem, e.g. `"model"` gives `model.weights.h5`.
        max_shard_bytes: split into several files above this many bytes.
        storage_dtype: write floating-point weights in this dtype (one of
            `STORAGE_DTYPES`, cast one tensor at a time); None: as they are.
    """
    from zoo.core import deferred

    paths = _unique_paths(variables)
    dtypes = [numpy_dtype(stored_dtype(v.dtype, storage_dtype)) for v in variables]
    shards: list[list[int]] = [[]]
    size = 0
    for i, variable in enumerate(variables):
        nbytes = int(np.prod(variable.shape)) * dtypes[i].itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(i)
        size += nbytes
    if len(shards) == 1:
        names = [f"{base}.weights.h5"]
    else:
        n = len(shards)
        names = [f"{base}-{k + 1:05d}-of-{n:05d}.weights.h5" for k in range(n)]
    weight_map = {}
    for name, members in zip(names, shards):
        with h5py.File(directory / name, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            for i in members:
                later = deferred.later_value(variables[i])  # a streamed conversion
                value = processes.host_value(variables[i]) if later is None else later
                data, dtype = _to_storable(np.asarray(value).astype(dtypes[i], copy=False))
                del value, later
                dataset = f.create_dataset(paths[i], data=data)
                del data  # (a streamed conversion holds one weight at a time)
                dataset.attrs["dtype"] = dtype
                weight_map[paths[i]] = name
    if len(names) == 1:
        return names
    index = {"format": FORMAT, "format_version": FORMAT_VERSION, "weight_map": weight_map}
    (directory / f"{base}.weights.json").write_text(json.dumps(index, indent=2))
    return [f"{base}.weights.json"] + names


def _read_dataset(dataset: h5py.Dataset) -> np.ndarray:
    data = dataset[()]
    if dataset.attrs.get("dtype") == "bfloat16":
        data = data.view(ml_dtypes.bfloat16)
    return np.asarray(data)


def check_dataset(file: Path, path: str, dataset: h5py.Dataset) -> None:
    """Refuse a dataset `save_weights` cannot have written: a non-numeric or
    oversized element type (a huge string type could make a tiny file read as
    terabytes), or data kept in other files (external or virtual storage)."""
    problem = None
    if dataset.dtype.kind not in "biuf" or dataset.dtype.itemsize > 8:
        problem = f"has element type {dataset.dtype}, not a number"
    elif dataset.attrs.get("dtype") == "bfloat16" and dataset.dtype != np.uint16:
        problem = f"is marked bfloat16 but stores {dataset.dtype}, not uint16 bits"
    elif dataset.external or dataset.is_virtual:
        problem = "keeps its data in other files (external or virtual storage)"
    if problem:
        raise PresetError(
            f"Weight {path!r} in {file} {problem}; zoo never writes that. Fix: delete the "
            "preset directory and convert or download it again.")


def _index(directory: Path, base: str) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """`{path: (file, shape)}` of every array stored under `base` (no data read)."""
    out: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for name in weight_files(directory, base):
        if not name.endswith(".h5"):
            continue
        file = directory / name
        try:
            with h5py.File(file, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise PresetError(
                        f"{file} is not a zoo weight file (no '{FORMAT}' marker). "
                        "Fix: re-create the preset with save_to_preset()."
                    )

                def visit(path: str, item: object) -> None:
                    if isinstance(item, h5py.Dataset):
                        check_dataset(file, path, item)
                        out[path] = (file, tuple(item.shape))

                f.visititems(visit)
        except (OSError, KeyError) as e:
            raise PresetError(
                f"Cannot read weight file {file}: it is truncated or corrupt ({e}). "
                "Fix: delete the preset directory and convert or download it again."
            ) from None
    return out


def load_weights(
    variables: Sequence[keras.Variable], directory: Path, base: str
) -> None:
    """Assign the arrays stored under `base` to `variables`, matched by path.

    Arrays are read one at a time, so loading needs the model's memory plus
    the largest single weight. A variable built by
    `zoo.core.deferred.abstract_build` gets its first value here (straight
    into its shards under a `keras.distribution` scope).

    Raises:
        PresetError: a variable is missing from the file, the file holds
            weights no variable takes, or a shape differs (checked for every
            weight before any is read).
    """
    from zoo.core import deferred

    stored = _index(directory, base)
    paths = _unique_paths(variables)
    missing = [p for p in paths if p not in stored]
    unexpected = sorted(set(stored) - set(paths))
    if missing or unexpected:
        raise PresetError(
            f"Weights in {directory} do not fit the model: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}. "
            "Fix: load the preset with the class and config it was saved with."
        )
    for path, variable in zip(paths, variables):
        shape = stored[path][1]
        if shape != tuple(variable.shape):
            raise PresetError(
                f"Weight {path!r} in {directory} has shape {shape}, "
                f"but the model expects {tuple(variable.shape)}. Fix: load the "
                "preset with the config it was saved with."
            )
    handles: dict[Path, h5py.File] = {}
    try:
        for path, variable in zip(paths, variables):
            file = stored[path][0]
            if file not in handles:
                handles[file] = h5py.File(file, "r")
            try:
                array = _read_dataset(handles[file][path])
            except (OSError, KeyError) as e:
                raise PresetError(
                    f"Cannot read {path!r} from {file}: it is truncated or corrupt ({e}). "
                    "Fix: delete the preset directory and convert or download it again."
                ) from None
            array = array.astype(numpy_dtype(variable.dtype), copy=False)
            if deferred.is_deferred(variable):
                deferred.materialize(variable, array)
            else:
                variable.assign(array)
            del array
    finally:
        for handle in handles.values():
            handle.close()
