"""Original (CompVis / LDM) single-file checkpoint names <-> diffusers' names.

A single-file Stable Diffusion v1 checkpoint (`v1-5-pruned-emaonly.safetensors`,
`sd-v1-4.ckpt`) holds all three networks under the original repository's
module paths:

- `model.diffusion_model.*`: the UNet (`input_blocks.N.M`, `middle_block`,
  `output_blocks`, `time_embed`, `out`);
- `first_stage_model.*`: the VAE (`encoder.down.I.block.J`, `mid.attn_1`,
  `decoder.up.I` numbered from the lowest resolution, `quant_conv`, ...);
- `cond_stage_model.transformer.*`: the CLIP text model (transformers' names,
  with or without the `text_model.` level).

`original_to_diffusers` renames such a state dict into one dict per
component, in diffusers' names, which the same ports as for diffusers
folders then read. The renaming is computed from the UNet and VAE layouts
(number of levels, blocks per level, which levels have attention), so it
covers every size of the SD v1 architecture, not only the released one.
Other entries (`model_ema.*`, the noise schedule buffers `betas`,
`alphas_cumprod`, ...) are not weights of the inference networks and are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from zoo.core.errors import ConversionError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."

_RESNET_UNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
                "out_layers.0": "norm2", "out_layers.3": "conv2",
                "skip_connection": "conv_shortcut"}
_RESNET_VAE = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
               "nin_shortcut": "conv_shortcut"}
_VAE_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v",
                  "proj_out": "to_out.0"}


@dataclass(frozen=True)
class UNetLayout:
    """The part of a UNet config that decides its original module numbering."""

    #: per down level: whether its blocks have cross-attention
    down_attention: Sequence[bool]
    #: per up level (diffusers' order, lowest resolution first): attention?
    up_attention: Sequence[bool]
    #: resnets per down level (up levels have one more)
    layers_per_block: int


@dataclass(frozen=True)
class VAELayout:
    """The part of a VAE config that decides its original module numbering."""

    #: number of resolution levels (len(block_out_channels))
    num_levels: int
    #: resnets per encoder level (decoder levels have one more)
    layers_per_block: int


@dataclass
class _Names:
    """original name -> (component, diffusers name) for whole module prefixes."""

    modules: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(self, original: str, component: str, diffusers: str) -> None:
        self.modules[original] = (component, diffusers)


def unet_layout(config: Mapping) -> UNetLayout:
    """The `UNetLayout` of a diffusers UNet config dict."""
    return UNetLayout(
        down_attention=tuple(t.startswith("CrossAttn") for t in config["down_block_types"]),
        up_attention=tuple(t.startswith("CrossAttn") for t in config["up_block_types"]),
        layers_per_block=int(config.get("layers_per_block", 2)))


def vae_layout(config: Mapping) -> VAELayout:
    """The `VAELayout` of a diffusers AutoencoderKL config dict."""
    return VAELayout(num_levels=len(config["block_out_channels"]),
                     layers_per_block=int(config.get("layers_per_block", 2)))


def _resnet(names: _Names, original: str, component: str, diffusers: str,
            table: Mapping[str, str]) -> None:
    for old, new in table.items():
        names.add(f"{original}.{old}", component, f"{diffusers}.{new}")


def _unet_names(layout: UNetLayout, names: _Names) -> None:
    p, per_level = UNET_PREFIX, layout.layers_per_block + 1
    names.add(f"{p}time_embed.0", "unet", "time_embedding.linear_1")
    names.add(f"{p}time_embed.2", "unet", "time_embedding.linear_2")
    names.add(f"{p}input_blocks.0.0", "unet", "conv_in")
    levels = len(layout.down_attention)
    for i, attention in enumerate(layout.down_attention):
        for j in range(layout.layers_per_block):
            block = f"{p}input_blocks.{1 + i * per_level + j}"
            _resnet(names, f"{block}.0", "unet", f"down_blocks.{i}.resnets.{j}", _RESNET_UNET)
            if attention:
                names.add(f"{block}.1", "unet", f"down_blocks.{i}.attentions.{j}")
        if i < levels - 1:
            names.add(f"{p}input_blocks.{(i + 1) * per_level}.0.op", "unet",
                      f"down_blocks.{i}.downsamplers.0.conv")
    _resnet(names, f"{p}middle_block.0", "unet", "mid_block.resnets.0", _RESNET_UNET)
    names.add(f"{p}middle_block.1", "unet", "mid_block.attentions.0")
    _resnet(names, f"{p}middle_block.2", "unet", "mid_block.resnets.1", _RESNET_UNET)
    for i, attention in enumerate(layout.up_attention):
        for j in range(per_level):
            block = f"{p}output_blocks.{i * per_level + j}"
            _resnet(names, f"{block}.0", "unet", f"up_blocks.{i}.resnets.{j}", _RESNET_UNET)
            if attention:
                names.add(f"{block}.1", "unet", f"up_blocks.{i}.attentions.{j}")
        if i < levels - 1:
            block = f"{p}output_blocks.{i * per_level + per_level - 1}"
            names.add(f"{block}.{2 if attention else 1}.conv", "unet",
                      f"up_blocks.{i}.upsamplers.0.conv")
    names.add(f"{p}out.0", "unet", "conv_norm_out")
    names.add(f"{p}out.2", "unet", "conv_out")


def _vae_mid(names: _Names, original: str, diffusers: str) -> None:
    _resnet(names, f"{original}.block_1", "vae", f"{diffusers}.resnets.0", _RESNET_VAE)
    for old, new in _VAE_ATTENTION.items():
        names.add(f"{original}.attn_1.{old}", "vae", f"{diffusers}.attentions.0.{new}")
    _resnet(names, f"{original}.block_2", "vae", f"{diffusers}.resnets.1", _RESNET_VAE)


def _vae_names(layout: VAELayout, names: _Names) -> None:
    p, n = VAE_PREFIX, layout.num_levels
    for part in ("encoder", "decoder"):
        names.add(f"{p}{part}.conv_in", "vae", f"{part}.conv_in")
        names.add(f"{p}{part}.norm_out", "vae", f"{part}.conv_norm_out")
        names.add(f"{p}{part}.conv_out", "vae", f"{part}.conv_out")
        _vae_mid(names, f"{p}{part}.mid", f"{part}.mid_block")
    for i in range(n):
        for j in range(layout.layers_per_block):
            _resnet(names, f"{p}encoder.down.{i}.block.{j}", "vae",
                    f"encoder.down_blocks.{i}.resnets.{j}", _RESNET_VAE)
        if i < n - 1:
            names.add(f"{p}encoder.down.{i}.downsample.conv", "vae",
                      f"encoder.down_blocks.{i}.downsamplers.0.conv")
        level = n - 1 - i  # the original numbers decoder levels from the lowest resolution
        for j in range(layout.layers_per_block + 1):
            _resnet(names, f"{p}decoder.up.{level}.block.{j}", "vae",
                    f"decoder.up_blocks.{i}.resnets.{j}", _RESNET_VAE)
        if i < n - 1:
            names.add(f"{p}decoder.up.{level}.upsample.conv", "vae",
                      f"decoder.up_blocks.{i}.upsamplers.0.conv")
    names.add(f"{p}quant_conv", "vae", "quant_conv")
    names.add(f"{p}post_quant_conv", "vae", "post_quant_conv")


def module_names(unet: UNetLayout, vae: VAELayout) -> dict[str, tuple[str, str]]:
    """original module prefix -> (component, diffusers module prefix)."""
    names = _Names()
    _unet_names(unet, names)
    _vae_names(vae, names)
    return names.modules


def _split(name: str, modules: Mapping[str, tuple[str, str]]) -> tuple[str, str] | None:
    """(component, diffusers name) of an original weight name, by its longest
    known module prefix; None when no module matches."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        hit = modules.get(".".join(parts[:cut]))
        if hit is not None:
            return hit[0], ".".join([hit[1], *parts[cut:]])
    return None


def _is_vae_attention_matrix(diffusers_name: str) -> bool:
    return ".attentions.0.to_" in diffusers_name and diffusers_name.endswith(".weight") and (
        "mid_block" in diffusers_name)


def original_to_diffusers(state: Mapping[str, np.ndarray], unet: UNetLayout, vae: VAELayout,
                          source: str) -> dict[str, dict[str, np.ndarray]]:
    """Rename an original checkpoint into `{"text_encoder", "unet", "vae"}`
    state dicts with diffusers' (and transformers') names.

    Inside the UNet's attention blocks the original and diffusers names are
    the same below the block, so only prefixes change. The VAE's mid-block
    attention stores 1x1 convolutions `(C, C, 1, 1)` where diffusers has
    linear layers `(C, C)`; they are reshaped.

    Raises:
        ConversionError: a UNet or VAE weight has no place in the layout (the
            checkpoint is not this architecture), or a component is missing.
    """
    modules = module_names(unet, vae)
    out: dict[str, dict[str, np.ndarray]] = {"text_encoder": {}, "unet": {}, "vae": {}}
    for name, array in state.items():
        if name.startswith(TEXT_PREFIX):
            rest = name[len(TEXT_PREFIX):]
            out["text_encoder"][rest if rest.startswith("text_model.") else
                                f"text_model.{rest}"] = array
            continue
        if not name.startswith((UNET_PREFIX, VAE_PREFIX)):
            continue  # EMA copies, noise schedule buffers, training state
        hit = _split(name, modules)
        if hit is None:
            raise ConversionError(
                f"{source}: the weight {name!r} has no place in a Stable Diffusion v1 "
                f"UNet/VAE with this layout ({unet}, {vae}). The checkpoint is another "
                "architecture (SDXL, SD 2 with a different config, ...) or its config was "
                "guessed wrong. Fix: pass the matching diffusers config folder.")
        component, diffusers_name = hit
        if component == "vae" and _is_vae_attention_matrix(diffusers_name) and array.ndim == 4:
            array = array[:, :, 0, 0]
        out[component][diffusers_name] = array
    missing = [k for k, v in out.items() if not v]
    if missing:
        raise ConversionError(
            f"{source} has no {', '.join(missing)} weights (looked for names starting with "
            f"{UNET_PREFIX!r}, {VAE_PREFIX!r} and {TEXT_PREFIX!r}). Fix: pass a complete "
            "single-file Stable Diffusion v1 checkpoint.")
    return out


def diffusers_to_original(components: Mapping[str, Mapping[str, np.ndarray]], unet: UNetLayout,
                          vae: VAELayout) -> dict[str, np.ndarray]:
    """The inverse of `original_to_diffusers`: one original-format state dict
    from diffusers-named component state dicts (used to write single-file
    checkpoints, e.g. for tests)."""
    inverse = {(component, new): old for old, (component, new) in
               module_names(unet, vae).items()}
    state: dict[str, np.ndarray] = {}
    for component in ("unet", "vae"):
        for name, array in components[component].items():
            parts = name.split(".")
            for cut in range(len(parts) - 1, 0, -1):
                old = inverse.get((component, ".".join(parts[:cut])))
                if old is not None:
                    break
            else:
                raise ConversionError(f"No original name for {component} weight {name!r}.")
            if component == "vae" and _is_vae_attention_matrix(name):
                array = array[:, :, None, None]
            state[".".join([old, *parts[cut:]])] = array
    for name, array in components["text_encoder"].items():
        state[TEXT_PREFIX + name] = array
    return state
