import numpy as np
import pytest

from tests.harness import check_backbone
from tests.nlp.bert.reference import random_batch
from zoo.models import BertBackbone

TINY = dict(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=32)


def test_backbone_contract(tmp_path):
    check_backbone(
        BertBackbone, TINY,
        make_inputs=lambda b, t: random_batch(b, t, 50, seed=b * 100 + t),
        expected_shapes=lambda b, t: {"sequence_output": (b, t, 16), "pooled_output": (b, 16)},
        tmp_path=tmp_path,
    )


def test_padding_does_not_change_real_tokens():
    backbone = BertBackbone(**TINY)
    batch = random_batch(1, 6, 50)
    padded = {k: np.pad(v, ((0, 0), (0, 4))) for k, v in batch.items()}
    short = backbone.predict_on_batch(batch)["sequence_output"]
    long = backbone.predict_on_batch(padded)["sequence_output"]
    np.testing.assert_allclose(np.asarray(long)[:, :6], np.asarray(short), atol=1e-5)


def test_heads_must_divide_hidden_dim():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        BertBackbone(**{**TINY, "num_heads": 3})


def test_mixed_precision_runs():
    backbone = BertBackbone(**TINY, dtype="mixed_bfloat16")
    assert backbone.weights[0].dtype == "float32"
    out = backbone.predict_on_batch(random_batch(2, 5, 50))
    assert np.isfinite(np.asarray(out["pooled_output"], dtype="float32")).all()
