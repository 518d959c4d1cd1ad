"""Masked-LM head: gather masked positions, transform, decode with tied embeddings."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from zoo.layers import activations
from zoo.layers.tied_logits import tied_product


class MaskedLMHead(keras.layers.Layer):
    """Predict tokens at `mask_positions` from encoder states.

    `dense (activation) -> layer norm -> x @ embeddingsᵀ + bias`, the decoder
    tied to the token embedding (as BERT's `cls.predictions`).

    Args:
        token_embedding: the backbone's `keras.layers.Embedding` (tied decoder).
        activation: activation of the transform dense layer.
        layer_norm_epsilon: epsilon of the layer norm.
        kernel_initializer: initializer of the transform kernel.
    """

    def __init__(self, token_embedding: keras.layers.Embedding, activation: str = "gelu",
                 layer_norm_epsilon: float = 1e-12,
                 kernel_initializer: Any = "glorot_uniform", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token_embedding = token_embedding
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        hidden_dim = token_embedding.output_dim
        self.dense = keras.layers.Dense(
            hidden_dim, activation=activations.get(activation), dtype=self.dtype_policy, name="dense",
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm")

    def build(self, x_shape: tuple, mask_positions_shape: tuple | None = None) -> None:
        hidden_dim = self.token_embedding.output_dim
        self.dense.build((None, None, hidden_dim))
        self.layer_norm.build((None, None, hidden_dim))
        self.bias = self.add_weight(
            shape=(self.token_embedding.input_dim,), initializer="zeros", name="bias")

    def call(self, x: Any, mask_positions: Any) -> Any:
        """`x`: `(batch, length, hidden)`; `mask_positions`: `(batch, slots)` int."""
        # rows of the flattened (batch * length, hidden) `x`: one plain gather,
        # which every export format maps exactly (positions clipped to the row)
        batch, length, hidden = ops.shape(x)
        positions = ops.clip(ops.cast(mask_positions, "int32"), 0, length - 1)
        rows = positions + ops.expand_dims(
            ops.arange(batch, dtype="int32") * length, -1)
        x = ops.take(ops.reshape(x, (-1, hidden)), rows, axis=0)  # (batch, slots, hidden)
        x = self.layer_norm(self.dense(x))
        return tied_product(x, self.token_embedding) + ops.cast(self.bias, x.dtype)

    def compute_output_shape(self, x_shape: tuple, mask_positions_shape: tuple) -> tuple:
        return (x_shape[0], mask_positions_shape[1], self.token_embedding.input_dim)

    def get_config(self) -> dict:
        # The tied embedding is passed again by the owning task, not serialized.
        return {
            **super().get_config(),
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
