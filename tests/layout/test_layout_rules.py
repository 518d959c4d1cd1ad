"""Layout maps: rules, validation errors, and the non-jax guard (one device)."""

import keras
import numpy as np
import pytest

from zoo.core import deferred
from zoo.layout import LayoutError, ZooLayoutMap, column_parallel, validate
from zoo.models import BertBackbone, OPTBackbone, WhisperBackbone

OPT = dict(vocabulary_size=64, num_layers=2, num_heads=4, hidden_dim=16,
           intermediate_dim=32, max_sequence_length=32)
WHISPER = dict(vocabulary_size=64, num_encoder_layers=2, num_decoder_layers=2, num_heads=4,
               hidden_dim=32, intermediate_dim=64, num_mels=4, max_encoder_sequence_length=10,
               max_decoder_sequence_length=16)

jax_only = pytest.mark.skipif(keras.backend.backend() != "jax", reason="sharding runs on jax")
off_jax = pytest.mark.skipif(keras.backend.backend() == "jax", reason="the guard is for tf/torch")


def fake_mesh(shape):
    # Validation only reads the mesh's shape and axis names, so one device
    # listed N times stands in for N devices (nothing is placed here).
    devices = keras.distribution.list_devices()[:1] * int(np.prod(shape))
    return keras.distribution.DeviceMesh(shape, ["batch", "model"], devices)


def abstract(cls, **config):
    model, _ = deferred.abstract_build(lambda: cls(**config))
    return model


def attention_layers(model):
    return [layer for layer in model._flatten_layers() if hasattr(layer, "query_dense")]


@jax_only
def test_opt_map_names_the_megatron_layouts():
    layout_map = OPTBackbone.get_layout_map(fake_mesh((2, 4)))
    assert isinstance(layout_map, ZooLayoutMap)
    expected = {
        "token_embedding/embeddings": ("model", None),
        "position_embedding/embeddings": (None, "model"),
        "transformer_layer_1/self_attention/key/kernel": (None, "model"),
        "transformer_layer_1/self_attention/key/bias": ("model",),
        "transformer_layer_1/self_attention/output/kernel": ("model", None),
        "transformer_layer_1/self_attention/output/bias": (None,),
        "transformer_layer_0/intermediate_dense/kernel": (None, "model"),
        "transformer_layer_0/output_dense/kernel": ("model", None),
        "project_in/kernel": (None, "model"),
    }
    for path, axes in expected.items():
        assert tuple(layout_map[path].axes) == axes, path
    assert layout_map["transformer_layer_0/output_layer_norm/gamma"] is None
    model = abstract(OPTBackbone, **OPT)
    assert validate(layout_map, model.weights, attention_layers(model)) == []


@jax_only
def test_whisper_map_names_the_megatron_layouts():
    layout_map = WhisperBackbone.get_layout_map(fake_mesh((2, 4)))
    expected = {
        "token_embedding/embeddings": ("model", None),
        "decoder_position_embedding/embeddings": (None, "model"),
        "encoder_position_embedding/embeddings": (None, "model"),
        "encoder_layer_0/self_attention/query/kernel": (None, "model"),
        "encoder_layer_0/self_attention/query/bias": ("model",),
        "encoder_layer_1/self_attention/output/kernel": ("model", None),
        "encoder_layer_1/intermediate_dense/kernel": (None, "model"),
        "encoder_layer_1/output_dense/kernel": ("model", None),
        "decoder_layer_1/self_attention/value/kernel": (None, "model"),
        "decoder_layer_0/cross_attention/key/kernel": (None, "model"),
        "decoder_layer_0/cross_attention/query/bias": ("model",),
        "decoder_layer_1/cross_attention/output/kernel": ("model", None),
        "decoder_layer_1/cross_attention/output/bias": (None,),
        "decoder_layer_0/output_dense/kernel": ("model", None),
    }
    for path, axes in expected.items():
        assert tuple(layout_map[path].axes) == axes, path
    for path in ("encoder_conv1/kernel", "encoder_conv2/bias", "encoder_layer_norm/gamma",
                 "decoder_layer_0/cross_attention_layer_norm/gamma"):
        assert layout_map[path] is None, path
    model = abstract(WhisperBackbone, **WHISPER)
    attention = attention_layers(model)
    assert len(attention) == 6  # 2 encoder self-, 2 decoder self- and 2 cross-attentions
    assert validate(layout_map, model.weights, attention) == []  # every rule matches


@jax_only
def test_whisper_heads_that_the_mesh_does_not_divide_are_an_error(tmp_path):
    model = abstract(WhisperBackbone, **WHISPER)  # 4 heads; every split size divides 8
    cross = [layer for layer in attention_layers(model) if layer.name == "cross_attention"]
    with pytest.raises(LayoutError, match="'decoder_layer_0/cross_attention' has 4 heads.*"
                                          "size 8 does not divide"):
        validate(WhisperBackbone.get_layout_map(fake_mesh((1, 8))), model.weights, cross)
    WhisperBackbone(**WHISPER).save_to_preset(tmp_path / "w")
    layout_map = WhisperBackbone.get_layout_map(fake_mesh((1, 8)))
    with keras.distribution.ModelParallel(layout_map=layout_map).scope():
        with pytest.raises(LayoutError, match="WhisperBackbone: attention .* has 4 heads"):
            WhisperBackbone.from_preset(tmp_path / "w")


@jax_only
def test_custom_axis_names():
    devices = keras.distribution.list_devices()[:1] * 8
    mesh = keras.distribution.DeviceMesh((2, 4), ["data", "tensor"], devices)
    layout_map = BertBackbone.get_layout_map(mesh, model_dim="tensor", batch_dim="data")
    assert tuple(layout_map["token_embedding/embeddings"].axes) == (None, "tensor")
    with pytest.raises(LayoutError, match="model_dim='model' is not an axis"):
        BertBackbone.get_layout_map(mesh)


@jax_only
def test_a_rule_that_matches_nothing_is_an_error():
    layout_map = OPTBackbone.get_layout_map(fake_mesh((1, 4)))
    layout_map[column_parallel("transformer_layer_\\d+/mlp_in").weight_key()] = (None, "model")
    model = abstract(OPTBackbone, **OPT)
    with pytest.raises(LayoutError, match="mlp_in.*matches no variable"):
        validate(layout_map, model.weights, attention_layers(model))


@jax_only
def test_heads_that_the_mesh_does_not_divide_are_an_error():
    layout_map = OPTBackbone.get_layout_map(fake_mesh((1, 8)))
    model = abstract(OPTBackbone, **OPT)  # 4 heads
    with pytest.raises(LayoutError, match="has 4 heads.*size 8 does not divide"):
        validate(layout_map, model.weights, attention_layers(model))


@jax_only
def test_sizes_that_the_mesh_does_not_divide_are_an_error():
    layout_map = OPTBackbone.get_layout_map(fake_mesh((1, 2)))
    model = abstract(OPTBackbone, **{**OPT, "vocabulary_size": 63})
    with pytest.raises(LayoutError, match="token_embedding/embeddings.*dimension 0 \\(63\\)"):
        validate(layout_map, model.weights, attention_layers(model))


@jax_only
def test_large_replicated_variables_are_reported():
    layout_map = ZooLayoutMap(fake_mesh((1, 2)), [column_parallel("pooled_dense")],
                              "model", "batch", "Test")
    model = abstract(BertBackbone, vocabulary_size=4096, num_layers=1, num_heads=2,
                     hidden_dim=128, intermediate_dim=256, max_sequence_length=16)
    with pytest.warns(UserWarning, match="full copy: token_embedding/embeddings"):
        report = validate(layout_map, model.weights, attention_layers(model))
    assert any(r.startswith("token_embedding/embeddings (4096, 128)") for r in report)
    assert not any("pooled_dense" in r for r in report)


@jax_only
def test_from_preset_checks_before_placing_anything(tmp_path):
    OPTBackbone(**OPT).save_to_preset(tmp_path / "p")
    mesh = keras.distribution.DeviceMesh((1, 8), ["batch", "model"],
                                         keras.distribution.list_devices()[:1] * 8)
    layout_map = OPTBackbone.get_layout_map(mesh)
    with keras.distribution.ModelParallel(layout_map=layout_map).scope():
        with pytest.raises(LayoutError, match="4 heads"):
            OPTBackbone.from_preset(tmp_path / "p")


@off_jax
def test_sharding_off_jax_is_a_clear_error():
    mesh = keras.distribution.DeviceMesh((1, 1), ["batch", "model"], ["cpu:0"])
    with pytest.raises(LayoutError, match="jax backend only"):
        OPTBackbone.get_layout_map(mesh)
    for distribution in (keras.distribution.DataParallel(devices=["cpu:0"]),
                         keras.distribution.ModelParallel(
                             layout_map=keras.distribution.LayoutMap(mesh))):
        with distribution.scope(), pytest.raises(LayoutError, match="jax backend only"):
            OPTBackbone(**OPT)


@off_jax
def test_whisper_sharding_off_jax_is_a_clear_error():
    mesh = keras.distribution.DeviceMesh((1, 1), ["batch", "model"], ["cpu:0"])
    with pytest.raises(LayoutError, match="WhisperBackbone.get_layout_map runs on the jax"):
        WhisperBackbone.get_layout_map(mesh)
    with keras.distribution.ModelParallel(layout_map=keras.distribution.LayoutMap(mesh)).scope():
        with pytest.raises(LayoutError, match="jax backend only"):
            WhisperBackbone(**WHISPER)
