import numpy as np
from keras import ops

from tests.harness import check_backbone
from zoo.models import WhisperBackbone

TINY = dict(vocabulary_size=50, num_encoder_layers=2, num_decoder_layers=2, num_heads=2,
            hidden_dim=16, intermediate_dim=32, num_mels=4, max_encoder_sequence_length=10,
            max_decoder_sequence_length=24)


def inputs(batch: int, length: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"encoder_features": rng.normal(size=(batch, 4, 20)).astype("float32"),
            "decoder_token_ids": rng.integers(0, 50, size=(batch, length)).astype("int32"),
            "decoder_padding_mask": np.ones((batch, length), "int32")}


def test_backbone_contract(tmp_path):
    check_backbone(
        WhisperBackbone, TINY, make_inputs=lambda b, t: inputs(b, t, seed=b * 100 + t),
        expected_shapes=lambda b, t: {"encoder_sequence_output": (b, 10, 16),
                                      "decoder_sequence_output": (b, t, 16)},
        tmp_path=tmp_path,
    )


def test_cached_decoding_equals_full_forward():
    """Prefill into the self-attention cache with cross keys/values computed
    once, then one token per call: every step equals the full forward pass."""
    backbone = WhisperBackbone(**TINY)
    batch = inputs(2, 9, seed=4)
    full = ops.convert_to_numpy(backbone(batch)["decoder_sequence_output"])
    cross = backbone.cross_key_values(backbone.encode(batch["encoder_features"]))
    cache = backbone.init_cache(2, 12)
    mask = np.ones((2, 12), "int32")
    ids = batch["decoder_token_ids"]
    hidden, cache = backbone.call_decoder_with_cache(ids[:, :5], mask, cache, cross, 0)
    steps = [ops.convert_to_numpy(hidden)]
    for i in range(5, 9):
        hidden, cache = backbone.call_decoder_with_cache(ids[:, i:i + 1], mask, cache, cross, i)
        steps.append(ops.convert_to_numpy(hidden))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_left_padding_does_not_change_real_positions():
    backbone = WhisperBackbone(**TINY)
    batch = inputs(1, 6, seed=5)
    plain = ops.convert_to_numpy(backbone(batch)["decoder_sequence_output"])
    padded = dict(batch)
    padded["decoder_token_ids"] = np.concatenate([np.zeros((1, 3), "int32"),
                                                  batch["decoder_token_ids"]], 1)
    padded["decoder_padding_mask"] = np.concatenate([np.zeros((1, 3), "int32"),
                                                     batch["decoder_padding_mask"]], 1)
    out = ops.convert_to_numpy(backbone(padded)["decoder_sequence_output"])
    np.testing.assert_allclose(out[:, 3:], plain, atol=1e-5)
