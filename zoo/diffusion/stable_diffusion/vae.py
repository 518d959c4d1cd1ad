"""Stable Diffusion's VAE (diffusers' `AutoencoderKL`), channels-last.

`VAEEncoder` maps images in [-1, 1] to the moments (mean, log-variance) of
the latent posterior; `VAEDecoder` maps (unscaled) latents back to pixels.
Sublayer names follow diffusers' modules (`down_blocks`, `mid_block`,
`up_blocks`, `quant_conv`, ...), so the converter reaches every weight by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from zoo.diffusion.stable_diffusion.diffusion_layers import (
    Downsample,
    ResnetBlock,
    Upsample,
    conv,
    group_norm,
)
from zoo.layers.attention import dot_product_attention

#: GroupNorm epsilon everywhere in the VAE
VAE_EPSILON = 1e-6


class VAEAttention(keras.layers.Layer):
    """Single-head self-attention over all pixels, with GroupNorm and residual
    (diffusers' `Attention` in the VAE mid block: `group_norm`, `to_q`,
    `to_k`, `to_v`, `to_out`)."""

    def __init__(self, channels: int, num_groups: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels, self.num_groups = channels, num_groups
        dtype = self.dtype_policy
        self.group_norm = group_norm(num_groups, VAE_EPSILON, dtype, "group_norm")
        self.to_q = keras.layers.Dense(channels, dtype=dtype, name="to_q")
        self.to_k = keras.layers.Dense(channels, dtype=dtype, name="to_k")
        self.to_v = keras.layers.Dense(channels, dtype=dtype, name="to_v")
        self.to_out = keras.layers.Dense(channels, dtype=dtype, name="to_out")

    def build(self, input_shape: Any) -> None:
        for layer in (self.group_norm, self.to_q, self.to_k, self.to_v, self.to_out):
            layer.build(input_shape)
        self.built = True

    def call(self, x: Any) -> Any:
        # x: (B, H, W, C) -> attention over the H*W positions, one head of size C
        b, h, w = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        flat = ops.reshape(self.group_norm(x), (b, h * w, 1, self.channels))
        q, k, v = self.to_q(flat), self.to_k(flat), self.to_v(flat)
        out = dot_product_attention(q, k, v, scale=self.channels ** -0.5)
        return x + ops.reshape(self.to_out(out), (b, h, w, self.channels))

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "num_groups": self.num_groups}


class VAEMidBlock(keras.layers.Layer):
    """resnet -> attention -> resnet at the lowest resolution (`resnets`, `attentions`)."""

    def __init__(self, channels: int, num_groups: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels, self.num_groups = channels, num_groups
        dtype = self.dtype_policy
        self.resnets = [ResnetBlock(channels, channels, num_groups, VAE_EPSILON, dtype=dtype,
                                    name=f"resnets_{i}") for i in range(2)]
        self.attentions = [VAEAttention(channels, num_groups, dtype=dtype, name="attentions_0")]

    def build(self, input_shape: Any) -> None:
        for layer in (*self.resnets, *self.attentions):
            layer.build(input_shape)
        self.built = True

    def call(self, x: Any) -> Any:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "num_groups": self.num_groups}


class _VAEBase(keras.layers.Layer):
    def __init__(self, in_channels: int = 3, out_channels: int = 3, latent_channels: int = 4,
                 block_out_channels: Sequence[int] = (128, 256, 512, 512),
                 layers_per_block: int = 2, norm_num_groups: int = 32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.latent_channels = int(latent_channels)
        self.block_out_channels = [int(c) for c in block_out_channels]
        self.layers_per_block, self.norm_num_groups = int(layers_per_block), int(norm_num_groups)

    def get_config(self) -> dict:
        return {**super().get_config(), "in_channels": self.in_channels,
                "out_channels": self.out_channels, "latent_channels": self.latent_channels,
                "block_out_channels": list(self.block_out_channels),
                "layers_per_block": self.layers_per_block,
                "norm_num_groups": self.norm_num_groups}


class _Level:
    """One resolution level: `resnets`, then `downsamplers` / `upsamplers` (0 or 1)."""

    def __init__(self, resnets: list, downsamplers: list | None = None,
                 upsamplers: list | None = None) -> None:
        self.resnets, self.downsamplers, self.upsamplers = resnets, downsamplers or [], \
            upsamplers or []


class VAEEncoder(_VAEBase):
    """Images `(B, H, W, in_channels)` in [-1, 1] -> posterior moments
    `(B, H/f, W/f, 2 * latent_channels)` (mean, then log-variance), after
    `quant_conv`; f = 2 ** (levels - 1) (8 for SD).

    Args:
        in_channels: image channels (3).
        out_channels: unused by the encoder (kept so both halves share a config).
        latent_channels: latent channels (4).
        block_out_channels: channels per resolution level.
        layers_per_block: resnets per level.
        norm_num_groups: GroupNorm groups.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dtype, groups = self.dtype_policy, self.norm_num_groups
        channels = self.block_out_channels
        self.conv_in = conv(channels[0], 3, dtype, "conv_in")
        self.down_blocks = []
        previous = channels[0]
        for i, width in enumerate(channels):
            resnets = [ResnetBlock(previous if j == 0 else width, width, groups, VAE_EPSILON,
                                   dtype=dtype, name=f"down_blocks_{i}_resnets_{j}")
                       for j in range(self.layers_per_block)]
            down = ([Downsample(width, padding=((0, 1), (0, 1)), dtype=dtype,
                                name=f"down_blocks_{i}_downsamplers_0")]
                    if i < len(channels) - 1 else [])
            self.down_blocks.append(_Level(resnets, downsamplers=down))
            previous = width
        self.mid_block = VAEMidBlock(channels[-1], groups, dtype=dtype, name="mid_block")
        # Keras tracks layers held in lists, not in plain objects: list them too.
        self.level_layers = [l for lv in self.down_blocks for l in (*lv.resnets,
                                                                       *lv.downsamplers)]
        self.conv_norm_out = group_norm(groups, VAE_EPSILON, dtype, "conv_norm_out")
        self.conv_out = conv(2 * self.latent_channels, 3, dtype, "conv_out")
        self.quant_conv = conv(2 * self.latent_channels, 1, dtype, "quant_conv")

    def build(self, input_shape: Any) -> None:
        image = lambda c: (None, None, None, c)  # noqa: E731
        self.conv_in.build(image(self.in_channels))
        for layer in self.level_layers:
            layer.build(image(getattr(layer, "input_dim", layer.output_dim)))
        self.mid_block.build(image(self.block_out_channels[-1]))
        self.conv_norm_out.build(image(self.block_out_channels[-1]))
        self.conv_out.build(image(self.block_out_channels[-1]))
        self.quant_conv.build(image(2 * self.latent_channels))
        self.built = True

    def call(self, images: Any) -> Any:
        x = self.conv_in(images)
        for level in self.down_blocks:
            for layer in (*level.resnets, *level.downsamplers):
                x = layer(x)
        x = self.conv_out(ops.silu(self.conv_norm_out(self.mid_block(x))))
        return self.quant_conv(x)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        f = 2 ** (len(self.block_out_channels) - 1)
        b, h, w, _ = tuple(input_shape)
        return (b, None if h is None else h // f, None if w is None else w // f,
                2 * self.latent_channels)


class VAEDecoder(_VAEBase):
    """Unscaled latents `(B, h, w, latent_channels)` -> images `(B, f*h, f*w,
    out_channels)` in about [-1, 1] (not clipped), through `post_quant_conv`.

    Args: as `VAEEncoder` (in_channels is unused by the decoder).

    Example:

    >>> import numpy as np
    >>> from zoo.diffusion.stable_diffusion.vae import VAEDecoder
    >>> decoder = VAEDecoder(block_out_channels=(8, 16), layers_per_block=1,
    ...                      norm_num_groups=4)
    >>> decoder(np.zeros((1, 4, 4, 4), "float32")).shape
    (1, 8, 8, 3)
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dtype, groups = self.dtype_policy, self.norm_num_groups
        channels = list(reversed(self.block_out_channels))
        self.post_quant_conv = conv(self.latent_channels, 1, dtype, "post_quant_conv")
        self.conv_in = conv(channels[0], 3, dtype, "conv_in")
        self.mid_block = VAEMidBlock(channels[0], groups, dtype=dtype, name="mid_block")
        self.up_blocks = []
        previous = channels[0]
        for i, width in enumerate(channels):
            resnets = [ResnetBlock(previous if j == 0 else width, width, groups, VAE_EPSILON,
                                   dtype=dtype, name=f"up_blocks_{i}_resnets_{j}")
                       for j in range(self.layers_per_block + 1)]
            up = ([Upsample(width, dtype=dtype, name=f"up_blocks_{i}_upsamplers_0")]
                  if i < len(channels) - 1 else [])
            self.up_blocks.append(_Level(resnets, upsamplers=up))
            previous = width
        self.level_layers = [l for lv in self.up_blocks for l in (*lv.resnets, *lv.upsamplers)]
        self.conv_norm_out = group_norm(groups, VAE_EPSILON, dtype, "conv_norm_out")
        self.conv_out = conv(self.out_channels, 3, dtype, "conv_out")

    def build(self, input_shape: Any) -> None:
        image = lambda c: (None, None, None, c)  # noqa: E731
        self.post_quant_conv.build(image(self.latent_channels))
        self.conv_in.build(image(self.latent_channels))
        self.mid_block.build(image(self.block_out_channels[-1]))
        for layer in self.level_layers:
            layer.build(image(getattr(layer, "input_dim", layer.output_dim)))
        self.conv_norm_out.build(image(self.block_out_channels[0]))
        self.conv_out.build(image(self.block_out_channels[0]))
        self.built = True

    def call(self, latents: Any) -> Any:
        x = self.mid_block(self.conv_in(self.post_quant_conv(latents)))
        for level in self.up_blocks:
            for layer in (*level.resnets, *level.upsamplers):
                x = layer(x)
        return self.conv_out(ops.silu(self.conv_norm_out(x)))

    def compute_output_shape(self, input_shape: Any) -> tuple:
        f = 2 ** (len(self.block_out_channels) - 1)
        b, h, w, _ = tuple(input_shape)
        return (b, None if h is None else h * f, None if w is None else w * f,
                self.out_channels)
