"""Logits from hidden states through a (tied) token embedding matrix."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


class TiedLogits(keras.layers.Layer):
    """`x @ embeddingsᵀ`: decode hidden states with the token embedding.

    Holds no weights of its own; the embedding belongs to the backbone, so the
    LM head and the input embedding stay one variable (as in OPT, GPT-2).

    Args:
        token_embedding: the backbone's `keras.layers.Embedding`.
    """

    def __init__(self, token_embedding: keras.layers.Embedding, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token_embedding = token_embedding

    def call(self, x: Any) -> Any:
        embeddings = ops.cast(self.token_embedding.embeddings, x.dtype)
        return ops.matmul(x, ops.transpose(embeddings))  # (batch, length, vocabulary)

    def compute_output_shape(self, x_shape: tuple) -> tuple:
        return tuple(x_shape[:-1]) + (self.token_embedding.input_dim,)
