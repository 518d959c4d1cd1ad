"""Embedding layers."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embeddings for positions `0..length-1`.

    Called on `(batch, length, ...)` inputs, returns `(1, length, hidden_dim)`
    to be added to token embeddings.

    Args:
        max_length: number of positions the table holds.
        hidden_dim: embedding size.
        initializer: initializer of the table.
    """

    def __init__(self, max_length: int, hidden_dim: int,
                 initializer: Any = "glorot_uniform", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length
        self.hidden_dim = hidden_dim
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape: tuple) -> None:
        self.embeddings = self.add_weight(
            shape=(self.max_length, self.hidden_dim), initializer=self.initializer,
            name="embeddings",
        )

    def call(self, inputs: Any) -> Any:
        length = ops.shape(inputs)[1]
        return ops.expand_dims(ops.slice(ops.convert_to_tensor(self.embeddings), (0, 0), (length, self.hidden_dim)), 0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (1, input_shape[1], self.hidden_dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "max_length": self.max_length,
            "hidden_dim": self.hidden_dim,
            "initializer": keras.initializers.serialize(self.initializer),
        }
