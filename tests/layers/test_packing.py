"""Padding removal (zoo.layers.packing): packed encoder blocks give the padded
blocks' outputs at every real position, on every backend."""

import warnings

import keras
import numpy as np
import pytest

from zoo.layers.packing import pack, packing, packing_supported, unpack
from zoo.layers.transformer_encoder import TransformerEncoderLayer

MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]],
                "int32")


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_pack_and_unpack_round_trip_with_an_empty_row():
    x = np.random.default_rng(0).standard_normal((4, 6, 3)).astype("float32")
    p = packing(MASK)
    packed = numpy(pack(x, p))
    np.testing.assert_array_equal(packed, x[MASK.astype(bool)])
    np.testing.assert_array_equal(numpy(unpack(packed, p, 6)), x * MASK[..., None])
    assert packing_supported() == (keras.backend.backend() != "jax")


def _pair(dropout: float = 0.0) -> tuple:
    layers = [TransformerEncoderLayer(8, 2, 16, dropout=dropout, attention_dropout=dropout,
                                      remove_padding=flag) for flag in (False, True)]
    for layer in layers:
        layer.build((4, 6, 8))
    layers[1].set_weights(layers[0].get_weights())
    return layers


def test_packed_block_equals_padded_block_at_real_positions():
    padded, packed = _pair()
    x = np.random.default_rng(1).standard_normal((4, 6, 8)).astype("float32")
    want, got = numpy(padded(x, padding_mask=MASK)), numpy(packed(x, padding_mask=MASK))
    real = MASK.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-5)
    if packing_supported():
        assert np.all(got[~real] == 0)  # the packed path ran
    else:
        np.testing.assert_array_equal(got, want)  # JAX keeps the padded layout
    assert packed.get_config()["remove_padding"] is True
    assert TransformerEncoderLayer.from_config(packed.get_config()).remove_padding


def test_packed_block_in_a_tensorflow_graph_and_in_training():
    padded, packed = _pair()
    x = np.random.default_rng(2).standard_normal((4, 6, 8)).astype("float32")
    real = MASK.astype(bool)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        graph = tf.function(lambda a, m: packed(a, padding_mask=m))
        for mask in (MASK, MASK[::-1].copy()):  # one trace, masks of different token counts
            keep = mask.astype(bool)
            np.testing.assert_allclose(numpy(graph(x, mask))[keep],
                                       numpy(padded(x, padding_mask=mask))[keep], atol=1e-5)
        assert packed.supports_jit is False  # compile(jit_compile="auto") picks a plain graph
    got = numpy(packed(x, padding_mask=MASK, training=True))  # dropout 0: same values
    np.testing.assert_allclose(got[real], numpy(padded(x, padding_mask=MASK))[real], atol=1e-5)


@pytest.mark.parametrize("jit_compile", ["auto", True])
def test_bert_backbone_removes_padding_and_predicts_compiled(jit_compile):
    from zoo.models import BertBackbone

    if jit_compile is True and keras.backend.backend() == "torch":
        pytest.skip("jit_compile=True is torch.compile on torch (a minute of compiling)")
    config = dict(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8,
                  intermediate_dim=16)
    packed = BertBackbone(**config)
    padded = BertBackbone(**config, remove_padding=False)
    padded.set_weights(packed.get_weights())
    assert packed.get_config()["remove_padding"] is True
    ids = np.random.default_rng(3).integers(1, 50, MASK.shape).astype("int32") * MASK
    batch = {"token_ids": ids, "segment_ids": 0 * ids, "padding_mask": MASK}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TensorFlow: "Model doesn't support jit_compile=True"
        packed.compile(jit_compile=jit_compile)
    got = packed.predict_on_batch(batch)
    want = padded.predict_on_batch(batch)
    real = MASK.astype(bool)
    np.testing.assert_allclose(np.asarray(got["sequence_output"])[real],
                               np.asarray(want["sequence_output"])[real], atol=1e-5)
    np.testing.assert_allclose(np.asarray(got["pooled_output"])[real[:, 0]],
                               np.asarray(want["pooled_output"])[real[:, 0]], atol=1e-5)
