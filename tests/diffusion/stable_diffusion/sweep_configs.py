"""Random Stable Diffusion configs for `test_sd_sweep.py`, and the pipelines
diffusers / transformers build and save from them.

A config is three reference config dicts (`unet`: `UNet2DConditionModel`
arguments, `vae`: `AutoencoderKL`'s, `text`: `CLIPTextConfig`'s) plus the
tokenizer's (`num_merges`: its vocabulary is `512 + num_merges + 2` tokens,
`pad_token`, `layout`: the files its folder keeps). Each is drawn by
`sd_space` from the settings zoo claims to convert (any mix of plain and
cross-attention levels, head counts that do not divide the width, ...) and
now and then an unusual one (`UNUSUAL`) that zoo must either convert
exactly or refuse with a ConversionError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.sweeps import choice, not_multiple_of_8

#: unusual settings (config section, key, value, what an error must name): zoo
#: converts each exactly or refuses it with a ConversionError naming it
UNUSUAL: tuple[tuple[str, str, Any, str], ...] = (
    ("unet", "transformer_layers_per_block", 2, "transformer_layers_per_block"),
    ("unet", "only_cross_attention", True, "only_cross_attention"),
    ("unet", "downsample_padding", 0, "downsample_padding"),
    ("unet", "mid_block_scale_factor", 0.7, "mid_block_scale_factor"),
    ("unet", "time_embedding_dim", 40, "time_embedding_dim"),
    ("unet", "class_embed_type", "timestep", "class_embed_type"),
    ("vae", "mid_block_add_attention", False, "mid_block_add_attention"),
    ("vae", "use_quant_conv", False, "use_quant_conv"),
    ("text", "hidden_act", "gelu_new", "hidden_act"),
)
#: per-level settings: the default value of the other levels
PER_LEVEL = {"transformer_layers_per_block": 1, "only_cross_attention": False}
UNET_BLOCKS = {"down": ("CrossAttnDownBlock2D", "DownBlock2D"),
               "up": ("CrossAttnUpBlock2D", "UpBlock2D")}


def _widths(rng: np.random.Generator, levels: int, groups: int) -> list[int]:
    """`levels` channel counts, each a multiple of `groups` (GroupNorm), 8 to 96."""
    options = [groups * m for m in range(1, 97 // groups + 1) if 8 <= groups * m <= 96]
    return [choice(rng, options) for _ in range(levels)]


def _unet(rng: np.random.Generator, latent_channels: int, context: int) -> dict[str, Any]:
    levels = choice(rng, (1, 2, 2, 3, 3, 4))
    groups = choice(rng, (2, 4, 8, 16))
    widths = _widths(rng, levels, groups)
    # diffusers' SD configs give head counts as attention_head_dim; widths >= 8
    # >= heads, which need not divide the width
    heads: Any = choice(rng, (1, 2, 3, 4, 5, 8))
    if rng.random() < 0.4:  # one head count per level
        heads = [choice(rng, (1, 2, 3, 4, 8)) for _ in range(levels)]
    inpaint = rng.random() < 0.25
    unet = {
        "sample_size": choice(rng, (8, 16, 32)),
        "in_channels": 2 * latent_channels + 1 if inpaint else latent_channels,
        "out_channels": latent_channels,
        "block_out_channels": widths,
        "layers_per_block": choice(rng, (1, 1, 2, 3)),
        "down_block_types": [choice(rng, UNET_BLOCKS["down"]) for _ in range(levels)],
        "up_block_types": [choice(rng, UNET_BLOCKS["up"]) for _ in range(levels)],
        "attention_head_dim": heads,
        "cross_attention_dim": context,
        "norm_num_groups": groups,
        "norm_eps": choice(rng, (1e-5, 1e-6)),
        "use_linear_projection": bool(rng.integers(2)),
        "upcast_attention": bool(rng.integers(2)),
        "flip_sin_to_cos": bool(rng.random() < 0.8),
        "freq_shift": choice(rng, (0, 0, 1)),
    }
    # spelled out as the default would be: lists per level, explicit defaults
    if rng.random() < 0.3:
        unet["transformer_layers_per_block"] = [1] * levels
    if rng.random() < 0.3:
        unet["only_cross_attention"] = [False] * levels
    if rng.random() < 0.2:
        unet.update(mid_block_scale_factor=1, downsample_padding=1)
    if rng.random() < 0.2:
        unet["cross_attention_dim"] = [context] * levels
    if rng.random() < 0.2:
        unet["layers_per_block"] = [unet["layers_per_block"]] * levels
    return unet


def _vae(rng: np.random.Generator) -> dict[str, Any]:
    levels = choice(rng, (1, 2, 2, 3, 4))
    groups = choice(rng, (2, 4, 8, 16))
    return {
        "in_channels": 3, "out_channels": 3,
        "block_out_channels": _widths(rng, levels, groups),
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": choice(rng, (1, 1, 2, 3)),
        "latent_channels": choice(rng, (1, 3, 4, 4, 8, 16)),
        "norm_num_groups": groups,
        "scaling_factor": choice(rng, (0.18215, 0.13025, 1.5305, float(rng.uniform(0.1, 2)))),
        "sample_size": 32,
    }


def _text(rng: np.random.Generator, vocab_size: int) -> dict[str, Any]:
    heads = choice(rng, (1, 2, 3, 4))
    return {
        "vocab_size": vocab_size,
        "hidden_size": heads * choice(rng, (4, 6, 8)),
        "num_hidden_layers": choice(rng, (1, 2, 3)),
        "num_attention_heads": heads,
        "intermediate_size": not_multiple_of_8(rng, 9, 70),
        "max_position_embeddings": 77,
        "hidden_act": choice(rng, ("quick_gelu", "gelu")),
        "layer_norm_eps": choice(rng, (1e-5, 1e-6)),
    }


def _side(rng: np.random.Generator, levels: int) -> int:
    """A latent side whose lowest UNet level is 2 to 4 cells, often not a
    multiple of `2 ** (levels - 1)`."""
    factor = 2 ** (levels - 1)
    return factor * choice(rng, (2, 3)) + int(rng.integers(0, factor))


def sd_space(rng: np.random.Generator) -> dict[str, Any]:
    """One random Stable Diffusion config (see the module docstring)."""
    num_merges = choice(rng, (40, 300, 1000, int(rng.integers(10, 3000))))
    tokens = 512 + num_merges + 2
    vae = _vae(rng)
    text = _text(rng, tokens + choice(rng, (0, 0, 0, 7)))  # rows past the vocabulary: unused
    unet = _unet(rng, vae["latent_channels"], text["hidden_size"])
    config_levels = unet["block_out_channels"]
    config = {"unet": unet, "vae": vae,
              "text": text, "num_merges": num_merges,
              "pad_token": choice(rng, ("<|endoftext|>", "!")),
              "layout": choice(rng, ("tokenizer.json", "vocab.json+merges.txt")),
              # odd sizes (diffusers' resize path), the lowest level at least 2x2
              "latent_size": [_side(rng, len(config_levels)) for _ in range(2)],
              "image_factor": [choice(rng, (2, 3)), choice(rng, (2, 3))]}
    if rng.random() < 0.25:
        section, key, value, _ = UNUSUAL[int(rng.integers(len(UNUSUAL)))]
        if key in PER_LEVEL and rng.random() < 0.5:  # on the last level only
            levels = len(config["unet"]["block_out_channels"])
            value = [PER_LEVEL[key]] * (levels - 1) + [value]
        config[section][key] = value
    return config


def unusual(config: dict[str, Any]) -> str | None:
    """The unusual setting in `config` (what zoo's error must name if it
    refuses the config), or None: zoo must convert it."""
    for section, key, value, pattern in UNUSUAL:
        found = config[section].get(key)
        values = found if isinstance(found, list) else [found]
        if any(v == value for v in values):
            return pattern
    return None


def cheap(config: dict[str, Any]) -> bool:
    """Few enough blocks to compile quickly (`make test`'s sample)."""
    unet, vae = config["unet"], config["vae"]
    layers = unet["layers_per_block"]
    layers = layers[0] if isinstance(layers, list) else layers
    return (unusual(config) is None
            and len(unet["block_out_channels"]) * layers <= 4
            and len(vae["block_out_channels"]) * vae["layers_per_block"] <= 4
            and config["text"]["num_hidden_layers"] <= 2)


def _perturbed(model: Any, seed: int) -> Any:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    return model.eval()


def save_pipeline(config: dict[str, Any], folder: Path) -> Any:
    """Build the config's pipeline with diffusers / transformers (every weight
    perturbed with seeded noise), `save_pretrained` it into `folder`, and
    lay out its tokenizer folder as the config says. Returns the pipeline."""
    import torch
    import transformers
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    from tests.diffusion.stable_diffusion.tiny_pipeline import (
        SD15_SCHEDULER,
        write_clip_tokenizer_files,
    )

    torch.manual_seed(config["seed"])
    tokens = 512 + config["num_merges"] + 2
    text = _perturbed(transformers.CLIPTextModel(transformers.CLIPTextConfig(
        **config["text"], bos_token_id=tokens - 2, eos_token_id=tokens - 1,
        pad_token_id=tokens - 1)), config["seed"])
    unet = _perturbed(UNet2DConditionModel(**config["unet"]), config["seed"] + 1)
    vae = _perturbed(AutoencoderKL(**config["vae"]), config["seed"] + 2)
    vocab = write_clip_tokenizer_files(folder / "_vocab", config["num_merges"])
    tokenizer = transformers.CLIPTokenizer(str(vocab / "vocab.json"), str(vocab / "merges.txt"),
                                           pad_token=config["pad_token"], model_max_length=77)
    inpaint = config["unet"]["in_channels"] != config["vae"]["latent_channels"]
    pipeline_cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = pipeline_cls(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER), safety_checker=None,
                        feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder / "diffusers")
    saved = folder / "diffusers" / "tokenizer"
    if config["layout"] == "vocab.json+merges.txt":
        (saved / "tokenizer.json").unlink(missing_ok=True)
        write_clip_tokenizer_files(saved, config["num_merges"])
    else:
        for name in ("vocab.json", "merges.txt"):
            (saved / name).unlink(missing_ok=True)
    return pipe
