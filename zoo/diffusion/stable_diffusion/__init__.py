"""Stable Diffusion v1: CLIP text encoder, UNet, VAE and the `StableDiffusion` task."""

import zoo.presets  # noqa: F401  (installs the preset resolver zoo.core's from_preset uses)

from zoo.diffusion.stable_diffusion.stable_diffusion import StableDiffusion
from zoo.diffusion.stable_diffusion.stable_diffusion_backbone import StableDiffusionBackbone
from zoo.diffusion.stable_diffusion.stable_diffusion_preprocessor import (
    StableDiffusionPreprocessor,
)

__all__ = ["StableDiffusion", "StableDiffusionBackbone", "StableDiffusionPreprocessor"]
