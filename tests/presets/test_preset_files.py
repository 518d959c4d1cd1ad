"""Preset directories: sha256 checks, missing files, merging, upload validation."""

import json

import numpy as np
import pytest

import zoo.presets
from tests.nlp.bert.test_bert_tasks import tiny_backbone, tiny_preprocessor
from zoo.core import preset_io, weights_io
from zoo.core.errors import PresetError
from zoo.models import Backbone, BertPreprocessor, BertTextClassifier, BertTokenizer


@pytest.fixture
def preset(tmp_path):
    clf = BertTextClassifier(tiny_backbone(), num_classes=2, preprocessor=tiny_preprocessor())
    clf.save_to_preset(tmp_path / "preset")
    return tmp_path / "preset"


def test_preset_layout_and_metadata(preset):
    names = sorted(p.name for p in preset.iterdir())
    assert names == ["assets", "config.json", "metadata.json", "model.weights.h5",
                     "preprocessor.json", "task.json", "task.weights.h5", "tokenizer.json"]
    meta = json.loads((preset / "metadata.json").read_text())
    assert meta["backbone_class"] == "BertBackbone"
    assert meta["task_class"] == "BertTextClassifier"
    assert meta["parameter_count"] == Backbone.from_preset(preset).count_params()
    assert set(meta["files"]) >= {"model.weights.h5", "task.weights.h5", "config.json"}
    for name, digest in meta["files"].items():
        assert preset_io.sha256_file(preset / name) == digest
    assert meta["zoo_version"] and meta["keras_version"]


def test_truncated_weights_file(preset):
    path = preset / "model.weights.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(PresetError, match="corrupt or truncated") as info:
        Backbone.from_preset(preset)
    assert "model.weights.h5" in str(info.value) and "Fix:" in str(info.value)


def test_missing_config(preset):
    (preset / "config.json").unlink()
    with pytest.raises(PresetError, match="missing config.json"):
        Backbone.from_preset(preset)


def test_invalid_json(preset):
    # an edited file fails its recorded sha256 before it is parsed (a file
    # broken with its sha256 updated: tests/presets/test_hostile_presets.py)
    (preset / "preprocessor.json").write_text("{not json")
    with pytest.raises(PresetError, match="preprocessor.json is corrupt or truncated, or was "
                                          "edited"):
        BertPreprocessor.from_preset(preset)


def test_wrong_class(preset):
    import keras

    @keras.saving.register_keras_serializable(package="zoo_tests")
    class OtherBackbone(Backbone):
        pass

    with pytest.raises(PresetError, match="holds a BertBackbone, which is not a OtherBackbone"):
        OtherBackbone.from_preset(preset)


def test_parts_merge_into_one_preset(tmp_path):
    directory = tmp_path / "merged"
    backbone = tiny_backbone()
    backbone.save_to_preset(directory)
    tiny_preprocessor().save_to_preset(directory)
    assert {"config.json", "model.weights.h5", "preprocessor.json", "tokenizer.json"} <= {
        p.name for p in directory.iterdir()}
    preset_io.verify_preset(directory)
    pre = BertPreprocessor.from_preset(directory)
    assert pre.sequence_length == 16 and pre.tokenizer.vocabulary_size() == 64


def test_refuses_to_write_into_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PresetError, match="not a zoo preset"):
        tiny_backbone().save_to_preset(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_sharded_weights_round_trip(tmp_path):
    backbone = tiny_backbone()
    files = weights_io.save_weights(backbone.weights, tmp_path, "model", max_shard_bytes=4096)
    assert files[0] == "model.weights.json" and len(files) > 3
    other = tiny_backbone()
    weights_io.load_weights(other.weights, tmp_path, "model")
    for a, b in zip(backbone.weights, other.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_weights_that_do_not_fit_are_refused(tmp_path):
    from zoo.models import BertBackbone

    weights_io.save_weights(tiny_backbone().weights, tmp_path, "model")

    wider = BertBackbone(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=32,
                         intermediate_dim=32, max_sequence_length=32)
    with pytest.raises(PresetError, match="has shape"):
        weights_io.load_weights(wider.weights, tmp_path, "model")
    deeper = BertBackbone(vocabulary_size=64, num_layers=3, num_heads=2, hidden_dim=16,
                          intermediate_dim=32, max_sequence_length=32)
    with pytest.raises(PresetError, match="missing"):
        weights_io.load_weights(deeper.weights, tmp_path, "model")


def test_upload_validates_before_sending(preset, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id))

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls.append(("upload_folder", repo_id, folder_path))
            return type("Info", (), {"commit_url": f"hub/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    # the suite runs offline (HF_HUB_OFFLINE): pretend the Hub is reachable
    monkeypatch.setattr("zoo.presets.handles.hf_unreachable", lambda: None)
    assert zoo.presets.upload(preset, "hf://me/tiny") == "hub/me/tiny/commit/1"
    assert calls == [("create_repo", "me/tiny"), ("upload_folder", "me/tiny", str(preset))]

    calls.clear()
    weights = preset / "task.weights.h5"
    weights.write_bytes(weights.read_bytes() + b"tampered")
    with pytest.raises(PresetError, match="corrupt"):
        zoo.presets.upload(preset, "hf://me/tiny")
    with pytest.raises(PresetError, match="not hf://org/repo"):
        zoo.presets.upload(preset, "s3://bucket/x")
    assert calls == []
