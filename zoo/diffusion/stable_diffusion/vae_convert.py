"""diffusers `AutoencoderKL` -> `VAEEncoder` / `VAEDecoder`: config map and weight ports."""

from __future__ import annotations

from typing import Any

from zoo.core.errors import ConversionError
from zoo.diffusion.stable_diffusion.diffusion_layers import ResnetBlock
from zoo.diffusion.stable_diffusion.vae import VAEAttention, VAEDecoder, VAEEncoder, VAEMidBlock
from zoo.presets.checkpoint_io import (
    WeightReader,
    port_conv2d,
    port_dense,
    port_group_norm,
    port_weight,
)


def vae_config(diffusers: dict[str, Any]) -> dict[str, Any]:
    """Arguments shared by `VAEEncoder(**c)` and `VAEDecoder(**c)` from a
    diffusers `AutoencoderKL` config dict."""
    levels = len(diffusers["block_out_channels"])
    for key, expected in (("down_block_types", "DownEncoderBlock2D"),
                          ("up_block_types", "UpDecoderBlock2D")):
        types = diffusers.get(key, [expected] * levels)
        if any(t != expected for t in types):
            raise ConversionError(f"The VAE's {key}={types} is not supported (only "
                                  f"{expected}, as in Stable Diffusion).")
    for key, default, what in (("use_quant_conv", True, "without quant_conv"),
                               ("use_post_quant_conv", True, "without post_quant_conv"),
                               ("mid_block_add_attention", True, "without mid-block attention")):
        if diffusers.get(key, default) is not default:
            raise ConversionError(f"A VAE {what} ({key}={diffusers[key]}) is not supported.")
    if diffusers.get("act_fn", "silu") != "silu":
        raise ConversionError(f"The VAE's act_fn={diffusers['act_fn']!r} is not supported.")
    return {"in_channels": int(diffusers.get("in_channels", 3)),
            "out_channels": int(diffusers.get("out_channels", 3)),
            "latent_channels": int(diffusers.get("latent_channels", 4)),
            "block_out_channels": [int(c) for c in diffusers["block_out_channels"]],
            "layers_per_block": int(diffusers.get("layers_per_block", 1)),
            "norm_num_groups": int(diffusers.get("norm_num_groups", 32))}


def port_resnet(block: ResnetBlock, weights: WeightReader, prefix: str) -> None:
    """A diffusers `ResnetBlock2D` (UNet or VAE) into a `ResnetBlock`."""
    port_group_norm(block.norm1, weights, f"{prefix}.norm1")
    port_conv2d(block.conv1, weights, f"{prefix}.conv1")
    if block.time_emb_proj is not None:
        port_dense(block.time_emb_proj, weights, f"{prefix}.time_emb_proj")
    port_group_norm(block.norm2, weights, f"{prefix}.norm2")
    port_conv2d(block.conv2, weights, f"{prefix}.conv2")
    if block.conv_shortcut is not None:
        port_conv2d(block.conv_shortcut, weights, f"{prefix}.conv_shortcut")


def _port_attention(layer: VAEAttention, weights: WeightReader, prefix: str) -> None:
    # diffusers names; old checkpoints: group_norm, query/key/value/proj_attn
    port_group_norm(layer.group_norm, weights, f"{prefix}.group_norm")
    for dense, names in ((layer.to_q, ("to_q", "query")), (layer.to_k, ("to_k", "key")),
                         (layer.to_v, ("to_v", "value")),
                         (layer.to_out, ("to_out.0", "proj_attn"))):
        kernel = weights.take(*(f"{prefix}.{n}.weight" for n in names))
        if kernel.ndim == 4:  # a 1x1 convolution
            kernel = kernel[:, :, 0, 0]
        port_weight(dense.kernel, kernel, transpose=True, name=f"{prefix}.{names[0]}")
        port_weight(dense.bias, weights.take(*(f"{prefix}.{n}.bias" for n in names)),
                    name=f"{prefix}.{names[0]}")


def _port_mid(block: VAEMidBlock, weights: WeightReader, prefix: str) -> None:
    port_resnet(block.resnets[0], weights, f"{prefix}.resnets.0")
    _port_attention(block.attentions[0], weights, f"{prefix}.attentions.0")
    port_resnet(block.resnets[1], weights, f"{prefix}.resnets.1")


def port_vae_encoder(encoder: VAEEncoder, weights: WeightReader, prefix: str = "") -> None:
    """Copy the encoder half of an `AutoencoderKL` (plus `quant_conv`)."""
    p = f"{prefix}encoder"
    port_conv2d(encoder.conv_in, weights, f"{p}.conv_in")
    for i, level in enumerate(encoder.down_blocks):
        for j, block in enumerate(level.resnets):
            port_resnet(block, weights, f"{p}.down_blocks.{i}.resnets.{j}")
        for down in level.downsamplers:
            port_conv2d(down.conv, weights, f"{p}.down_blocks.{i}.downsamplers.0.conv")
    _port_mid(encoder.mid_block, weights, f"{p}.mid_block")
    port_group_norm(encoder.conv_norm_out, weights, f"{p}.conv_norm_out")
    port_conv2d(encoder.conv_out, weights, f"{p}.conv_out")
    port_conv2d(encoder.quant_conv, weights, f"{prefix}quant_conv")


def port_vae_decoder(decoder: VAEDecoder, weights: WeightReader, prefix: str = "") -> None:
    """Copy the decoder half of an `AutoencoderKL` (plus `post_quant_conv`)."""
    p = f"{prefix}decoder"
    port_conv2d(decoder.post_quant_conv, weights, f"{prefix}post_quant_conv")
    port_conv2d(decoder.conv_in, weights, f"{p}.conv_in")
    _port_mid(decoder.mid_block, weights, f"{p}.mid_block")
    for i, level in enumerate(decoder.up_blocks):
        for j, block in enumerate(level.resnets):
            port_resnet(block, weights, f"{p}.up_blocks.{i}.resnets.{j}")
        for up in level.upsamplers:
            port_conv2d(up.conv, weights, f"{p}.up_blocks.{i}.upsamplers.0.conv")
    port_group_norm(decoder.conv_norm_out, weights, f"{p}.conv_norm_out")
    port_conv2d(decoder.conv_out, weights, f"{p}.conv_out")
