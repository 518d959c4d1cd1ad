"""A causal transformer decoder block with an explicit key/value cache."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from zoo.layers.attention import MultiHeadAttention

from zoo.layers.transformer_encoder import TransformerEncoderLayer


def causal_mask(padding_mask: Any, query_length: Any, key_length: Any,
                query_start: Any = 0) -> Any:
    """Boolean `(batch, 1, q_len, k_len)`: key j visible to query i iff
    `j <= query_start + i` and key j is a real token.

    Every query also sees itself, so a padding query never has an all-masked
    row (which gives NaN in fused attention kernels and would leak into real
    rows); real queries are unaffected.
    """
    # (expand_dims rather than None indexing: LiteRT has no strided slice
    # that adds axes)
    q = ops.expand_dims(ops.arange(query_length), 1) + query_start  # (q_len, 1)
    k = ops.expand_dims(ops.arange(key_length), 0)  # (1, k_len)
    causal = ops.expand_dims(k <= q, (0, 1))
    real = ops.expand_dims(ops.cast(padding_mask, "bool"), (1, 2))
    itself = ops.expand_dims(k == q, (0, 1))
    return ops.logical_or(ops.logical_and(causal, real), itself)


class TransformerDecoderLayer(TransformerEncoderLayer):
    """Causal self-attention, optional cross-attention, then an MLP.

    Same arguments and sublayers as `TransformerEncoderLayer`, plus
    `cross_attention=True` for encoder-decoder models (Whisper): a
    `cross_attention` sublayer (and `cross_attention_layer_norm`) attends to
    the encoder output between self-attention and the MLP. Calls:

    - `layer(x, padding_mask, encoder_output=e)`: full-sequence (training /
      prompt) pass.
    - `layer(x, padding_mask, cache=c, cache_update_index=i,
      cross_key_value=kv)`: incremental decoding. `x` holds the tokens at
      positions `i..i+len-1`, `padding_mask` covers the whole cache `(batch,
      max_len)`, `c` is a `(keys, values)` pair, each `(batch, heads,
      max_len, head_dim)`; `kv` is `cross_attention.project_key_value(e)`,
      computed once per encoder output. Returns `(x, updated_cache)`.

    Args:
        cross_attention: add the cross-attention sub-block.
        **kwargs: the arguments of `TransformerEncoderLayer`.
    """

    def __init__(self, *args: Any, cross_attention: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.has_cross_attention = bool(cross_attention)
        self.cross_attention = self.cross_attention_layer_norm = None
        if self.has_cross_attention:
            policy = self.dtype_policy
            self.cross_attention = MultiHeadAttention(
                self.num_heads, self.hidden_dim // self.num_heads, self.hidden_dim,
                use_bias=self.use_bias, key_bias=self.key_bias,
                dropout=self.attention_dropout,
                kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                dtype=policy, name="cross_attention")
            self.cross_attention_layer_norm = keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, dtype=policy, name="cross_attention_layer_norm")
            self.cross_attention_dropout = keras.layers.Dropout(
                self.dropout, dtype=policy, name="cross_attention_dropout")

    def build(self, input_shape: tuple, *args: Any, **kwargs: Any) -> None:
        super().build(input_shape)
        if self.has_cross_attention:
            self.cross_attention.build(input_shape, input_shape)
            self.cross_attention_layer_norm.build(input_shape)

    def call(self, x: Any, padding_mask: Any = None, encoder_output: Any = None,
             cache: Any = None, cache_update_index: Any = None, cross_key_value: Any = None,
             training: bool | None = None) -> Any:
        length = ops.shape(x)[1]
        if cache is None:
            if padding_mask is None:
                padding_mask = ops.ones(ops.shape(x)[:2], "bool")
            mask = causal_mask(padding_mask, length, length)
        else:
            mask = causal_mask(padding_mask, length, ops.shape(cache[0])[2], cache_update_index)
        x, cache = self._self_attention_block(x, mask, cache, cache_update_index, training)
        if self.has_cross_attention:
            if encoder_output is None and cross_key_value is None:
                raise ValueError("This decoder layer has cross-attention: pass encoder_output= "
                                 "or cross_key_value=.")
            residual = x
            if self.normalize_first:
                x = self.cross_attention_layer_norm(x)
            x = self.cross_attention(x, context=encoder_output,
                                     static_key_value=cross_key_value, training=training)
            x = residual + self.cross_attention_dropout(x, training=training)
            if not self.normalize_first:
                x = self.cross_attention_layer_norm(x)
        x = self._mlp_block(x, training)
        return x if cache is None else (x, cache)

    def compute_output_shape(self, x_shape: tuple, *args: Any, **kwargs: Any) -> tuple:
        return x_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "cross_attention": self.has_cross_attention}
