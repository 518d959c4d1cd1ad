"""Read original checkpoints (safetensors, PyTorch pickles) as numpy arrays.

safetensors files are parsed directly (an 8-byte header length, a JSON
header, raw little-endian data) and memory-mapped, so bfloat16 and float16
weights load without torch and without copying the whole file at once.
PyTorch `.bin`/`.pt` files go through zoo's restricted unpickler, which
never runs code from the file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

from zoo.core.errors import ConversionError

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a `.safetensors` file, as read-only memory-mapped arrays."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise ConversionError(f"{path} is not a readable safetensors file ({e}).") from None
    header.pop("__metadata__", None)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    out = {}
    for name, info in header.items():
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ConversionError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}.")
        start, end = info["data_offsets"]
        if end > data.shape[0]:
            raise ConversionError(f"{path} is truncated: tensor {name!r} ends past the file end.")
        out[name] = data[start:end].view(dtype).reshape(info["shape"])
    return out


def _flatten_state(state: object, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if isinstance(state, Mapping):
        for key, value in state.items():
            out.update(_flatten_state(value, f"{prefix}{key}."))
    elif isinstance(state, np.ndarray):
        out[prefix[:-1]] = state
    return out


def read_transformers_weights(directory: str | Path) -> dict[str, np.ndarray]:
    """The state dict of a transformers model folder (safetensors preferred).

    Handles `model.safetensors`, sharded `model.safetensors.index.json`, and
    `pytorch_model.bin` (single or sharded) through the restricted unpickler.
    """
    directory = Path(directory)
    for index_name, reader in (("model.safetensors.index.json", read_safetensors),
                               ("pytorch_model.bin.index.json", _read_torch)):
        index = directory / index_name
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            out: dict[str, np.ndarray] = {}
            for name in files:
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
    from zoo.utils.torch_pickle import load_torch_checkpoint

    state = load_torch_checkpoint(path)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    return _flatten_state(state)


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

    array = array.astype(numpy_dtype(variable.dtype))
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
