"""diffusers `UNet2DConditionModel` -> `UNet`: config map and weight ports."""

from __future__ import annotations

from typing import Any

from zoo.core.errors import ConversionError
from zoo.diffusion.stable_diffusion.unet import DOWN_BLOCKS, UP_BLOCKS, UNet
from zoo.diffusion.stable_diffusion.unet_layers import Attention, SpatialTransformer
from zoo.diffusion.stable_diffusion.vae_convert import port_resnet
from zoo.presets.checkpoint_io import (
    WeightReader,
    port_conv2d,
    port_dense,
    port_group_norm,
    port_layer_norm,
    port_weight,
)
from zoo.utils.progress import progress

#: config keys whose non-default values change the architecture zoo builds
_UNSUPPORTED = {
    "class_embed_type": None, "addition_embed_type": None, "time_cond_proj_dim": None,
    "encoder_hid_dim": None, "num_class_embeds": None, "projection_class_embeddings_input_dim":
    None, "resnet_time_scale_shift": "default", "center_input_sample": False,
    "only_cross_attention": False, "dual_cross_attention": False, "attention_type": "default",
    "class_embeddings_concat": False, "mid_block_type": "UNetMidBlock2DCrossAttn",
    "act_fn": "silu", "time_embedding_type": "positional", "conv_in_kernel": 3,
    "conv_out_kernel": 3, "timestep_post_act": None, "time_embedding_act_fn": None,
    "mid_block_only_cross_attention": None, "cross_attention_norm": None,
    "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0,
    "reverse_transformer_layers_per_block": None, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "time_embedding_dim": None, "encoder_hid_dim_type": None,
}
#: settings diffusers also takes per level (a list): zoo needs one value for all
_PER_LEVEL = ("only_cross_attention", "cross_attention_dim", "layers_per_block")


def one_value_per_level(diffusers: dict[str, Any]) -> dict[str, Any]:
    """`diffusers` (a UNet config) with each per-level list of `_PER_LEVEL`
    that repeats one value replaced by that value (zoo builds every level
    alike); a list whose levels differ is a ConversionError."""
    out = dict(diffusers)
    for key in _PER_LEVEL:
        value = out.get(key)
        if not isinstance(value, (list, tuple)):
            continue
        if len(set(value)) != 1:
            raise ConversionError(f"The UNet's {key}={list(value)} differs between levels, "
                                  f"which is not supported (one {key} for every level).")
        out[key] = value[0]
    return out


def unet_config(diffusers: dict[str, Any]) -> dict[str, Any]:
    """`UNet` arguments from a diffusers `UNet2DConditionModel` config dict.

    diffusers' SD v1 configs give the head count as `attention_head_dim` (a
    historical misnomer it keeps for compatibility); `num_attention_heads`,
    when set, wins, as in diffusers.
    """
    diffusers = one_value_per_level(diffusers)
    for key, default in _UNSUPPORTED.items():
        value = diffusers.get(key, default)
        if value != default and not (value is False and default is None):
            raise ConversionError(f"The UNet's {key}={value!r} is not supported (zoo builds "
                                  f"Stable Diffusion v1/v2-style UNets: {key}={default!r}).")
    layers = diffusers.get("transformer_layers_per_block", 1)
    if (layers if isinstance(layers, int) else max(layers)) != 1 or (
            not isinstance(layers, int) and min(layers) != 1):
        raise ConversionError(f"transformer_layers_per_block={layers} is not supported (1).")
    for key, allowed in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
        unknown = [t for t in diffusers.get(key, []) if t not in allowed]
        if unknown:
            raise ConversionError(f"The UNet's {key} contains {unknown}; supported: {allowed}.")
    if diffusers.get("upcast_attention"):
        pass  # float32 attention is what zoo computes anyway (float32 default dtype)
    heads = diffusers.get("num_attention_heads") or diffusers.get("attention_head_dim", 8)
    layers_per_block = diffusers.get("layers_per_block", 2)
    return {"in_channels": int(diffusers.get("in_channels", 4)),
            "out_channels": int(diffusers.get("out_channels", 4)),
            "block_out_channels": [int(c) for c in diffusers["block_out_channels"]],
            "down_block_types": list(diffusers["down_block_types"]),
            "up_block_types": list(diffusers["up_block_types"]),
            "layers_per_block": int(layers_per_block),
            "num_attention_heads": heads if isinstance(heads, int) else [int(h) for h in heads],
            "cross_attention_dim": int(diffusers.get("cross_attention_dim", 1280)),
            "norm_num_groups": int(diffusers.get("norm_num_groups", 32)),
            "norm_eps": float(diffusers.get("norm_eps", 1e-5)),
            "flip_sin_to_cos": bool(diffusers.get("flip_sin_to_cos", True)),
            "freq_shift": float(diffusers.get("freq_shift", 0))}


def _port_linear_or_conv(dense: Any, weights: WeightReader, prefix: str) -> None:
    """A 1x1 `Conv2d` (SD v1's proj_in/proj_out) or a `Linear` (SD 2's) into a Dense."""
    kernel = weights.take(f"{prefix}.weight")
    if kernel.ndim == 4:
        kernel = kernel[:, :, 0, 0]
    port_weight(dense.kernel, kernel, transpose=True, name=prefix)
    port_weight(dense.bias, weights.take(f"{prefix}.bias"), name=prefix)


def _port_attention(layer: Attention, weights: WeightReader, prefix: str) -> None:
    for name in ("to_q", "to_k", "to_v"):
        port_dense(getattr(layer, name), weights, f"{prefix}.{name}", bias=False)
    port_dense(layer.to_out, weights, f"{prefix}.to_out.0")


def _port_transformer(layer: SpatialTransformer, weights: WeightReader, prefix: str) -> None:
    port_group_norm(layer.norm, weights, f"{prefix}.norm")
    _port_linear_or_conv(layer.proj_in, weights, f"{prefix}.proj_in")
    block, p = layer.transformer_blocks[0], f"{prefix}.transformer_blocks.0"
    for i in (1, 2, 3):
        port_layer_norm(getattr(block, f"norm{i}"), weights, f"{p}.norm{i}")
    _port_attention(block.attn1, weights, f"{p}.attn1")
    _port_attention(block.attn2, weights, f"{p}.attn2")
    port_dense(block.ff_proj, weights, f"{p}.ff.net.0.proj")
    port_dense(block.ff_out, weights, f"{p}.ff.net.2")
    _port_linear_or_conv(layer.proj_out, weights, f"{prefix}.proj_out")


def port_unet(unet: UNet, weights: WeightReader, prefix: str = "") -> None:
    """Copy a diffusers `UNet2DConditionModel` state dict (names under `prefix`)."""
    port_conv2d(unet.conv_in, weights, f"{prefix}conv_in")
    port_dense(unet.time_linear_1, weights, f"{prefix}time_embedding.linear_1")
    port_dense(unet.time_linear_2, weights, f"{prefix}time_embedding.linear_2")
    levels = [(f"{prefix}down_blocks.{i}", level, "downsamplers")
              for i, level in enumerate(unet.down_blocks)]
    levels.append((f"{prefix}mid_block", unet.mid_block, None))
    levels += [(f"{prefix}up_blocks.{i}", level, "upsamplers")
               for i, level in enumerate(unet.up_blocks)]
    for p, level, samplers in progress(levels, desc="Converting UNet", total=len(levels)):
        for j, block in enumerate(level.resnets):
            port_resnet(block, weights, f"{p}.resnets.{j}")
        for j, attention in enumerate(level.attentions):
            _port_transformer(attention, weights, f"{p}.attentions.{j}")
        if samplers:
            for sampler in getattr(level, samplers):
                port_conv2d(sampler.conv, weights, f"{p}.{samplers}.0.conv")
    port_group_norm(unet.conv_norm_out, weights, f"{prefix}conv_norm_out")
    port_conv2d(unet.conv_out, weights, f"{prefix}conv_out")
