"""Embedding layers."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
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


class TokenEmbedding(keras.layers.Embedding):
    """Keras' `Embedding`, whose int8 form also works as a tied LM head.

    Keras quantizes an embedding table per row: `round(E * s)` with one scale
    `s` per token. That is enough for lookups, but a tied LM head multiplies
    the hidden states by the whole table, and where a few hidden dimensions
    hold values many times larger than the rest (whisper_tiny_en: a row's
    largest magnitude is a median 13x its root mean square), one scale per
    row leaves the other dimensions a handful of levels: whisper_tiny_en's
    word error rate on the speech fixtures goes from 0.047 to 0.093 with the
    table in Keras' int8 (0.047 with everything else in int8 and this table
    in float).

    So in `"int8"` mode each column is first divided by its largest
    magnitude, kept as `column_scale` (one float per hidden dimension), and
    Keras then quantizes the rows: `E = int8 / (embeddings_scale ⊗
    column_scale)`. Lookups divide by both; `zoo.layers.tied_logits.
    tied_product` computes `(x / column_scale) @ int8ᵀ / embeddings_scale`.
    whisper_tiny_en's word error rate stays 0.047 (tests/audio/whisper/
    test_whisper_precision_gates.py). Unquantized, and in `"int4"` mode, it is
    Keras' `Embedding` unchanged.

    Example:

    >>> embedding = TokenEmbedding(10, 4)
    >>> embedding.build()
    >>> embedding.quantize("int8", type_check=False)
    >>> tuple(embedding.column_scale.shape), embedding.quantization_mode
    ((4,), 'int8')
    """

    def quantize(self, mode: str | None = None, type_check: bool = True,
                 config: Any = None) -> None:
        column = None
        if mode == "int4" and getattr(config, "block_size", None) not in (None, -1):
            # a tied LM head reads the table with one scale per row
            # (zoo.layers.tied_logits): per-row int4, not Keras' 128-wide groups
            config = keras.quantizers.Int4QuantizationConfig(
                weight_quantizer=config.weight_quantizer,
                activation_quantizer=config.activation_quantizer, block_size=None)
        if mode == "int8" and not self.lora_enabled:
            table = ops.convert_to_numpy(self._embeddings).astype("float32")
            peak = np.abs(table).max(axis=0)
            column = 1.0 / np.where(peak > 0, peak, 1.0)  # (an all-zero column: 1)
            self._embeddings.assign(table * column)
        # (Keras refuses subclasses unless type_check is off: this one keeps
        # the lookup and the serialized variables consistent itself.)
        super().quantize(mode, type_check=False, config=config)
        if column is not None:
            self.column_scale.assign(column.astype("float32"))

    def quantized_build(self, embeddings_shape: tuple, mode: str, config: Any = None) -> None:
        super().quantized_build(embeddings_shape, mode, config)
        if mode == "int8":
            self.column_scale = self.add_weight(
                name="column_scale", shape=(self.output_dim,), initializer="ones",
                trainable=False)

    @property
    def variable_serialization_spec(self) -> dict:
        spec = dict(super().variable_serialization_spec)
        spec["int8"] = [*spec["int8"], "column_scale"]
        return spec

    def _int8_call(self, inputs: Any, training: Any = None) -> Any:
        if keras.backend.standardize_dtype(inputs.dtype) not in ("int32", "int64"):
            inputs = ops.cast(inputs, "int32")
        rows = ops.cast(ops.take(self._embeddings, inputs, axis=0), "float32")
        row_scale = ops.cast(ops.expand_dims(ops.take(self.embeddings_scale, inputs, axis=0), -1),
                             "float32")
        outputs = rows / (row_scale * ops.cast(self.column_scale, "float32"))
        if self.lora_enabled:
            lora = ops.matmul(ops.take(self.lora_embeddings_a, inputs, axis=0),
                              self.lora_embeddings_b)
            outputs = outputs + (self.lora_alpha / self.lora_rank) * ops.cast(lora, "float32")
        return ops.cast(outputs, self.compute_dtype)
