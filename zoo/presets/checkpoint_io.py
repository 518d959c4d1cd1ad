"""Read original checkpoints (safetensors, PyTorch pickles) as numpy arrays.

safetensors files are parsed directly (an 8-byte header length, a JSON
header, raw little-endian data) and memory-mapped, so bfloat16 and float16
weights load without torch and without copying the whole file at once.
PyTorch `.bin`/`.pt` files go through zoo's restricted unpickler, which
never runs code from the file.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from zoo.core.errors import ConversionError

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


#: Largest safetensors JSON header read (the safetensors library's own limit)
_MAX_HEADER_BYTES = 100_000_000
#: How deep `_flatten_state` follows nested dicts (a state dict is 1-3 levels)
_MAX_NESTING = 32
#: The safetensors files mapped by `read_safetensors` whose arrays are alive
_MAPPINGS: "weakref.WeakSet[mmap.mmap]" = weakref.WeakSet()


def release_mapped_pages() -> int:
    """Unmap the pages of every memory-mapped safetensors source from this
    process (`MADV_DONTNEED`); return how many mappings were told.

    The arrays stay valid: a read-only file mapping reads its pages again
    from the file (or the page cache) when next touched. A streamed
    conversion calls this after each tensor it has cast, so the process keeps
    about one source tensor mapped instead of every one it has read.
    """
    if not hasattr(mmap, "MADV_DONTNEED"):  # (not on Windows)
        return 0
    count = 0
    for mapping in list(_MAPPINGS):
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
            count += 1
        except (ValueError, OSError):  # closed meanwhile
            pass
    return count


def _bad_safetensors(path: Path, problem: str) -> ConversionError:
    return ConversionError(
        f"{path} is not a valid safetensors file: {problem}. Fix: download the file "
        "again, or re-save the weights with safetensors' save_file.")


def _header_spans(path: Path, header: object, data_len: int) -> dict[str, tuple]:
    """`{name: (dtype, shape, start, end)}` after checking every entry against
    the data section's `data_len` bytes: known dtype, non-negative shape,
    offsets inside the data, a byte size that matches the shape, no overlap."""
    if not isinstance(header, dict):
        raise _bad_safetensors(path, "its header is not a JSON object")
    header.pop("__metadata__", None)
    spans = {}
    for name, info in header.items():
        info = info if isinstance(info, dict) else {}
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2
                and all(type(n) is int and n >= 0 for n in shape + offsets)):
            raise _bad_safetensors(
                path, f"tensor {name!r} lacks a valid 'shape' or 'data_offsets' (non-negative "
                "integers)")
        dtype = _SAFETENSORS_DTYPES.get(info.get("dtype")) if isinstance(
            info.get("dtype"), str) else None
        if dtype is None:
            raise ConversionError(
                f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r} (zoo "
                f"reads {', '.join(_SAFETENSORS_DTYPES)}). Fix: save it in one of those dtypes.")
        start, end = offsets
        if end > data_len:
            raise ConversionError(
                f"{path} is truncated: tensor {name!r} ends at byte {end:,} of a "
                f"{data_len:,}-byte data section. Fix: download the file again.")
        if end - start != math.prod(shape) * np.dtype(dtype).itemsize:
            raise _bad_safetensors(
                path, f"tensor {name!r} of shape {shape} and dtype {info['dtype']} needs "
                f"{math.prod(shape) * np.dtype(dtype).itemsize:,} bytes, but its data_offsets "
                f"span {end - start:,}")
        spans[name] = (dtype, tuple(shape), start, end)
    previous = None
    for name, (_, _, start, end) in sorted(spans.items(), key=lambda item: item[1][2:]):
        if start == end:
            continue  # empty tensors take no bytes
        if previous is not None and start < spans[previous][3]:
            raise _bad_safetensors(path, f"tensors {previous!r} and {name!r} overlap")
        previous = name
    return spans


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a `.safetensors` file, as read-only memory-mapped arrays.

    The header is checked against the file before anything is mapped: its
    length must fit the file (and the safetensors library's 100 MB limit),
    and each tensor must have a known dtype and lie inside the data section,
    with a byte size that matches its shape and no overlap with another, so
    the arrays never add up to more than the file.

    Raises:
        ConversionError: the file is truncated, not safetensors, or its header
            is inconsistent.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > min(size - 8, _MAX_HEADER_BYTES):
                raise _bad_safetensors(
                    path, f"its header claims {header_len:,} bytes, but the file has "
                    f"{size:,} (truncated, or not safetensors)")
            header = json.loads(f.read(header_len))
    except (struct.error, ValueError, RecursionError, OSError) as e:
        if isinstance(e, ConversionError):
            raise
        raise ConversionError(
            f"{path} is not a readable safetensors file ({e}). Fix: download it again, or "
            "pass the checkpoint's .safetensors file.") from None
    data_len = size - 8 - header_len
    spans = _header_spans(path, header, data_len)
    if data_len:
        with open(path, "rb") as f:
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        _MAPPINGS.add(mapping)
        data = np.frombuffer(mapping, dtype=np.uint8, count=data_len, offset=8 + header_len)
    else:
        data = np.zeros(0, np.uint8)
    return {name: data[start:end].view(dtype).reshape(shape)
            for name, (dtype, shape, start, end) in spans.items()}


def _flatten_state(state: object, prefix: str = "", depth: int = 0) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if isinstance(state, Mapping):
        if depth > _MAX_NESTING:  # also catches a dict that contains itself
            raise ConversionError(
                f"the checkpoint's state dict nests deeper than {_MAX_NESTING} levels at "
                f"{prefix[:80]!r}; it is not a model state dict. Fix: pass the model's "
                "weights saved with torch.save(model.state_dict(), path).")
        for key, value in state.items():
            out.update(_flatten_state(value, f"{prefix}{key}.", depth + 1))
    elif isinstance(state, np.ndarray):
        out[prefix[:-1]] = state
    return out


def read_transformers_weights(directory: str | Path) -> dict[str, np.ndarray]:
    """The state dict of a transformers model folder (safetensors preferred).

    Handles `model.safetensors`, sharded `model.safetensors.index.json`, and
    `pytorch_model.bin` (single or sharded) through the restricted unpickler.
    An index must be JSON with a `weight_map` whose shards are plain file
    names in `directory` that exist.

    Raises:
        ConversionError: no weights, a broken index, or an unreadable file.
    """
    from zoo.core.weights_io import index_shards

    directory = Path(directory)
    for index_name, reader in (("model.safetensors.index.json", read_safetensors),
                               ("pytorch_model.bin.index.json", _read_torch)):
        index = directory / index_name
        if index.is_file():
            out: dict[str, np.ndarray] = {}
            for name in index_shards(index, ConversionError):
                out.update(reader(directory / name))
            return out
    if (directory / "model.safetensors").is_file():
        return read_safetensors(directory / "model.safetensors")
    if (directory / "pytorch_model.bin").is_file():
        return _read_torch(directory / "pytorch_model.bin")
    raise ConversionError(
        f"{directory} has no model weights (looked for model.safetensors, "
        "pytorch_model.bin and their sharded indexes). Fix: download the complete "
        "checkpoint folder."
    )


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    """The flattened state dict of a `torch.save` file (restricted unpickler).

    Raises:
        ConversionError: the file is unreadable, hostile or not a state dict.
    """
    from zoo.utils.torch_pickle import UnsafeCheckpointError, load_torch_checkpoint

    try:
        state = load_torch_checkpoint(path)
    except UnsafeCheckpointError:
        raise
    except (ValueError, FileNotFoundError) as e:
        message = str(e) if "Fix:" in str(e) else (
            f"{e}. Fix: download the checkpoint again, or re-save it with torch.save.")
        raise ConversionError(message) from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    try:
        return _flatten_state(state)
    except ConversionError as e:
        raise ConversionError(f"{path}: {e}") from None


def storage_dtype(arrays: Iterable[np.ndarray], requested: str = "source") -> str:
    """The dtype a converted preset stores its floating-point weights in.

    `requested` is what `zoo convert --dtype` takes: "float32", "float16",
    "bfloat16", or "source": the checkpoint's own dtype when all its
    floating-point tensors share one of those (a float16 checkpoint stays
    float16 on disk), else float32 (mixed or float64 checkpoints keep their
    precision).

    >>> import ml_dtypes
    >>> storage_dtype([np.zeros(2, "float16"), np.zeros(2, "int64")])
    'float16'
    >>> storage_dtype([np.zeros(2, ml_dtypes.bfloat16), np.zeros(2, "float32")])
    'float32'
    >>> storage_dtype([np.zeros(2, "float16")], "bfloat16")
    'bfloat16'

    Raises:
        ConversionError: `requested` is none of those.
    """
    from zoo.core.weights_io import STORAGE_DTYPES, is_floating

    if requested != "source":
        if requested not in STORAGE_DTYPES:
            raise ConversionError(f"dtype={requested!r} is not a storage dtype. Fix: pass one "
                                  f"of {', '.join(STORAGE_DTYPES)}, or 'source'.")
        return requested
    found = {str(a.dtype) for a in arrays if is_floating(a.dtype)}
    return found.pop() if len(found) == 1 and found <= set(STORAGE_DTYPES) else "float32"


def load_reference(cls: Any, source: str | Path, preset_dir: str | Path, **kwargs: Any) -> Any:
    """`cls.from_pretrained(source)` (a transformers or diffusers class) for
    verifying a conversion: its weights rounded to the preset's storage dtype,
    then computed in float32, as zoo computes from the preset. So a float16
    checkpoint is compared from the same float16 numbers on both sides, and a
    float32 checkpoint stored in bfloat16 (`--dtype bfloat16`) against the
    same rounded weights, within the family's float32 tolerance either way."""
    import torch

    from zoo.core.preset_io import read_metadata
    from zoo.core.weights_io import STORAGE_DTYPES

    storage = read_metadata(Path(preset_dir)).get("storage_dtype")
    dtype = getattr(torch, storage) if storage in STORAGE_DTYPES else torch.float32
    return cls.from_pretrained(source, dtype=dtype, **kwargs).to(torch.float32).eval()


class WeightReader:
    """A checkpoint's arrays, handed out by name; tracks which were used.

    `take(name)` returns an array and marks it used; `unused()` lists the
    arrays nobody took, so converters can refuse to silently drop weights.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], source: str) -> None:
        self.arrays = dict(arrays)
        self.source = source
        self.used: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def take(self, *names: str) -> np.ndarray:
        """The first of `names` present in the checkpoint (aliases for old names)."""
        for name in names:
            if name in self.arrays:
                self.used.add(name)
                return np.asarray(self.arrays[name])
        raise ConversionError(
            f"{self.source} lacks the weight {names[0]!r}; the checkpoint is incomplete "
            "or not the architecture its config claims."
        )

    def unused(self) -> list[str]:
        return sorted(set(self.arrays) - self.used)

    def storage_dtype(self, requested: str = "source") -> str:
        """`storage_dtype` of this checkpoint's arrays."""
        return storage_dtype(self.arrays.values(), requested)


def port_weight(variable: object, array: np.ndarray, *, transpose: bool = False,
                name: str = "") -> None:
    """Assign `array` (optionally transposed) to a Keras variable, checking shape.

    Raises:
        ConversionError: the shapes differ after the transform.
    """
    from zoo.core.weights_io import numpy_dtype

    array = np.asarray(array)
    if transpose:
        array = array.T
    if tuple(array.shape) != tuple(variable.shape):
        raise ConversionError(
            f"Cannot port {name or 'a weight'} into {variable.path}: shape "
            f"{tuple(array.shape)} != {tuple(variable.shape)}."
        )
    from zoo.core import deferred

    dtype = numpy_dtype(variable.dtype)
    if deferred.is_deferred(variable) and deferred.streaming():
        # cast when the preset writer reaches it: a memory-mapped source is
        # read one tensor at a time, and only then; the cast is a copy, so the
        # source's pages can leave this process's memory right after it
        def compute() -> np.ndarray:
            value = array.astype(dtype)
            release_mapped_pages()
            return value

        deferred.value_later(variable, compute)
        return
    array = array.astype(dtype)
    if deferred.is_deferred(variable):  # built by deferred.abstract_build: no value yet
        deferred.materialize(variable, array)
    else:
        variable.assign(array)


def port_dense(layer: object, weights: WeightReader, prefix: str, bias: bool = True) -> None:
    """Port a torch `Linear` (`{prefix}.weight` `(out, in)`, `{prefix}.bias`)
    into a Keras `Dense` (kernel `(in, out)`)."""
    port_weight(layer.kernel, weights.take(f"{prefix}.weight"), transpose=True, name=prefix)
    if bias:
        port_weight(layer.bias, weights.take(f"{prefix}.bias"), name=prefix)


def port_layer_norm(layer: object, weights: WeightReader, prefix: str) -> None:
    """Port a torch `LayerNorm` (`weight`/`bias`, or old `gamma`/`beta` names)."""
    port_weight(layer.gamma, weights.take(f"{prefix}.weight", f"{prefix}.gamma"), name=prefix)
    port_weight(layer.beta, weights.take(f"{prefix}.bias", f"{prefix}.beta"), name=prefix)


def port_conv2d(layer: object, weights: WeightReader, prefix: str, bias: bool = True) -> None:
    """Port a torch `Conv2d` (`{prefix}.weight` `(out, in, kh, kw)`) into a
    Keras `Conv2D` (kernel `(kh, kw, in, out)`). A 1x1 convolution may also
    come from a `Linear` (`(out, in)`), as in old VAE attention checkpoints."""
    kernel = weights.take(f"{prefix}.weight")
    if kernel.ndim == 2:
        kernel = kernel[:, :, None, None]
    port_weight(layer.kernel, np.transpose(kernel, (2, 3, 1, 0)), name=prefix)
    if bias:
        port_weight(layer.bias, weights.take(f"{prefix}.bias"), name=prefix)


def port_group_norm(layer: object, weights: WeightReader, prefix: str) -> None:
    """Port a torch `GroupNorm` into a Keras `GroupNormalization`."""
    port_weight(layer.gamma, weights.take(f"{prefix}.weight"), name=prefix)
    port_weight(layer.beta, weights.take(f"{prefix}.bias"), name=prefix)
