"""Tests for zoo.utils.torch_pickle: torch.save files read without torch."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import types
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from zoo.core.errors import ConversionError  # noqa: E402
from zoo.utils.torch_pickle import (  # noqa: E402
    PickledObject,
    UnsafeCheckpointError,
    load_torch_checkpoint,
    record_as_data,
)

pytestmark = pytest.mark.once  # numpy only: the same on every backend

REPO_ROOT = Path(__file__).resolve().parents[2]


class Point:
    """A small custom class, pickled by reference to this module."""

    def __init__(self, x, weight):
        self.x = x
        self.weight = weight


class Pair:
    """A class whose pickle calls the class with arguments (REDUCE)."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    def __reduce__(self):
        return (Pair, (self.a, self.b))


class Evil:
    """Runs a shell command when unpickled by a trusting loader."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvilEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"__import__('pathlib').Path({str(self.marker)!r}).touch()",))


def _save(obj, tmp_path, name="ckpt.pt", **kwargs):
    path = tmp_path / name
    torch.save(obj, path, **kwargs)
    return path


def _to_numpy(t):
    """Reference conversion of a torch tensor (any dtype) to numpy."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    if t.dtype == torch.float8_e4m3fn:
        return t.view(torch.uint8).numpy().view(ml_dtypes.float8_e4m3fn)
    return t.numpy()


def _assert_same(array, tensor):
    expected = _to_numpy(tensor)
    assert isinstance(array, np.ndarray)
    assert array.dtype == expected.dtype
    assert array.shape == expected.shape
    assert array.tobytes() == expected.tobytes(), (array, expected)  # bit-exact, C order
    assert array.flags.writeable and array.flags.c_contiguous and array.flags.owndata


def _assert_tree_same(got, ref):
    if isinstance(ref, torch.Tensor):
        _assert_same(got, ref)
    elif isinstance(ref, dict):
        assert type(got) is type(ref) and list(got) == list(ref)
        for key in ref:
            _assert_tree_same(got[key], ref[key])
    elif isinstance(ref, (list, tuple)):
        expected_type = tuple if isinstance(ref, torch.Size) else type(ref)
        assert type(got) is expected_type and len(got) == len(ref)
        for g, r in zip(got, ref):
            _assert_tree_same(g, r)
    else:
        assert got == ref and type(got) is type(ref)


def _roundtrip(obj, tmp_path):
    path = _save(obj, tmp_path)
    got = load_torch_checkpoint(path)
    _assert_tree_same(got, torch.load(path, weights_only=True))
    return got


@pytest.mark.parametrize("dtype", [
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8,
    torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool,
])
def test_each_dtype(tmp_path, dtype):
    gen = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        t = torch.randn(3, 5, generator=gen).to(dtype)
    elif dtype == torch.bool:
        t = torch.randint(0, 2, (3, 5), generator=gen).bool()
    else:
        info = torch.iinfo(dtype)
        t = torch.randint(max(info.min, -1000), min(info.max, 1000), (3, 5), generator=gen,
                          dtype=dtype)
    _roundtrip({"t": t}, tmp_path)


def test_new_dtypes_rebuilt_with_v3(tmp_path):
    f8 = torch.tensor([0.5, -1.0, 2.0, 448.0]).to(torch.float8_e4m3fn)
    u16 = torch.tensor([0, 1, 65535], dtype=torch.uint16)
    got = _roundtrip({"f8": f8, "u16": u16}, tmp_path)
    assert got["f8"].dtype == ml_dtypes.float8_e4m3fn and got["u16"].dtype == np.uint16


def test_views_of_one_shared_storage(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    obj = {"base": base, "row": base[1], "col": base[:, 2], "mid": base.view(-1)[5:17]}
    path = _save(obj, tmp_path)
    with zipfile.ZipFile(path) as zf:  # one storage really is shared by every view
        assert sum("/data/" in n for n in zf.namelist()) == 1
    got = load_torch_checkpoint(path)
    _assert_tree_same(got, torch.load(path, weights_only=True))
    got["base"][1, 2] = -1.0  # results are independent copies
    assert got["row"][2] == 8.0 and got["col"][1] == 8.0


def test_non_contiguous_tensors(tmp_path):
    t = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    obj = {
        "transposed": t[0].t(),
        "sliced": t[:, ::2, 1::3],
        "permuted": t.permute(2, 0, 1),
        "expanded": torch.tensor([[1.0], [2.0]]).expand(2, 3),
        "element": t[2, 3, 1],
    }
    assert not obj["transposed"].is_contiguous() and obj["expanded"].stride() == (1, 0)
    got = _roundtrip(obj, tmp_path)
    np.testing.assert_array_equal(got["transposed"], np.arange(20).reshape(4, 5).T)


def test_nested_containers_and_plain_values(tmp_path):
    obj = {
        "od": OrderedDict([("z", torch.ones(2)), ("a", torch.zeros(1, dtype=torch.int64))]),
        "list": [torch.tensor([1, 2]), (torch.tensor([3.0]), 3, "x"), {"none": None}],
        "scalars": (1.5, True, -7, "text", b"\x00\xff bytes", None),
        "size": torch.Size([2, 3]),
    }
    got = _roundtrip(obj, tmp_path)
    assert type(got["od"]) is OrderedDict and list(got["od"]) == ["z", "a"]
    assert got["size"] == (2, 3) and type(got["size"]) is tuple


def test_set_device_and_dtype_values(tmp_path):
    path = _save({"set": {1, 2}, "device": torch.device("cpu"), "dtype": torch.float16},
                 tmp_path)
    got = load_torch_checkpoint(path)
    assert got == {"set": {1, 2}, "device": "cpu", "dtype": np.dtype(np.float16)}


def test_zero_dim_and_empty_tensors(tmp_path):
    obj = {
        "scalar": torch.tensor(3.5),
        "int_scalar": torch.tensor(7),
        "offset_scalar": torch.arange(10.0)[7],
        "empty": torch.zeros(0),
        "empty_3d": torch.zeros(2, 0, 3, dtype=torch.bfloat16),
    }
    got = _roundtrip(obj, tmp_path)
    assert got["scalar"].shape == () and float(got["offset_scalar"]) == 7.0
    assert got["empty_3d"].shape == (2, 0, 3)


def test_module_state_dict(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
        torch.nn.Linear(4, 2), torch.nn.LayerNorm(2),
    )
    model[1].running_mean.add_(0.25)
    state = model.state_dict()
    got = _roundtrip(state, tmp_path)
    assert list(got) == list(state)
    steps = got["1.num_batches_tracked"]
    assert steps.dtype == np.int64 and steps.ndim == 0


def test_parameters_and_tensors_with_attributes_become_arrays(tmp_path):
    p = torch.nn.Parameter(torch.randn(2, 3))
    tagged_p = torch.nn.Parameter(torch.randn(4))
    tagged_p.note = "python state"  # pickled through torch._tensor._rebuild_from_type_v2
    tagged = torch.arange(3.0)
    tagged.note = "python state"
    obj = {"p": p, "tagged_p": tagged_p, "tagged": tagged}
    got = load_torch_checkpoint(_save(obj, tmp_path))
    for key, tensor in obj.items():
        _assert_same(got[key], tensor.detach())


@pytest.mark.parametrize("cls, forbidden", [
    (Evil, f"{os.system.__module__}.system"), (EvilEval, "builtins.eval"),
])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, cls, forbidden):
    marker = tmp_path / "pwned"
    path = _save({"weights": torch.ones(2), "payload": cls(marker)}, tmp_path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_torch_checkpoint(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert forbidden in message and str(path) in message and "never" in message
    assert "\n" not in message
    assert not marker.exists()


def test_custom_class_refused_by_default(tmp_path):
    path = _save(Point(1, torch.ones(2)), tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=f"{Point.__module__}.Point"):
        load_torch_checkpoint(path)


def test_allowed_globals_records_custom_class_as_data(tmp_path):
    path = _save({"pt": Point(3, torch.arange(4.0)), "pair": Pair("a", 2)}, tmp_path)
    allowed = {(Point.__module__, "Point"): PickledObject,
               (Pair.__module__, "Pair"): record_as_data(Pair.__module__, "Pair")}
    got = load_torch_checkpoint(path, allowed_globals=allowed)
    pt, pair = got["pt"], got["pair"]
    assert isinstance(pt, PickledObject) and not isinstance(pt, Point)
    assert (pt.module, pt.name, pt.args) == (Point.__module__, "Point", ())
    assert set(pt.state) == {"x", "weight"} and pt.state["x"] == 3
    np.testing.assert_array_equal(pt.state["weight"], np.arange(4.0, dtype=np.float32))
    assert (pair.name, pair.args, pair.state) == ("Pair", ("a", 2), None)


def test_allowed_globals_plain_factory(tmp_path):
    path = _save(Point(5, torch.ones(1)), tmp_path)
    got = load_torch_checkpoint(
        path, allowed_globals={(Point.__module__, "Point"): lambda: types.SimpleNamespace()})
    assert isinstance(got, types.SimpleNamespace) and got.x == 5


def test_whole_module_walked_as_data(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    path = _save({"model": model}, tmp_path)
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.container.Sequential"):
        load_torch_checkpoint(path)
    allowed = {("torch.nn.modules.container", "Sequential"): PickledObject,
               ("torch.nn.modules.linear", "Linear"): PickledObject,
               ("torch.nn.modules.activation", "ReLU"): PickledObject}
    got = load_torch_checkpoint(path, allowed_globals=allowed)["model"]
    linear = got.state["_modules"]["0"]
    assert linear.name == "Linear" and got.state["_modules"]["1"].name == "ReLU"
    np.testing.assert_array_equal(linear.state["_parameters"]["weight"],
                                  model[0].weight.detach().numpy())


def _raw_checkpoint(tmp_path, data_pkl, storages, byteorder="little"):
    """Write a hand-made torch.save-style zip archive."""
    path = tmp_path / "raw.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", byteorder)
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


def _tensor_pickle(tensors):
    """Protocol-2 opcodes for {name: (storage class, key, numel, shape, stride)}."""
    def text(s):
        return b"X" + struct.pack("<I", len(s)) + s.encode()

    def ints(values):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    out = b"\x80\x02}("
    for name, (storage, key, numel, shape, stride) in tensors.items():
        out += text(name) + b"ctorch._utils\n_rebuild_tensor\n("
        out += b"(" + text("storage") + f"ctorch\n{storage}\n".encode() + text(key)
        out += text("cpu") + b"J" + struct.pack("<i", numel) + b"tQ"
        out += b"K\x00" + ints(shape) + ints(stride) + b"tR"
    return out + b"u."


def test_big_endian_archive(tmp_path):
    f32 = np.array([1.5, -2.0, 3.25], np.float32)
    bf16 = np.array([1.0, -0.5], ml_dtypes.bfloat16)
    c64 = np.array([1 + 2j, -3.5j], np.complex64)
    data = _tensor_pickle({"f": ("FloatStorage", "0", 3, [3], [1]),
                           "b": ("BFloat16Storage", "1", 2, [2], [1]),
                           "c": ("ComplexFloatStorage", "2", 2, [2], [1])})
    storages = {"0": f32.astype(">f4").tobytes(),
                "1": bf16.view(np.uint16).astype(">u2").tobytes(),
                "2": c64.astype(">c8").tobytes()}
    got = load_torch_checkpoint(_raw_checkpoint(tmp_path, data, storages, "big"))
    np.testing.assert_array_equal(got["f"], f32)
    np.testing.assert_array_equal(got["b"].astype(np.float32), bf16.astype(np.float32))
    np.testing.assert_array_equal(got["c"], c64)


@pytest.mark.parametrize("shape, stride", [([100], [1]), ([2, 2], [1, 50]), ([2], [-1])])
def test_tensor_outside_its_storage_is_rejected(tmp_path, shape, stride):
    data = _tensor_pickle({"t": ("FloatStorage", "0", 4, shape, stride)})
    path = _raw_checkpoint(tmp_path, data, {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(ValueError, match="storage|layout"):
        load_torch_checkpoint(path)


def test_legacy_format_gives_clear_error(tmp_path):
    path = _save({"t": torch.ones(2)}, tmp_path, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="legacy") as info:
        load_torch_checkpoint(path)
    assert str(path) in str(info.value) and "re-save" in str(info.value)


def test_random_bytes_empty_and_missing_files(tmp_path):
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a PyTorch checkpoint") as info:
        load_torch_checkpoint(noise)
    assert str(noise) in str(info.value)

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_torch_checkpoint(empty)

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_torch_checkpoint(tmp_path / "missing.pt")

    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ValueError, match="plain pickle"):
        load_torch_checkpoint(plain)


def test_truncated_and_corrupted_archives(tmp_path):
    good = _save({"t": torch.randn(64, 64)}, tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupted") as info:
        load_torch_checkpoint(truncated)
    assert str(truncated) in str(info.value)

    garbage = _raw_checkpoint(tmp_path, b"\x80\x02\xff not a pickle", {})
    with pytest.raises(ValueError, match="corrupt") as info:
        load_torch_checkpoint(garbage)
    assert type(info.value) is ConversionError and str(garbage) in str(info.value)

    scripted = tmp_path / "scripted.pt"
    with warnings.catch_warnings():  # torch.jit is deprecated in recent torch
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    with pytest.raises(ValueError, match="TorchScript"):
        load_torch_checkpoint(scripted)

    not_torch = tmp_path / "other.zip"
    with zipfile.ZipFile(not_torch, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="without data.pkl"):
        load_torch_checkpoint(not_torch)


def test_module_does_not_import_torch(tmp_path):
    path = _save({"t": torch.ones(3)}, tmp_path)
    code = ("import sys; from zoo.utils.torch_pickle import load_torch_checkpoint as load; "
            f"out = load({str(path)!r}); assert out['t'].sum() == 3; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
