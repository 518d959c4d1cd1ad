"""Pooling of token states into one vector per sequence."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


class MaskedPooling(keras.layers.Layer):
    """Pool `(batch, length, dim)` states over real tokens into `(batch, dim)`.

    Args:
        mode: `"mean"` averages the states where `padding_mask` is 1 (as
            sentence-transformers' mean pooling does); `"cls"` takes the
            first token.
    """

    def __init__(self, mode: str = "mean", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("mean", "cls"):
            raise ValueError(f"pooling mode must be 'mean' or 'cls', got {mode!r}.")
        self.mode = mode

    def call(self, x: Any, padding_mask: Any) -> Any:
        if self.mode == "cls":
            return x[:, 0, :]
        mask = ops.expand_dims(ops.cast(padding_mask, x.dtype), -1)  # (batch, length, 1)
        total = ops.sum(x * mask, axis=1)
        count = ops.maximum(ops.sum(mask, axis=1), 1e-9)
        return total / count

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}
