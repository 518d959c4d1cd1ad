"""`StableDiffusion`: text-to-image, image-to-image and inpainting with SD v1."""

from __future__ import annotations

from typing import Any

import keras

from zoo.core.text_to_image import TextToImage
from zoo.diffusion.schedulers import get_scheduler
from zoo.diffusion.stable_diffusion.stable_diffusion_backbone import StableDiffusionBackbone
from zoo.diffusion.stable_diffusion.stable_diffusion_preprocessor import (
    StableDiffusionPreprocessor,
)

#: what `StableDiffusion()` loads
DEFAULT_PRESET = "stable_diffusion_v1_5"


@keras.saving.register_keras_serializable(package="zoo")
class StableDiffusion(TextToImage):
    """Stable Diffusion v1: `text_to_image`, `image_to_image` and `inpaint`.

    `StableDiffusion()` loads the default preset (stable_diffusion_v1_5, 512x512);
    `StableDiffusion.from_preset(handle)` any other: a catalog name, a
    diffusers folder or `hf://` repo, or a single-file `.safetensors` /
    `.ckpt` checkpoint. Every method returns uint8 numpy images
    `(n, height, width, 3)`; the same `seed` gives the same images.

    Args:
        backbone: a `StableDiffusionBackbone`; None loads the default preset.
        preprocessor: a `StableDiffusionPreprocessor` (the CLIP tokenizer);
            None with `backbone=None` loads the default preset's.
        default_scheduler: the scheduler used when a call names none
            ("pndm", as diffusers' SD v1 pipelines).

    Example:

    >>> from zoo.models import StableDiffusion
    >>> sd = StableDiffusion()  # doctest: +SKIP
    >>> images = sd.text_to_image("a photo of an astronaut riding a horse",  # doctest: +SKIP
    ...                           num_steps=25, seed=0)
    >>> images.shape  # doctest: +SKIP
    (1, 512, 512, 3)
    """

    backbone_cls = StableDiffusionBackbone
    preprocessor_cls = StableDiffusionPreprocessor
    get_scheduler = staticmethod(get_scheduler)

    def __init__(self, backbone: StableDiffusionBackbone | None = None,
                 preprocessor: StableDiffusionPreprocessor | None = None,
                 default_scheduler: str = "pndm", **kwargs: Any) -> None:
        if backbone is None:
            backbone = StableDiffusionBackbone.from_preset(DEFAULT_PRESET)
            if preprocessor is None:
                preprocessor = StableDiffusionPreprocessor.from_preset(DEFAULT_PRESET)
        super().__init__(backbone, preprocessor, **kwargs)
        self.default_scheduler = default_scheduler

    def get_config(self) -> dict:
        return {**super().get_config(), "default_scheduler": self.default_scheduler}
