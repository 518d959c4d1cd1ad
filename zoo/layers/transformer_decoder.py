"""A causal transformer decoder block with an explicit key/value cache."""

from __future__ import annotations

from typing import Any

from keras import ops

from zoo.layers.transformer_encoder import TransformerEncoderLayer


def causal_mask(padding_mask: Any, query_length: Any, key_length: Any,
                query_start: Any = 0) -> Any:
    """Boolean `(batch, 1, q_len, k_len)`: key j visible to query i iff
    `j <= query_start + i` and key j is a real token.

    Every query also sees itself, so a padding query never has an all-masked
    row (which gives NaN in fused attention kernels and would leak into real
    rows); real queries are unaffected.
    """
    q = ops.arange(query_length)[:, None] + query_start  # (q_len, 1)
    k = ops.arange(key_length)[None, :]  # (1, k_len)
    causal = ops.cast(k <= q, "bool")[None, None, :, :]
    real = ops.cast(padding_mask, "bool")[:, None, None, :]
    itself = ops.cast(k == q, "bool")[None, None, :, :]
    return ops.logical_or(ops.logical_and(causal, real), itself)


class TransformerDecoderLayer(TransformerEncoderLayer):
    """Causal self-attention then an MLP (the encoder block, masked causally).

    Same arguments and sublayers as `TransformerEncoderLayer`. Calls:

    - `layer(x, padding_mask)`: full-sequence (training / prompt) pass.
    - `layer(x, padding_mask, cache=c, cache_update_index=i)`: incremental
      decoding. `x` holds the tokens at positions `i..i+len-1`, `padding_mask`
      covers the whole cache `(batch, max_len)`, `c` is a `(keys, values)`
      pair, each `(batch, heads, max_len, head_dim)`; returns
      `(x, updated_cache)`.
    """

    def call(self, x: Any, padding_mask: Any = None, cache: Any = None,
             cache_update_index: Any = None, training: bool | None = None) -> Any:
        length = ops.shape(x)[1]
        if cache is None:
            if padding_mask is None:
                padding_mask = ops.ones(ops.shape(x)[:2], "bool")
            mask = causal_mask(padding_mask, length, length)
            return self._block(x, mask, training=training)
        mask = causal_mask(padding_mask, length, ops.shape(cache[0])[2], cache_update_index)
        return self._block(x, mask, cache=cache, cache_update_index=cache_update_index,
                           training=training)

    def compute_output_shape(self, x_shape: tuple, *args: Any, **kwargs: Any) -> tuple:
        return x_shape
