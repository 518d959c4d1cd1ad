"""Logits from hidden states through a (tied) token embedding matrix."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from zoo.core.compiled_loop import transposed_copy


def quantization_scales(embedding: keras.layers.Embedding) -> tuple[Any, Any]:
    """`(row scale, column scale)` of a quantized embedding table: the table
    is `embeddings / row[:, None] / column[None, :]`; each None where absent
    (`column_scale` is `zoo.layers.embeddings.TokenEmbedding`'s, in int8)."""
    mode = embedding.quantization_mode
    if mode is None:
        return None, None
    scale = getattr(embedding, "embeddings_scale", None)
    if mode not in ("int8", "int4") or scale is None or len(scale.shape) != 1:
        raise ValueError(
            f"A tied head reads embeddings quantized per row in int8 or int4, not "
            f"{mode!r}{' in groups' if scale is not None and len(scale.shape) != 1 else ''}. "
            "Fix: quantize the model with mode='int8', or 'int4' without a block size.")
    return scale, getattr(embedding, "column_scale", None)


def tied_product(x: Any, embedding: keras.layers.Embedding) -> Any:
    """`x @ Eᵀ` for the table `E` of `embedding`, float or quantized
    (`quantization_scales`): `(x / column) @ int8ᵀ / row`."""
    row_scale, column_scale = quantization_scales(embedding)
    if column_scale is not None:
        x = x / ops.cast(column_scale, x.dtype)
    logits = ops.matmul(x, ops.transpose(ops.cast(embedding.embeddings, x.dtype)))
    if row_scale is not None:
        logits = logits / ops.cast(row_scale, logits.dtype)
    return logits


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

    def call(self, x: Any, transposed: Any = None) -> Any:
        """Logits `(..., vocabulary)`; `transposed` is an optional ready-made
        `(hidden, vocabulary)` copy of the embedding (see `inference_weights`)."""
        if transposed is not None:
            return ops.matmul(x, ops.cast(transposed, x.dtype))
        return tied_product(x, self.token_embedding)

    def inference_weights(self) -> tuple:
        """Extra inputs that make `call` faster when no gradient is needed.

        `x @ Eᵀ` with `E` stored `(vocabulary, hidden)` reads the matrix
        against its layout on some backends (`transposed_copy`): there this
        returns `(copy,)`, a contiguous transposed copy kept until the
        embedding changes; elsewhere, and with LoRA on the embedding, ().
        """
        embedding = self.token_embedding
        if getattr(embedding, "lora_enabled", False):
            return ()
        row_scale, column_scale = quantization_scales(embedding)
        cached = transposed_copy(embedding.embeddings, self.compute_dtype,
                                 getattr(self, "_transposed", None), row_scale, column_scale)
        if cached is None:
            return ()
        self._transposed = cached
        return (cached[1],)

    def compute_output_shape(self, x_shape: tuple) -> tuple:
        return tuple(x_shape[:-1]) + (self.token_embedding.input_dim,)
