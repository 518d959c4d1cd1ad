"""Small random Stable Diffusion pipelines made with diffusers and transformers.

The networks have SD v1's structure at a tiny width (UNet levels of 32 and
64 channels, a 2-level VAE, a 2-layer CLIP text encoder over CLIP's real
49408-token vocabulary), every parameter perturbed with seeded noise so no
weight is trivially zero or one. They are saved in the diffusers layout,
which zoo converts, and kept for the whole session.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np

#: SD v1.5's scheduler_config.json
SD15_SCHEDULER = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                  "num_train_timesteps": 1000, "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
                  "trained_betas": None}
IMAGE_SIZE = 32  # pixels; the 2-level VAE makes 16x16 latents


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) printable stand-in character for every byte."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def write_clip_tokenizer_files(directory: Path, num_merges: int = 49152 - 256 - 2) -> Path:
    """transformers' CLIP tokenizer files (vocab.json, merges.txt) built from
    the vocabulary open_clip ships, as CLIP's own tokenizer builds it; with
    fewer merges, a smaller vocabulary of `512 + num_merges + 2` tokens."""
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None, "open_clip_torch is needed for CLIP's vocabulary"
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:num_merges + 1]]
    base = list(_bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return directory


def _perturb(model: object, seed: int) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)


def make_pipeline(directory: Path, unet_in_channels: int = 4,
                  num_merges: int = 49152 - 256 - 2) -> object:
    """Build, save (diffusers layout) and return a tiny StableDiffusionPipeline.

    `num_merges` below CLIP's 48894 gives the pipeline a CLIP tokenizer and
    text encoder of its own, smaller vocabulary (`512 + num_merges + 2`)."""
    vocab_size = 512 + num_merges + 2
    import torch
    import transformers
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1)).eval()
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2, in_channels=unet_in_channels, out_channels=4,
        block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=32).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=32, sample_size=IMAGE_SIZE).eval()
    for i, model in enumerate((text, unet, vae)):
        _perturb(model, 100 + i)
    tokenizer = transformers.CLIPTokenizer(
        *[str(p) for p in _tokenizer_paths(directory / "_vocab", num_merges)],
        pad_token="<|endoftext|>",
        model_max_length=77)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(directory / "diffusers")
    return pipe


def _tokenizer_paths(directory: Path, num_merges: int) -> tuple[Path, Path]:
    write_clip_tokenizer_files(directory, num_merges)
    return directory / "vocab.json", directory / "merges.txt"


def sample_image(seed: int = 0, size: int = IMAGE_SIZE) -> np.ndarray:
    """A smooth random uint8 RGB image (a few colour gradients plus noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x, y, 1 - x * y], -1) * rng.uniform(0.3, 1.0, 3)
    image = base * 255 + rng.normal(0, 12, base.shape)
    return np.clip(image, 0, 255).astype("uint8")


def sample_mask(size: int = IMAGE_SIZE) -> np.ndarray:
    """A uint8 mask: white (repaint) in a centred square, black elsewhere."""
    mask = np.zeros((size, size), "uint8")
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    return mask
