"""Stable Diffusion's UNet (diffusers' `UNet2DConditionModel`), channels-last."""

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
from zoo.diffusion.stable_diffusion.unet_layers import SpatialTransformer, timestep_embedding

DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")


def _upsample_size(x: Any, skip: Any) -> tuple[int, int] | None:
    """The next skip connection's size when it is not twice `x`'s (sizes that
    are not multiples of 2 ** levels: diffusers then upsamples to the skip's
    size), else None (plain 2x; also when sizes are unknown while tracing)."""
    h, w, sh, sw = x.shape[1], x.shape[2], skip.shape[1], skip.shape[2]
    if None in (h, w, sh, sw) or (sh, sw) == (2 * h, 2 * w):
        return None
    return int(sh), int(sw)


class UNetLevel:
    """One resolution level: `resnets`, `attentions` (empty without
    cross-attention), `downsamplers` / `upsamplers` (empty or one)."""

    def __init__(self, resnets: list, attentions: list, samplers: list) -> None:
        self.resnets, self.attentions = resnets, attentions
        self.downsamplers = self.upsamplers = samplers

    def layers(self) -> list:
        return [*self.resnets, *self.attentions, *self.downsamplers]


class UNet(keras.layers.Layer):
    """The denoising UNet: `call(latents, timesteps, context)` predicts the noise.

    Shapes: latents `(B, H, W, in_channels)` (H and W multiples of
    2 ** (levels - 1)), timesteps `(B,)` float (fractional values work),
    context `(B, L, cross_attention_dim)` -> `(B, H, W, out_channels)`.

    Args:
        in_channels: latent channels in (4; 9 for inpainting models, which
            also take the mask and the masked image's latents).
        out_channels: channels out (4).
        block_out_channels: channels per resolution level.
        down_block_types: per level, "CrossAttnDownBlock2D" or "DownBlock2D".
        up_block_types: per level (lowest resolution first),
            "CrossAttnUpBlock2D" or "UpBlock2D".
        layers_per_block: resnets per down level (up levels have one more).
        num_attention_heads: heads of every attention block, or one per level
            (diffusers' SD v1 configs call this `attention_head_dim`).
        cross_attention_dim: width of the text context.
        norm_num_groups: GroupNorm groups.
        norm_eps: GroupNorm epsilon of the resnets and the output norm.
        flip_sin_to_cos: time embedding as [cos, sin] (SD) instead of [sin, cos].
        freq_shift: the time embedding's frequency shift (0 for SD).

    Example:

    >>> import numpy as np
    >>> from zoo.diffusion.stable_diffusion.unet import UNet
    >>> unet = UNet(block_out_channels=(32, 64), layers_per_block=1, num_attention_heads=2,
    ...             down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    ...             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ...             cross_attention_dim=16, norm_num_groups=8)
    >>> unet(np.zeros((1, 8, 8, 4)), np.array([10.0]), np.zeros((1, 3, 16))).shape
    (1, 8, 8, 4)
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 4,
                 block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
                 down_block_types: Sequence[str] = ("CrossAttnDownBlock2D",) * 3 + (
                     "DownBlock2D",),
                 up_block_types: Sequence[str] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 layers_per_block: int = 2, num_attention_heads: int | Sequence[int] = 8,
                 cross_attention_dim: int = 768, norm_num_groups: int = 32,
                 norm_eps: float = 1e-5, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        levels = len(block_out_channels)
        if len(down_block_types) != levels or len(up_block_types) != levels:
            raise ValueError(f"{levels} levels of block_out_channels need as many down and up "
                             f"block types, got {len(down_block_types)} and "
                             f"{len(up_block_types)}.")
        for kind, allowed in ((down_block_types, DOWN_BLOCKS), (up_block_types, UP_BLOCKS)):
            unknown = [t for t in kind if t not in allowed]
            if unknown:
                raise ValueError(f"Unknown block types {unknown}; supported: {allowed}.")
        heads = ([int(num_attention_heads)] * levels if isinstance(num_attention_heads, int)
                 else [int(h) for h in num_attention_heads])
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.block_out_channels = [int(c) for c in block_out_channels]
        self.down_block_types, self.up_block_types = list(down_block_types), list(up_block_types)
        self.layers_per_block, self.num_attention_heads = int(layers_per_block), heads
        self.cross_attention_dim, self.norm_num_groups = int(cross_attention_dim), norm_num_groups
        self.norm_eps, self.flip_sin_to_cos = float(norm_eps), bool(flip_sin_to_cos)
        self.freq_shift = float(freq_shift)
        dtype, groups, eps = self.dtype_policy, norm_num_groups, self.norm_eps
        channels = self.block_out_channels
        temb = 4 * channels[0]

        def resnet(cin: int, cout: int, name: str) -> ResnetBlock:
            return ResnetBlock(cin, cout, groups, eps, time_embedding_dim=temb, dtype=dtype,
                               name=name)

        def attention(width: int, n: int, name: str) -> SpatialTransformer:
            return SpatialTransformer(width, n, width // n, groups, dtype=dtype, name=name)

        self.conv_in = conv(channels[0], 3, dtype, "conv_in")
        self.time_linear_1 = keras.layers.Dense(temb, dtype=dtype, name="time_embedding_linear_1")
        self.time_linear_2 = keras.layers.Dense(temb, dtype=dtype, name="time_embedding_linear_2")
        skips, width = [channels[0]], channels[0]
        self.down_blocks = []
        for i, (kind, out) in enumerate(zip(down_block_types, channels)):
            name = f"down_blocks_{i}"
            resnets, attentions = [], []
            for j in range(self.layers_per_block):
                resnets.append(resnet(width, out, f"{name}_resnets_{j}"))
                if kind == "CrossAttnDownBlock2D":
                    attentions.append(attention(out, heads[i], f"{name}_attentions_{j}"))
                width = out
                skips.append(out)
            down = [Downsample(out, dtype=dtype, name=f"{name}_downsamplers_0")] if (
                i < levels - 1) else []
            skips += [out] * len(down)
            self.down_blocks.append(UNetLevel(resnets, attentions, down))
        self.mid_block = UNetLevel(
            [resnet(width, width, f"mid_block_resnets_{j}") for j in range(2)],
            [attention(width, heads[-1], "mid_block_attentions_0")], [])
        self.up_blocks = []
        up_heads = list(reversed(heads))
        for i, (kind, out) in enumerate(zip(up_block_types, reversed(channels))):
            name = f"up_blocks_{i}"
            resnets, attentions = [], []
            for j in range(self.layers_per_block + 1):
                resnets.append(resnet(width + skips.pop(), out, f"{name}_resnets_{j}"))
                if kind == "CrossAttnUpBlock2D":
                    attentions.append(attention(out, up_heads[i], f"{name}_attentions_{j}"))
                width = out
            up = [Upsample(out, dtype=dtype, name=f"{name}_upsamplers_0")] if (
                i < levels - 1) else []
            self.up_blocks.append(UNetLevel(resnets, attentions, up))
        # Keras tracks layers held in lists, not in plain objects: list them too.
        self.level_layers = [layer for level in (*self.down_blocks, self.mid_block,
                                                 *self.up_blocks) for layer in level.layers()]
        self.conv_norm_out = group_norm(groups, eps, dtype, "conv_norm_out")
        self.conv_out = conv(self.out_channels, 3, dtype, "conv_out")

    def build(self, latents_shape: Any, timesteps_shape: Any = None,
              context_shape: Any = None) -> None:
        # Built from the channel counts alone, so spatial sizes may stay unknown.
        image = lambda c: (None, None, None, c)  # noqa: E731
        context = (None, None, self.cross_attention_dim)
        base = self.block_out_channels[0]
        self.conv_in.build(image(self.in_channels))
        self.time_linear_1.build((None, base))
        self.time_linear_2.build((None, 4 * base))
        for level in (*self.down_blocks, self.mid_block, *self.up_blocks):
            for block in level.resnets:
                block.build(image(block.input_dim), (None, 4 * base))
            for attention in level.attentions:
                attention.build(image(attention.channels), context)
            for sampler in level.downsamplers:
                sampler.build(image(sampler.output_dim))
        self.conv_norm_out.build(image(base))
        self.conv_out.build(image(base))
        self.built = True

    def call(self, latents: Any, timesteps: Any, context: Any) -> Any:
        t = timestep_embedding(timesteps, self.block_out_channels[0], self.flip_sin_to_cos,
                               self.freq_shift)
        t = ops.cast(t, self.compute_dtype)
        temb = self.time_linear_2(ops.silu(self.time_linear_1(t)))
        x = self.conv_in(latents)
        skips = [x]
        for level in self.down_blocks:
            for j, block in enumerate(level.resnets):
                x = block(x, temb)
                if level.attentions:
                    x = level.attentions[j](x, context)
                skips.append(x)
            for down in level.downsamplers:
                x = down(x)
                skips.append(x)
        x = self.mid_block.resnets[0](x, temb)
        x = self.mid_block.attentions[0](x, context)
        x = self.mid_block.resnets[1](x, temb)
        for level in self.up_blocks:
            for j, block in enumerate(level.resnets):
                x = block(ops.concatenate([x, skips.pop()], axis=-1), temb)
                if level.attentions:
                    x = level.attentions[j](x, context)
            for up in level.upsamplers:
                x = up(x, size=_upsample_size(x, skips[-1]))
        return self.conv_out(ops.silu(self.conv_norm_out(x)))

    def compute_output_shape(self, latents_shape: Any, timesteps_shape: Any,
                             context_shape: Any) -> tuple:
        return (*tuple(latents_shape)[:3], self.out_channels)

    def get_config(self) -> dict:
        return {**super().get_config(), "in_channels": self.in_channels,
                "out_channels": self.out_channels,
                "block_out_channels": list(self.block_out_channels),
                "down_block_types": list(self.down_block_types),
                "up_block_types": list(self.up_block_types),
                "layers_per_block": self.layers_per_block,
                "num_attention_heads": list(self.num_attention_heads),
                "cross_attention_dim": self.cross_attention_dim,
                "norm_num_groups": self.norm_num_groups, "norm_eps": self.norm_eps,
                "flip_sin_to_cos": self.flip_sin_to_cos, "freq_shift": self.freq_shift}
