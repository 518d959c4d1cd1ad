import numpy as np
import pytest
from keras import ops

from tests.harness import check_backbone
from tests.nlp.opt.reference import random_batch
from zoo.models import OPTBackbone

TINY = dict(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=32)


@pytest.mark.parametrize("extra", [{}, {"embedding_dim": 8, "normalize_first": False,
                                        "final_layer_norm": False}])
def test_backbone_contract(tmp_path, extra):
    check_backbone(
        OPTBackbone, {**TINY, **extra},
        make_inputs=lambda b, t: random_batch(b, t, 50, seed=b * 100 + t),
        expected_shapes=lambda b, t: {"output": (b, t, extra.get("embedding_dim", 16))},
        tmp_path=tmp_path,
    )


def test_cached_decoding_equals_full_forward():
    """Prefill a prompt into the cache, then feed one token at a time: every
    step's hidden state equals the full (uncached) forward pass."""
    backbone = OPTBackbone(**TINY, dropout=0.0)
    batch = random_batch(2, 10, 50, seed=3)  # left padded
    full = np.asarray(backbone.predict_on_batch(batch))
    prompt = 6
    cache = backbone.init_cache(2, 10)
    mask = ops.convert_to_tensor(batch["padding_mask"])
    ids = ops.convert_to_tensor(batch["token_ids"])
    hidden, cache = backbone.call_with_cache(ids[:, :prompt], mask, cache, 0)
    steps = [np.asarray(ops.convert_to_numpy(hidden))]
    for i in range(prompt, 10):
        hidden, cache = backbone.call_with_cache(ids[:, i:i + 1], mask, cache, i)
        steps.append(np.asarray(ops.convert_to_numpy(hidden)))
    cached = np.concatenate(steps, axis=1)
    real = batch["padding_mask"].astype(bool)
    np.testing.assert_allclose(cached[real], full[real], atol=1e-5)
