"""Reading original checkpoints: safetensors (own parser), torch pickles, shards."""

import json

import ml_dtypes
import numpy as np
import pytest
import torch

from tests.nlp.bert.reference import make_hf_bert
from zoo.core.errors import ConversionError
from zoo.models import BertBackbone
from zoo.presets.checkpoint_io import WeightReader, read_safetensors, read_transformers_weights


def test_safetensors_dtypes_match_the_library(tmp_path):
    from safetensors.torch import save_file

    tensors = {
        "f32": torch.randn(3, 4),
        "f16": torch.randn(5).half(),
        "bf16": torch.randn(2, 3).bfloat16(),
        "i64": torch.arange(6).reshape(2, 3),
        "b": torch.tensor([True, False]),
    }
    save_file(tensors, tmp_path / "x.safetensors")
    ours = read_safetensors(tmp_path / "x.safetensors")
    assert ours["bf16"].dtype == ml_dtypes.bfloat16
    for name, tensor in tensors.items():
        expected = tensor.float().numpy() if name == "bf16" else tensor.numpy()
        np.testing.assert_array_equal(np.asarray(ours[name]).astype(expected.dtype), expected)


def test_truncated_safetensors(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.ones((64, 64), "float32")}, tmp_path / "x.safetensors")
    data = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "x.safetensors").write_bytes(data[:-100])
    with pytest.raises(ConversionError, match="truncated"):
        read_safetensors(tmp_path / "x.safetensors")
    (tmp_path / "y.safetensors").write_bytes(b"\x01")
    with pytest.raises(ConversionError, match="not a readable safetensors"):
        read_safetensors(tmp_path / "y.safetensors")


def test_pytorch_bin_and_sharded_index_give_the_same_weights(tmp_path, zoo_home):
    folder = make_hf_bert(tmp_path / "st", "BertModel")
    reference = read_transformers_weights(folder)
    state = {k: torch.from_numpy(np.array(v)) for k, v in reference.items()}

    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        (bin_folder / name).write_bytes((folder / name).read_bytes())
    torch.save(state, bin_folder / "pytorch_model.bin")

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    for file, keys in halves.items():
        torch.save({k: state[k] for k in keys}, sharded / file)
    weight_map = {k: f for f, keys in halves.items() for k in keys}
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))

    for other in (read_transformers_weights(bin_folder), read_transformers_weights(sharded)):
        assert other.keys() == reference.keys()
        for key in reference:
            np.testing.assert_array_equal(other[key], reference[key])
    # And the .bin folder converts to the same model as the safetensors one.
    a = BertBackbone.from_preset(folder)
    b = BertBackbone.from_preset(bin_folder)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_weight_reader_tracks_use_and_aliases():
    reader = WeightReader({"a.gamma": np.ones(2), "b": np.zeros(1)}, "ckpt")
    np.testing.assert_array_equal(reader.take("a.weight", "a.gamma"), np.ones(2))
    assert reader.unused() == ["b"]
    with pytest.raises(ConversionError, match="lacks the weight 'c'"):
        reader.take("c")


def _rss_file_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.once
@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="RssFile comes from Linux's /proc/self/status")
def test_release_mapped_pages_unmaps_the_source_and_keeps_arrays_readable(tmp_path):
    from safetensors.numpy import save_file

    from zoo.presets.checkpoint_io import release_mapped_pages

    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((1024, 4096)).astype(np.float16),  # 8 MiB each
               "b": rng.standard_normal((1024, 4096)).astype(np.float16)}
    save_file(tensors, str(tmp_path / "x.safetensors"))
    arrays = read_safetensors(tmp_path / "x.safetensors")
    before = _rss_file_kib()
    total = sum(float(a.astype(np.float32).sum()) for a in arrays.values())  # touch every page
    touched = _rss_file_kib() - before
    assert touched > 12 * 1024, touched  # both tensors' pages are now mapped in
    assert release_mapped_pages() >= 1
    assert _rss_file_kib() - before < 2 * 1024  # and gone again
    for name, array in tensors.items():  # still readable, from the file
        np.testing.assert_array_equal(arrays[name], array)
    assert np.isfinite(total)


def test_streamed_port_releases_the_source_pages_after_its_cast(monkeypatch):
    from zoo.core import deferred
    from zoo.presets import checkpoint_io

    calls = []
    monkeypatch.setattr(checkpoint_io, "release_mapped_pages", lambda: calls.append(1) or 0)
    import keras

    def build():
        layer = keras.layers.Dense(3)
        layer.build((None, 2))
        return layer

    layer, _ = deferred.abstract_build(build)
    kernel = layer.kernel
    assert deferred.is_deferred(kernel)
    source = np.arange(6, dtype=np.float16).reshape(2, 3)
    with deferred.streamed_values():
        checkpoint_io.port_weight(kernel, source)
    assert calls == []  # nothing is read before the writer asks
    value = deferred.later_value(kernel)
    assert calls == [1]
    np.testing.assert_array_equal(value, source.astype(np.float32))
