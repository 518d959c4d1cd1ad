"""Precision gates for Stable Diffusion: a tiny random diffusers pipeline
(tiny_pipeline.py: SD v1's structure at a small width, every weight
perturbed), converted by zoo, loaded with `from_preset(dtype="bfloat16")`
(issue 21), and quantized with `quantize("int8")` (the text encoder's and
the UNet's Dense and Embedding layers; the VAE and every convolution stay
float), saved and loaded again (issue 23), against the same preset in
float32.

Gates (fixed by the issues, never loosened): from the same initial latents
and seed, the bfloat16 image has a PSNR of at least 30 dB against the
float32 image (pixels in [0, 1]), the int8 image at least 25 dB, for every
image.

The pipeline's tokenizer keeps 1000 of CLIP's merges (a 1514-token
vocabulary) to save building and converting the full one; the prompts are
real English. Four steps of the default scheduler (PNDM, SD v1.5's) with
classifier-free guidance (scale 7.5, the default); the initial latents are
passed in, and the seed is the same.

Measured PSNR (the lower of the two images): bfloat16 jax 40.7 dB,
tensorflow 41.4 dB, torch 41.0 dB; int8 54.4 dB (each backend).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.diffusion.stable_diffusion.tiny_pipeline import IMAGE_SIZE, make_pipeline

pytest.importorskip("torch")
pytest.importorskip("diffusers")

MIN_PSNR_DB = 30.0
MIN_INT8_PSNR_DB = 25.0
PROMPTS = ["a photo of an astronaut riding a horse", "a watercolor of a red fox"]
STEPS = 4


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    from zoo.diffusion.stable_diffusion.stable_diffusion_convert import convert_diffusers
    from zoo.models import StableDiffusion

    root = tmp_path_factory.mktemp("sd_bfloat16")
    make_pipeline(root, num_merges=1000)
    convert_diffusers(root / "diffusers", root / "preset", "tiny")
    quantized = StableDiffusion.from_preset(root / "preset")
    quantized.quantize("int8")
    quantized.save_to_preset(root / "int8")
    return (StableDiffusion.from_preset(root / "preset"),
            StableDiffusion.from_preset(root / "preset", dtype="bfloat16"),
            StableDiffusion.from_preset(root / "int8"))


def psnr(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per image, in dB, for pixels in [0, 1]."""
    mse = np.mean((image.astype("float64") - reference) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-20))


def test_bfloat16_image_psnr_at_least_30_db(pipelines):
    full, half, _ = pipelines
    assert half.backbone.unet.compute_dtype == "bfloat16"
    latents = np.random.default_rng(0).standard_normal(
        (len(PROMPTS), IMAGE_SIZE // 2, IMAGE_SIZE // 2, 4)).astype("float32")
    kwargs = dict(num_steps=STEPS, seed=3, latents=latents, output_type="float")
    reference = full.text_to_image(PROMPTS, **kwargs)
    ours = half.text_to_image(PROMPTS, **kwargs)
    assert ours.shape == reference.shape == (len(PROMPTS), IMAGE_SIZE, IMAGE_SIZE, 3)
    assert np.isfinite(ours).all()
    assert reference.std() > 0.05  # a real image, not a constant one
    values = psnr(ours, reference)
    print(f"stable diffusion bfloat16: PSNR {np.round(values, 2).tolist()} dB")
    assert values.min() >= MIN_PSNR_DB, values


def test_int8_image_psnr_at_least_25_db(pipelines):
    from zoo.core.quantization import quantized_layers

    full, _, quantized = pipelines
    parts = {path.split("/")[0] for path in quantized_layers(quantized.backbone)}
    assert parts == {"text_encoder", "unet"}, parts
    latents = np.random.default_rng(1).standard_normal(
        (len(PROMPTS), IMAGE_SIZE // 2, IMAGE_SIZE // 2, 4)).astype("float32")
    kwargs = dict(num_steps=STEPS, seed=3, latents=latents, output_type="float")
    reference = full.text_to_image(PROMPTS, **kwargs)
    ours = quantized.text_to_image(PROMPTS, **kwargs)
    assert np.isfinite(ours).all() and reference.std() > 0.05
    values = psnr(ours, reference)
    print(f"stable diffusion int8: PSNR {np.round(values, 2).tolist()} dB")
    assert values.min() >= MIN_INT8_PSNR_DB, values
