"""A transformer encoder block (post- or pre-layer-norm)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from zoo.core.compiled_loop import keras_jit_needs_static_shapes
from zoo.layers import activations
from zoo.layers.attention import MultiHeadAttention
from zoo.layers.packing import Packing, pack, packing, packing_supported, unpack


class TransformerEncoderLayer(keras.layers.Layer):
    """Self-attention then a two-layer MLP, each with a residual and layer norm.

    With `normalize_first=False` (BERT) the layer norm follows each residual
    add; with `normalize_first=True` (GPT-style) it precedes each sub-block.

    Args:
        hidden_dim: model width.
        num_heads: attention heads; must divide `hidden_dim`.
        intermediate_dim: width of the MLP's hidden layer.
        activation: MLP activation (`"gelu"` is the exact erf GELU).
        dropout: dropout on sub-block outputs.
        attention_dropout: dropout on attention probabilities.
        layer_norm_epsilon: epsilon of both layer norms.
        normalize_first: pre-layer-norm instead of post-layer-norm.
        kernel_initializer: initializer for every kernel.
        use_bias: whether projections and MLP layers have biases.
        key_bias: whether the attention key projection has a bias (default:
            `use_bias`; Whisper's has none).
        remove_padding: with a padding mask, run the projections, MLP and
            layer norms on the real tokens only (`zoo.layers.packing`; on
            TensorFlow graphs and PyTorch, where shapes may depend on the
            mask). Outputs at padded positions are then zeros.
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        intermediate_dim: int,
        activation: str = "gelu",
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        layer_norm_epsilon: float = 1e-5,
        normalize_first: bool = False,
        kernel_initializer: Any = "glorot_uniform",
        use_bias: bool = True,
        key_bias: bool | None = None,
        remove_padding: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})."
            )
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.normalize_first = normalize_first
        self.use_bias = use_bias
        self.key_bias = use_bias if key_bias is None else bool(key_bias)
        self.remove_padding = bool(remove_padding)
        if self.remove_padding and keras_jit_needs_static_shapes():
            # Packed shapes depend on the mask's values, which XLA cannot
            # compile: `model.compile(jit_compile="auto")` picks a plain graph.
            self.supports_jit = False
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        init = keras.initializers.serialize(self.kernel_initializer)
        policy = self.dtype_policy
        self.self_attention = MultiHeadAttention(
            num_heads, hidden_dim // num_heads, hidden_dim, use_bias=use_bias,
            dropout=attention_dropout, key_bias=self.key_bias,
            kernel_initializer=init, dtype=policy, name="self_attention",
        )
        self.self_attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="self_attention_layer_norm")
        self.self_attention_dropout = keras.layers.Dropout(
            dropout, dtype=policy, name="self_attention_dropout")
        self.intermediate_dense = keras.layers.Dense(
            intermediate_dim, activation=activations.get(activation), kernel_initializer=init,
            use_bias=use_bias, dtype=policy, name="intermediate_dense")
        self.output_dense = keras.layers.Dense(
            hidden_dim, kernel_initializer=init, use_bias=use_bias, dtype=policy,
            name="output_dense")
        self.output_dropout = keras.layers.Dropout(dropout, dtype=policy, name="output_dropout")
        self.output_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="output_layer_norm")

    def build(self, input_shape: tuple) -> None:
        self.self_attention.build(input_shape)
        self.self_attention_layer_norm.build(input_shape)
        self.intermediate_dense.build(input_shape)
        self.output_dense.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.output_layer_norm.build(input_shape)

    def call(self, x: Any, padding_mask: Any = None, training: bool | None = None) -> Any:
        """`x`: `(batch, length, hidden_dim)`; `padding_mask`: `(batch, length)`, 1 = real."""
        mask = None
        if padding_mask is not None:
            mask = ops.expand_dims(ops.cast(padding_mask, "bool"), (1, 2))  # (batch, 1, 1, length)
            if self.remove_padding and packing_supported():
                packed = packing(padding_mask)
                out = self._block(pack(x, packed), mask, training=training, packing_=packed)
                return unpack(out, packed, ops.shape(padding_mask)[1])
        return self._block(x, mask, training=training)

    def _block(self, x: Any, mask: Any, cache: Any = None, cache_update_index: Any = None,
               training: bool | None = None, packing_: Packing | None = None) -> Any:
        """Attention and MLP sub-blocks with residuals; returns `x` or `(x, cache)`."""
        x, cache = self._self_attention_block(x, mask, cache, cache_update_index, training,
                                              packing_)
        x = self._mlp_block(x, training)
        return x if cache is None else (x, cache)

    def _self_attention_block(self, x: Any, mask: Any, cache: Any, cache_update_index: Any,
                              training: bool | None,
                              packing_: Packing | None = None) -> tuple[Any, Any]:
        residual = x
        if self.normalize_first:
            x = self.self_attention_layer_norm(x)
        x = self.self_attention(x, attention_mask=mask, cache=cache,
                                cache_update_index=cache_update_index, training=training,
                                packing=packing_)
        if cache is not None:
            x, cache = x
        x = residual + self.self_attention_dropout(x, training=training)
        if not self.normalize_first:
            x = self.self_attention_layer_norm(x)
        return x, cache

    def _mlp_block(self, x: Any, training: bool | None) -> Any:
        residual = x
        if self.normalize_first:
            x = self.output_layer_norm(x)
        x = self.output_dense(self.intermediate_dense(x))
        x = residual + self.output_dropout(x, training=training)
        if not self.normalize_first:
            x = self.output_layer_norm(x)
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "activation": self.activation,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "normalize_first": self.normalize_first,
            "use_bias": self.use_bias,
            "key_bias": self.key_bias,
            "remove_padding": self.remove_padding,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
