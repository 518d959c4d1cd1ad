"""Logits from hidden states through a (tied) token embedding matrix."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from zoo.core.compiled_loop import transposed_copy


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
        embeddings = ops.cast(self.token_embedding.embeddings, x.dtype)
        logits = ops.matmul(x, ops.transpose(embeddings))  # (batch, length, vocabulary)
        scale = self._row_scale()
        if scale is not None:
            # A quantized table stores round(E * scale) per row: the logits of
            # E are the products divided by each row's scale.
            logits = logits / ops.cast(scale, logits.dtype)
        return logits

    def _row_scale(self) -> Any:
        """The embedding's per-row quantization scale (None: not quantized)."""
        mode = self.token_embedding.quantization_mode
        if mode is None:
            return None
        if mode not in ("int8", "int4"):
            raise ValueError(f"TiedLogits reads int8 or int4 embeddings, not {mode!r}. Fix: "
                             "quantize the model with mode='int8' or 'int4'.")
        return self.token_embedding.embeddings_scale

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
        cached = transposed_copy(embedding.embeddings, self.compute_dtype,
                                 getattr(self, "_transposed", None), self._row_scale())
        if cached is None:
            return ()
        self._transposed = cached
        return (cached[1],)

    def compute_output_shape(self, x_shape: tuple) -> tuple:
        return tuple(x_shape[:-1]) + (self.token_embedding.input_dim,)
