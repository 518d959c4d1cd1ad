"""The UNet's attention blocks (diffusers' `Transformer2DModel`) and time embedding."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from zoo.diffusion.stable_diffusion.diffusion_layers import group_norm
from zoo.layers.attention import dot_product_attention


def timestep_embedding(timesteps: Any, dim: int, flip_sin_to_cos: bool = True,
                       freq_shift: float = 0.0) -> Any:
    """Sinusoidal embedding `(B, dim)` of float timesteps `(B,)` (float32):
    frequencies exp(-ln(10000) * k / (dim/2 - freq_shift)), [cos, sin] when flipped."""
    half = dim // 2
    exponent = -math.log(10000.0) * ops.arange(half, dtype="float32") / (half - freq_shift)
    angles = ops.cast(timesteps, "float32")[:, None] * ops.exp(exponent)[None, :]
    parts = [ops.cos(angles), ops.sin(angles)] if flip_sin_to_cos else [
        ops.sin(angles), ops.cos(angles)]
    return ops.concatenate(parts, axis=-1)


class Attention(keras.layers.Layer):
    """Multi-head attention; keys and values from `context` (cross-attention)
    or from the input (self-attention). `to_q`, `to_k`, `to_v` have no bias,
    `to_out` has one (diffusers' `Attention` in transformer blocks)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        inner, dtype = num_heads * head_dim, self.dtype_policy
        self.to_q = keras.layers.Dense(inner, use_bias=False, dtype=dtype, name="to_q")
        self.to_k = keras.layers.Dense(inner, use_bias=False, dtype=dtype, name="to_k")
        self.to_v = keras.layers.Dense(inner, use_bias=False, dtype=dtype, name="to_v")
        self.to_out = keras.layers.Dense(dim, dtype=dtype, name="to_out")

    def build(self, x_shape: Any, context_shape: Any = None) -> None:
        context_shape = x_shape if context_shape is None else context_shape
        self.to_q.build(x_shape)
        self.to_k.build(context_shape)
        self.to_v.build(context_shape)
        self.to_out.build((*tuple(x_shape)[:-1], self.num_heads * self.head_dim))
        self.built = True

    def call(self, x: Any, context: Any = None) -> Any:
        # x: (B, N, dim); context: (B, M, context_dim)
        context = x if context is None else context
        b = ops.shape(x)[0]
        split = lambda t: ops.reshape(t, (b, -1, self.num_heads, self.head_dim))  # noqa: E731
        out = dot_product_attention(split(self.to_q(x)), split(self.to_k(context)),
                                    split(self.to_v(context)), scale=self.head_dim ** -0.5)
        return self.to_out(ops.reshape(out, (b, -1, self.num_heads * self.head_dim)))

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "head_dim": self.head_dim}


class TransformerBlock(keras.layers.Layer):
    """Self-attention, cross-attention and a GEGLU feed-forward, each after a
    LayerNorm and with a residual (`norm1`, `attn1`, `norm2`, `attn2`,
    `norm3`, `ff_proj` (GEGLU, 2 x 4 x dim), `ff_out`)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        dtype = self.dtype_policy
        norm = lambda n: keras.layers.LayerNormalization(epsilon=1e-5, dtype=dtype, name=n)  # noqa: E731
        self.norm1, self.norm2, self.norm3 = norm("norm1"), norm("norm2"), norm("norm3")
        self.attn1 = Attention(dim, num_heads, head_dim, dtype=dtype, name="attn1")
        self.attn2 = Attention(dim, num_heads, head_dim, dtype=dtype, name="attn2")
        self.ff_proj = keras.layers.Dense(8 * dim, dtype=dtype, name="ff_proj")
        self.ff_out = keras.layers.Dense(dim, dtype=dtype, name="ff_out")

    def build(self, x_shape: Any, context_shape: Any) -> None:
        for layer in (self.norm1, self.norm2, self.norm3, self.ff_proj):
            layer.build(x_shape)
        self.attn1.build(x_shape)
        self.attn2.build(x_shape, context_shape)
        self.ff_out.build((*tuple(x_shape)[:-1], 4 * self.dim))
        self.built = True

    def call(self, x: Any, context: Any) -> Any:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        hidden, gate = ops.split(self.ff_proj(self.norm3(x)), 2, axis=-1)
        return x + self.ff_out(hidden * keras.activations.gelu(gate, approximate=False))

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "head_dim": self.head_dim}


class SpatialTransformer(keras.layers.Layer):
    """diffusers' `Transformer2DModel` on channels-last images: GroupNorm,
    `proj_in`, one `TransformerBlock` over the H*W positions, `proj_out`,
    residual. On channels-last data the 1x1 convolutions of SD v1
    (`use_linear_projection=False`) and SD 2's linear layers are the same
    `Dense` layers; only the checkpoint's weight shapes differ."""

    def __init__(self, channels: int, num_heads: int, head_dim: int, num_groups: int = 32,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels, self.num_heads, self.head_dim = channels, num_heads, head_dim
        self.num_groups = num_groups
        dtype, inner = self.dtype_policy, num_heads * head_dim
        self.norm = group_norm(num_groups, 1e-6, dtype, "norm")
        self.proj_in = keras.layers.Dense(inner, dtype=dtype, name="proj_in")
        self.transformer_blocks = [TransformerBlock(inner, num_heads, head_dim, dtype=dtype,
                                                    name="transformer_blocks_0")]
        self.proj_out = keras.layers.Dense(channels, dtype=dtype, name="proj_out")

    def build(self, x_shape: Any, context_shape: Any) -> None:
        inner = self.num_heads * self.head_dim
        self.norm.build(x_shape)
        self.proj_in.build((None, None, self.channels))
        self.transformer_blocks[0].build((None, None, inner), context_shape)
        self.proj_out.build((None, None, inner))
        self.built = True

    def call(self, x: Any, context: Any) -> Any:
        b, h, w = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        y = self.proj_in(ops.reshape(self.norm(x), (b, h * w, self.channels)))
        y = self.proj_out(self.transformer_blocks[0](y, context))
        return x + ops.reshape(y, (b, h, w, self.channels))

    def compute_output_shape(self, x_shape: Any, context_shape: Any) -> tuple:
        return tuple(x_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "num_heads": self.num_heads,
                "head_dim": self.head_dim, "num_groups": self.num_groups}
