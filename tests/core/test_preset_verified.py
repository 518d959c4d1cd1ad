"""zoo.core.verified: an unchanged preset file is hashed once, not on every
load; any change to it, or a fresh file, is hashed again."""

from __future__ import annotations

import os

import numpy as np
import pytest

from zoo.core import preset_io
from zoo.core.errors import PresetError
from zoo.models import BertBackbone

pytestmark = pytest.mark.once  # file checks: the same on every backend

TINY = dict(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
            intermediate_dim=16, max_sequence_length=16)


@pytest.fixture
def preset(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_REVERIFY", raising=False)
    directory = tmp_path / "bert"
    BertBackbone(**TINY).save_to_preset(directory)
    for f in directory.rglob("*"):
        os.utime(f, (1e9, 1e9))  # old files (fresh ones are never remembered)
    return directory


@pytest.fixture
def hashed(monkeypatch):
    """The names of the files hashed through `sha256_file`."""
    names: list[str] = []
    real = preset_io.sha256_file

    def counting(path, *args, **kwargs):
        names.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(preset_io, "sha256_file", counting)
    return names


def test_an_unchanged_preset_is_hashed_once(preset, hashed):
    BertBackbone.from_preset(preset)
    assert "model.weights.h5" in hashed
    hashed.clear()
    BertBackbone.from_preset(preset)
    assert "model.weights.h5" not in hashed


def test_a_changed_file_is_hashed_again_even_with_its_old_time(preset, hashed):
    BertBackbone.from_preset(preset)
    weights = preset / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # one byte, same size, in place
    with open(weights, "r+b") as f:
        f.write(bytes(data))
    os.utime(weights, (1e9, 1e9))  # the modification time put back: ctime still moved
    with pytest.raises(PresetError, match="corrupt or truncated"):
        BertBackbone.from_preset(preset)


def test_fresh_files_and_reverify_are_hashed_every_time(preset, hashed, monkeypatch):
    os.utime(preset / "model.weights.h5")  # modified just now
    for _ in range(2):
        BertBackbone.from_preset(preset)
    assert hashed.count("model.weights.h5") == 2
    for f in preset.rglob("*"):
        os.utime(f, (1e9, 1e9))
    hashed.clear()
    monkeypatch.setenv("ZOO_REVERIFY", "1")
    for _ in range(2):
        BertBackbone.from_preset(preset)
    assert hashed.count("model.weights.h5") == 2


def test_loads_equal_with_and_without_the_hash(preset):
    first = BertBackbone.from_preset(preset)
    second = BertBackbone.from_preset(preset)  # weights not hashed this time
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
