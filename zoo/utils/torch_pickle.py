"""Read `torch.save` checkpoints without torch and without running their code.

A `torch.save` file (torch >= 1.6) is a zip archive: `<prefix>/data.pkl` (a pickle),
one raw buffer per storage in `<prefix>/data/<key>`, and `<prefix>/byteorder`. The
pickle is replayed by a restricted unpickler: tensors become numpy arrays, plain
containers are rebuilt, and any other global it names raises `UnsafeCheckpointError`.

Memory is bounded by the file's size, whatever the file declares: a storage is
read from its zip entry only as far as its tensors reach, and the bytes read
plus the arrays built may not exceed `_SIZE_FACTOR` times the file size plus
`_SIZE_SLACK` (see `load_torch_checkpoint`).
"""

from __future__ import annotations

import codecs
import functools
import io
import math
import os
import pickle
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import ml_dtypes
import numpy as np

from zoo.core.errors import ConversionError

__all__ = ["PickledObject", "UnsafeCheckpointError", "load_torch_checkpoint", "record_as_data"]

# torch dtype name, legacy typed-storage class name, numpy dtype.
_DTYPES = [
    ("float64", "DoubleStorage", np.float64), ("float32", "FloatStorage", np.float32),
    ("float16", "HalfStorage", np.float16), ("bfloat16", "BFloat16Storage", ml_dtypes.bfloat16),
    ("int64", "LongStorage", np.int64), ("int32", "IntStorage", np.int32),
    ("int16", "ShortStorage", np.int16), ("int8", "CharStorage", np.int8),
    ("uint8", "ByteStorage", np.uint8), ("bool", "BoolStorage", np.bool_),
    ("complex64", "ComplexFloatStorage", np.complex64),
    ("complex128", "ComplexDoubleStorage", np.complex128),
    ("float8_e4m3fn", None, ml_dtypes.float8_e4m3fn), ("float8_e5m2", None, ml_dtypes.float8_e5m2),
    ("uint16", None, np.uint16), ("uint32", None, np.uint32), ("uint64", None, np.uint64),
]
_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")  # pre-1.6 torch.save header
_TEXT_CODECS = {codecs.lookup("latin-1").name, codecs.lookup("utf-8").name}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # protocol-2 spellings
#: Tensor data a checkpoint may materialise: storage bytes read plus array bytes
#: built, at most `_SIZE_FACTOR * file size + _SIZE_SLACK`. torch.save stores every
#: storage uncompressed, so a real checkpoint reads ~1x its size and builds ~1x
#: (2x where tensors share a storage, e.g. tied embeddings); 4x leaves room for
#: that and for archives re-zipped with compression. A broadcast (zero-stride)
#: view or a zip bomb that would blow up past this is refused before allocating.
_SIZE_FACTOR = 4
_SIZE_SLACK = 64 * 1024**2
#: data.pkl may inflate to at most the file size plus this (torch.save stores it
#: uncompressed, so a real one is never larger than the file).
_PICKLE_SLACK = 1024**2
_BYTEORDER_MAX = 16  # "little" / "big"


class UnsafeCheckpointError(ConversionError):
    """The checkpoint names a global (code) that zoo refuses to run."""


class _FormatError(ValueError):
    """A malformed checkpoint; the loader adds the file path to the message."""


class PickledObject:
    """A data record standing in for an instance of an allow-listed class.

    Nothing of the original class runs: the record keeps the class's `module`
    and `name`, the constructor `args`/`kwargs` the pickle passed, and the
    `state` it restored (usually the instance `__dict__`, e.g. `_modules` and
    `_parameters` of a pickled `nn.Module`), so callers can walk it as data.
    """

    module: str = ""
    name: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        self = super().__new__(cls)
        self.args, self.kwargs, self.state = args, kwargs, None
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # Everything is recorded in __new__.

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<PickledObject {self.module}.{self.name} args={self.args!r}>"


@functools.lru_cache(maxsize=None)
def record_as_data(module: str, name: str) -> type[PickledObject]:
    """Return a `PickledObject` subclass that records instances of `module.name`.

    Use it as a value of `allowed_globals`; passing `PickledObject` itself as the
    value does the same.
    """
    attrs = {"module": module, "name": name, "__module__": __name__}
    return type(name, (PickledObject,), attrs)


class _Budget:
    """Bytes a load may still materialise (storage bytes read plus arrays built)."""

    def __init__(self, file_size: int) -> None:
        self.file_size, self.left = file_size, _SIZE_FACTOR * file_size + _SIZE_SLACK

    def charge(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            limit = _SIZE_FACTOR * self.file_size + _SIZE_SLACK
            raise _FormatError(
                f"{what} would take {nbytes:,} bytes, past zoo's limit of {limit:,} bytes of"
                f" tensor data for a {self.file_size:,}-byte checkpoint ({_SIZE_FACTOR}x its"
                f" size + {_SIZE_SLACK // 1024**2} MiB); the file is corrupt or hostile (a"
                " broadcast view or a compressed storage). Fix: re-download the checkpoint,"
                " or re-save it with torch.save from a trusted copy")
        self.left -= nbytes


class _Storage:
    """One storage of the archive, read from its zip entry only as far as needed."""

    def __init__(self, zf: zipfile.ZipFile, entry: str, nbytes: int, dtype: np.dtype,
                 swap: bool, budget: _Budget) -> None:
        self.entry, self.nbytes, self.dtype, self.swap = entry, nbytes, dtype, swap
        self.budget, self._zf, self._file, self.data = budget, zf, None, bytearray()

    def read(self, end: int) -> bytearray:
        """The storage's first `end` bytes (read on first need, in file byte order)."""
        if end > len(self.data):
            self.budget.charge(end - len(self.data), f"reading storage {self.entry}")
            if self._file is None:
                self._file = self._zf.open(self.entry)
            chunk = self._file.read(end - len(self.data))
            self.data += chunk
            if len(self.data) < end:
                raise _FormatError(f"storage {self.entry} is truncated")
            if len(self.data) == self.nbytes:
                self.close()
        return self.data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _to_array(storage: Any, offset: Any, size: Any, stride: Any, dtype: Any = None,
              metadata: Any = None) -> np.ndarray:
    if not isinstance(storage, _Storage):
        raise _FormatError(f"tensor rebuilt from {type(storage).__name__}, not a storage")
    dtype = np.dtype(storage.dtype if dtype is None else dtype)
    shape, strides, offset = tuple(map(int, size)), tuple(map(int, stride)), int(offset)
    if len(shape) != len(strides) or min(shape + strides + (offset,)) < 0:
        raise _FormatError(f"invalid tensor layout size={shape} stride={strides} offset={offset}")
    if 0 in shape:
        return np.empty(shape, dtype)
    # Python ints: a declared size or stride cannot overflow, and nothing is
    # allocated before the storage bounds and the budget are checked.
    last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
    end = (last + 1) * dtype.itemsize
    if end > storage.nbytes:
        raise _FormatError(f"tensor of shape {shape} reaches past the end of its storage")
    storage.budget.charge(math.prod(shape) * dtype.itemsize, f"a tensor of shape {shape}")
    flat = np.frombuffer(storage.read(end), dtype, count=last + 1)
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape, [s * dtype.itemsize for s in strides], writeable=False)
    array = np.array(view, order="C", copy=True)
    del flat, view  # release the storage's buffer so it can grow for the next tensor
    if storage.swap and dtype.itemsize > 1:
        unit = f"f{dtype.itemsize // 2}" if dtype.kind == "c" else f"u{dtype.itemsize}"
        array = array.view(unit).byteswap().view(dtype)
    array = -array if (metadata or {}).get("neg") else array  # lazy negation/conjugation bits
    return np.conj(array) if (metadata or {}).get("conj") else array


def _encode(text: str, encoding: str = "utf-8") -> bytes:  # `bytes` pickled by protocol 2
    if not isinstance(text, str) or codecs.lookup(encoding).name not in _TEXT_CODECS:
        raise _FormatError(f"unexpected _codecs.encode call with encoding {encoding!r}")
    return text.encode(encoding)


def _device(kind: str, index: int | None = None) -> str:
    return kind if index is None else f"{kind}:{index}"


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _encode,
    ("torch", "Size"): tuple,
    ("torch", "device"): _device,
    ("torch._utils", "_rebuild_tensor"): _to_array,
    ("torch._utils", "_rebuild_tensor_v2"):
        lambda storage, offset, size, stride, _grad, _hooks, metadata=None:
        _to_array(storage, offset, size, stride, metadata=metadata),
    ("torch._utils", "_rebuild_tensor_v3"):
        lambda storage, offset, size, stride, _grad, _hooks, dtype, metadata=None:
        _to_array(storage, offset, size, stride, dtype, metadata),
    ("torch._utils", "_rebuild_parameter"): lambda data, *_: data,
    ("torch._utils", "_rebuild_parameter_with_state"): lambda data, *_: data,
    ("torch._tensor", "_rebuild_from_type_v2"): lambda func, _type, args, _state: func(*args),
    ("torch", "Tensor"): None,
    ("torch._tensor", "Tensor"): None,
    ("torch.nn.parameter", "Parameter"): None,
    ("torch", "UntypedStorage"): np.dtype(np.uint8),
    ("torch.storage", "UntypedStorage"): np.dtype(np.uint8),
}
for _name, _storage_name, _np_dtype in _DTYPES:
    _SAFE_GLOBALS[("torch", _name)] = np.dtype(_np_dtype)
    if _storage_name:
        _SAFE_GLOBALS[("torch", _storage_name)] = np.dtype(_np_dtype)


def _as_class(module: str, name: str, value: Any) -> Any:
    """Make a stand-in usable by NEWOBJ, which needs a class, not a factory."""
    if value is PickledObject:
        return record_as_data(module, name)
    if isinstance(value, type) or not callable(value):
        return value
    return type(name, (), {"__new__": lambda _cls, *a, **k: value(*a, **k)})


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, zf: zipfile.ZipFile, prefix: str, path: str, swap: bool,
                 allowed: Mapping[tuple[str, str], Any], budget: _Budget) -> None:
        super().__init__(file)
        self._zf, self._prefix, self._path, self._swap = zf, prefix, path, swap
        self._allowed, self._budget = allowed, budget
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        if (module, name) in self._allowed:
            return _as_class(module, name, self._allowed[(module, name)])
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise UnsafeCheckpointError(
            f"{self._path}: the checkpoint asks to load code '{module}.{name}', which zoo never"
            f" runs; only tensors and plain containers are read (a caller that trusts it can"
            f" map it with allowed_globals). Fix: load a checkpoint that holds only tensors"
            f" (e.g. a state_dict saved with torch.save) from a source you trust")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], np.dtype)):
            raise _FormatError(f"unsupported persistent id {pid!r:.80}")
        dtype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if key not in self._storages:
            entry, nbytes = f"{self._prefix}data/{key}", numel * dtype.itemsize
            if nbytes < 0:
                raise _FormatError(f"storage {entry} declares {numel} elements")
            if nbytes and _entry_size(self._zf, entry) < nbytes:
                raise _FormatError(f"storage {entry} is truncated (or missing)")
            self._storages[key] = _Storage(self._zf, entry, nbytes, dtype, self._swap,
                                           self._budget)
        return self._storages[key]

    def close(self) -> None:
        for storage in self._storages.values():
            storage.close()


def _entry_size(zf: zipfile.ZipFile, name: str) -> int:
    """The uncompressed size a zip entry declares (-1 when it is missing)."""
    try:
        return zf.getinfo(name).file_size
    except KeyError:
        return -1


def _read_entry(zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A whole zip entry, refusing one that inflates past `limit` bytes."""
    with zf.open(name) as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise _FormatError(f"its {name} inflates past {limit:,} bytes (a zip bomb?)")
    return data


def _not_a_zip(head: bytes) -> str:
    if _LEGACY_MAGIC in head[:32] or head[257:262] == b"ustar":
        return ("uses the legacy (pre-1.6, non-zip) torch.save format, which is not supported;"
                " re-save it with a recent torch: torch.save(torch.load(old_path), new_path)")
    if head.startswith(b"PK"):
        return "is a truncated or corrupted zip archive, not a readable torch.save checkpoint"
    if head.startswith(b"\x80"):
        return "is a plain pickle file, not a torch.save checkpoint (zip archive)"
    return "is not a PyTorch checkpoint (not a zip archive written by torch.save)"


def load_torch_checkpoint(
    path: str | os.PathLike,
    *,
    allowed_globals: Mapping[tuple[str, str], Callable[..., Any]] | None = None,
) -> Any:
    """Load a `torch.save` checkpoint as numpy arrays and plain Python data.

    Works for HF `pytorch_model.bin`, ultralytics `.pt`, openai-whisper `.pt` and
    SD `.ckpt` files without importing torch. Tensors and `nn.Parameter`s become
    C-contiguous, writable numpy arrays (bfloat16 and float8 via `ml_dtypes`);
    views of one storage, strided tensors, 0-d and empty tensors are honoured.
    dict, OrderedDict, list, tuple, set, bytes and scalars rebuild as usual;
    `torch.Size` becomes a tuple, `torch.device` a string like `"cuda:0"` and a
    torch dtype a `numpy.dtype`. Any other global raises `UnsafeCheckpointError`
    unless `allowed_globals` maps it to a stand-in. A stand-in is called like
    the original class; since most pickled instances are created with
    `cls.__new__`, a plain factory is wrapped in a class for you. Passing
    `PickledObject` (or `record_as_data(module, name)`) as the stand-in records
    the instance as data: `.module`, `.name`, `.args`, `.kwargs` and `.state`.

    Memory stays bounded by the file's size, whatever it declares: a storage
    is read only as far as its tensors reach, `data.pkl` may not inflate past
    the file size + 1 MiB, and the storage bytes read plus the arrays built may
    not exceed 4x the file size + 64 MiB (a real checkpoint needs about 2x:
    torch.save stores storages uncompressed, and a storage shared by two
    tensors is materialised twice). A zero-stride view of a tiny storage or a
    compressed storage that would blow up past that is refused before
    anything is allocated.

    Args:
        path: The checkpoint file.
        allowed_globals: Maps `(module, name)` of trusted globals to safe
            replacements; never map a global to the real, importable object.

    Returns:
        The unpickled object, e.g. a state dict of numpy arrays.

    Raises:
        FileNotFoundError: `path` does not exist.
        UnsafeCheckpointError: The pickle names a global that is not allowed.
        ConversionError: (a ValueError) The file is empty, corrupt, a legacy
            (pre-1.6) checkpoint, a TorchScript archive, not a checkpoint at
            all, or would materialise more than the limit above.

    Example:
        state = load_torch_checkpoint("pytorch_model.bin")  # {name: np.ndarray}
        ckpt = load_torch_checkpoint(
            "yolov8n.pt",
            allowed_globals={("ultralytics.nn.tasks", "DetectionModel"): PickledObject})
        ckpt["model"].state["_modules"]  # the module tree, as data
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such checkpoint file: {path!r}")
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: is not a file, cannot read it as a PyTorch checkpoint")
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise ConversionError(f"{path}: the file is empty, not a PyTorch checkpoint")
    if not zipfile.is_zipfile(path):
        raise ConversionError(f"{path}: {_not_a_zip(head)}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pickles:
                raise _FormatError("is a zip archive without data.pkl, not a torch.save file")
            prefix = pickles[0][: -len("data.pkl")]
            if f"{prefix}constants.pkl" in names:
                raise _FormatError("is a TorchScript archive (torch.jit.save), not supported;"
                                   " save the model's state_dict() with torch.save instead")
            order = "little"
            if f"{prefix}byteorder" in names:
                order = _read_entry(zf, f"{prefix}byteorder", _BYTEORDER_MAX)
                order = order.decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise _FormatError(f"has an unknown byteorder {order!r}")
            allowed = allowed_globals if allowed_globals is not None else {}
            size = os.path.getsize(path)
            data = io.BytesIO(_read_entry(zf, pickles[0], size + _PICKLE_SLACK))
            unpickler = _Unpickler(data, zf, prefix, path, order != sys.byteorder, allowed,
                                   _Budget(size))
            try:
                return unpickler.load()
            finally:
                unpickler.close()
    except UnsafeCheckpointError:
        raise
    except _FormatError as e:
        raise ConversionError(f"{path}: {e}") from None
    except MemoryError:
        raise ConversionError(
            f"{path}: its pickle declares an object too large for memory; the file is corrupt"
            " or hostile. Fix: re-download the checkpoint") from None
    except Exception as e:
        raise ConversionError(
            f"{path}: corrupt or unsupported torch.save checkpoint ({type(e).__name__}: {e})"
        ) from e
