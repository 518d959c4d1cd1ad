"""TiedLogits: the generation-time transposed embedding copy stays in sync."""

import keras
import numpy as np

from zoo.layers.tied_logits import TiedLogits


def _layer() -> tuple[keras.layers.Embedding, TiedLogits]:
    embedding = keras.layers.Embedding(11, 4)
    embedding.build((None,))
    return embedding, TiedLogits(embedding)


def test_inference_weights_give_the_same_logits_and_follow_assignments() -> None:
    embedding, head = _layer()
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    extra = head.inference_weights()
    if keras.backend.backend() == "torch":
        assert len(extra) == 1 and tuple(extra[0].shape) == (4, 11)
    else:
        assert extra == ()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head(x, *extra)),
                               keras.ops.convert_to_numpy(head(x)), atol=1e-6)
    new = np.random.default_rng(1).normal(size=(11, 4)).astype("float32")
    embedding.embeddings.assign(new)
    got = keras.ops.convert_to_numpy(head(x, *head.inference_weights()))
    np.testing.assert_allclose(got, x @ new.T, atol=1e-5)
