"""CLIP's text transformer (SD v1 uses the ViT-L/14 text tower's last hidden states)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from zoo.layers.embeddings import TokenEmbedding

ACTIVATIONS = ("quick_gelu", "gelu")


def _activation(name: str, x: Any) -> Any:
    if name == "quick_gelu":  # x * sigmoid(1.702 x), CLIP's original approximation
        return x * ops.sigmoid(1.702 * x)
    return keras.activations.gelu(x, approximate=False)


class CLIPEncoderLayer(keras.layers.Layer):
    """Pre-layer-norm block: causal self-attention, then a two-layer MLP.

    Sublayers follow transformers' names: `layer_norm1`, `q_proj`, `k_proj`,
    `v_proj`, `out_proj`, `layer_norm2`, `fc1`, `fc2`.

    Args:
        hidden_dim: model width.
        num_heads: attention heads (must divide `hidden_dim`).
        intermediate_dim: MLP width.
        activation: "quick_gelu" (CLIP) or "gelu".
        layer_norm_epsilon: epsilon of both layer norms.
    """

    def __init__(self, hidden_dim: int, num_heads: int, intermediate_dim: int,
                 activation: str = "quick_gelu", layer_norm_epsilon: float = 1e-5,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden_dim, self.num_heads = hidden_dim, num_heads
        self.intermediate_dim, self.activation = intermediate_dim, activation
        self.layer_norm_epsilon = layer_norm_epsilon
        dtype = self.dtype_policy
        norm = lambda name: keras.layers.LayerNormalization(  # noqa: E731
            epsilon=layer_norm_epsilon, dtype=dtype, name=name)
        dense = lambda units, name: keras.layers.Dense(units, dtype=dtype, name=name)  # noqa: E731
        self.layer_norm1 = norm("layer_norm1")
        self.q_proj, self.k_proj = dense(hidden_dim, "q_proj"), dense(hidden_dim, "k_proj")
        self.v_proj, self.out_proj = dense(hidden_dim, "v_proj"), dense(hidden_dim, "out_proj")
        self.layer_norm2 = norm("layer_norm2")
        self.fc1, self.fc2 = dense(intermediate_dim, "fc1"), dense(hidden_dim, "fc2")

    def build(self, input_shape: Any) -> None:
        for layer in (self.layer_norm1, self.q_proj, self.k_proj, self.v_proj, self.out_proj,
                      self.layer_norm2, self.fc1):
            layer.build(input_shape)
        self.fc2.build((*tuple(input_shape)[:-1], self.intermediate_dim))
        self.built = True

    def call(self, x: Any) -> Any:
        # x: (B, L, D)
        b, length = ops.shape(x)[0], ops.shape(x)[1]
        heads, head_dim = self.num_heads, self.hidden_dim // self.num_heads
        h = self.layer_norm1(x)
        split = lambda t: ops.reshape(t, (b, length, heads, head_dim))  # noqa: E731
        attended = ops.dot_product_attention(
            split(self.q_proj(h)), split(self.k_proj(h)), split(self.v_proj(h)),
            scale=head_dim ** -0.5, is_causal=True)  # (B, L, H, Dh)
        x = x + self.out_proj(ops.reshape(attended, (b, length, self.hidden_dim)))
        h = self.fc1(self.layer_norm2(x))
        return x + self.fc2(_activation(self.activation, h))

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads, "intermediate_dim": self.intermediate_dim,
                "activation": self.activation, "layer_norm_epsilon": self.layer_norm_epsilon}


class CLIPTextEncoder(keras.layers.Layer):
    """CLIP's text tower: token + position embeddings, causal pre-LN
    transformer blocks, a final layer norm. `call(token_ids)` returns the last
    hidden states `(B, L, hidden_dim)`, which Stable Diffusion's UNet attends to.

    Args:
        vocabulary_size: tokens (49408 for CLIP).
        hidden_dim: width (768 for ViT-L/14's text tower).
        num_layers: transformer blocks.
        num_heads: attention heads.
        intermediate_dim: MLP width.
        max_sequence_length: positions (77).
        activation: "quick_gelu" (CLIP) or "gelu".
        layer_norm_epsilon: layer norm epsilon.

    Example:

    >>> import numpy as np
    >>> from zoo.diffusion.stable_diffusion.clip_text_encoder import CLIPTextEncoder
    >>> encoder = CLIPTextEncoder(vocabulary_size=10, hidden_dim=8, num_layers=1,
    ...                           num_heads=2, intermediate_dim=16, max_sequence_length=5)
    >>> encoder(np.zeros((1, 5), "int32")).shape
    (1, 5, 8)
    """

    def __init__(self, vocabulary_size: int = 49408, hidden_dim: int = 768, num_layers: int = 12,
                 num_heads: int = 12, intermediate_dim: int = 3072,
                 max_sequence_length: int = 77, activation: str = "quick_gelu",
                 layer_norm_epsilon: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not one of {ACTIVATIONS}.")
        if hidden_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide hidden_dim={hidden_dim}.")
        self.vocabulary_size, self.hidden_dim = vocabulary_size, hidden_dim
        self.num_layers, self.num_heads = num_layers, num_heads
        self.intermediate_dim, self.max_sequence_length = intermediate_dim, max_sequence_length
        self.activation, self.layer_norm_epsilon = activation, layer_norm_epsilon
        dtype = self.dtype_policy
        self.token_embedding = TokenEmbedding(vocabulary_size, hidden_dim, dtype=dtype,
                                              name="token_embedding")
        self.position_embedding = keras.layers.Embedding(
            max_sequence_length, hidden_dim, dtype=dtype, name="position_embedding")
        self.encoder_layers = [
            CLIPEncoderLayer(hidden_dim, num_heads, intermediate_dim, activation,
                             layer_norm_epsilon, dtype=dtype, name=f"layers_{i}")
            for i in range(num_layers)]
        self.final_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="final_layer_norm")

    def build(self, input_shape: Any) -> None:
        self.token_embedding.build(input_shape)
        self.position_embedding.build((None,))
        hidden = (*tuple(input_shape), self.hidden_dim)
        for layer in self.encoder_layers:
            layer.build(hidden)
        self.final_layer_norm.build(hidden)
        self.built = True

    def call(self, token_ids: Any) -> Any:
        length = ops.shape(token_ids)[1]
        x = self.token_embedding(token_ids) + self.position_embedding(ops.arange(length))[None]
        for layer in self.encoder_layers:
            x = layer(x)
        return self.final_layer_norm(x)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (*tuple(input_shape), self.hidden_dim)

    def get_config(self) -> dict:
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "hidden_dim": self.hidden_dim, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "intermediate_dim": self.intermediate_dim,
                "max_sequence_length": self.max_sequence_length, "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon}
