"""Checking and preparing the inputs of text-to-image tasks (numpy + Pillow)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from zoo.core.errors import InputError
from zoo.utils.images import ImageError, load_image

#: SD's VAE downsampling factor (image sizes are multiples of the model's factor)
LATENT_FACTOR = 8


def as_prompt_list(prompt: str | Sequence[str], what: str = "prompt") -> list[str]:
    """One prompt or a non-empty list of prompts, as a list of str.

    Raises:
        InputError: `prompt` is not a string or a non-empty list of strings.
    """
    if isinstance(prompt, str):
        return [prompt]
    got = type(prompt).__name__
    if isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray)):
        bad = [i for i, p in enumerate(prompt) if not isinstance(p, str)]
        if prompt and not bad:
            return list(prompt)
        got = (f"{what}[{bad[0]}] is a {type(prompt[bad[0]]).__name__}" if bad
               else f"an empty {got}")
    raise InputError(f"{what} must be a string or a non-empty list of strings, got {got}. "
                     f"Fix: pass e.g. {what}='a photo of a cat' ('' asks for an "
                     "unconditional image).")


def check_num_steps(num_steps: Any) -> None:
    """Raise an `InputError` unless `num_steps` is a positive int."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or (
            num_steps < 1):
        raise InputError(f"num_steps={num_steps!r} is not a positive int: diffusion needs at "
                         "least one denoising step. Fix: pass e.g. num_steps=50.")


def check_guidance_scale(guidance_scale: Any) -> float:
    """`guidance_scale` as a float, or an `InputError` unless it is a finite number."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) or (
            not np.isfinite(guidance_scale)):
        raise InputError(f"guidance_scale={guidance_scale!r} is not a finite number. Fix: pass "
                         "e.g. guidance_scale=7.5 (or 1.0 to turn guidance off).")
    return float(guidance_scale)


def check_seed(seed: Any) -> int | None:
    """`seed` as an int (or None), or an `InputError`."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"seed={seed!r} is not a non-negative int. Fix: pass e.g. seed=0, "
                         "or seed=None for a random one.")
    return int(seed)


def _round_down(size: tuple[int, int], factor: int) -> tuple[int, int]:
    return tuple(s - s % factor for s in size)  # type: ignore[return-value]


def prepare_image(image: Any, return_original_size: bool = False,
                  factor: int = LATENT_FACTOR) -> Any:
    """An RGB image as float32 `(H, W, 3)` in [-1, 1], its size rounded down to
    a multiple of `factor` with a Lanczos resize (as diffusers' image
    processor does).

    Args:
        image: a path, PIL image or array accepted by `zoo.utils.images.load_image`.
        return_original_size: also return the `(height, width)` before resizing.
        factor: the VAE's downsampling factor (8 for SD).

    Raises:
        ImageError: the image cannot be read as RGB, or is smaller than 8x8.
    """
    pixels = load_image(image)
    original = pixels.shape[:2]
    size = _round_down(original, factor)
    if min(size) < factor:
        raise ImageError(f"The image is {original[0]}x{original[1]} pixels; this model needs "
                         f"at least {factor}x{factor}. Fix: pass a larger image.")
    if size != original:
        pixels = np.asarray(Image.fromarray(pixels).resize((size[1], size[0]),
                                                           Image.Resampling.LANCZOS))
    out = pixels.astype("float32") / 255.0 * 2.0 - 1.0
    return (out, original) if return_original_size else out


def prepare_mask(mask: Any, image_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A binary float32 mask `(size)`: 1 where the image is repainted.

    Args:
        mask: a path or PIL image (converted to grayscale), or a 2-D /
            `(H, W, 1)` array: bool, uint8 (0-255) or float in [0, 1].
        image_size: the image's `(height, width)` before rounding; the mask
            must have it.
        size: the rounded size the image was resized to; the mask follows it
            (Lanczos), then is binarized at 0.5.

    Raises:
        InputError: the mask is not the image's size, not a 2-D image, or holds
            values outside [0, 1].
    """
    if isinstance(mask, Image.Image):
        gray = mask.convert("L")
    elif isinstance(mask, np.ndarray):
        array = mask[..., 0] if mask.ndim == 3 and mask.shape[2] == 1 else mask
        if array.ndim != 2:
            raise InputError(f"The mask has shape {mask.shape}; expected (height, width) or "
                             "(height, width, 1). Fix: pass one channel, e.g. mask[..., 0].")
        if array.dtype == bool:
            array = array.astype("uint8") * 255
        elif array.dtype.kind == "f":
            if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
                raise InputError("A float mask must hold finite values in [0, 1]. Fix: "
                                 "scale it, and replace NaN (np.nan_to_num).")
            array = np.round(array * 255.0).astype("uint8")
        elif array.dtype != np.uint8:
            raise InputError(f"The mask has dtype {array.dtype}; expected bool, uint8 or "
                             "float. Fix: e.g. (mask > 0).astype(np.uint8) * 255.")
        gray = Image.fromarray(array, mode="L")
    else:
        gray = Image.fromarray(load_image(mask)).convert("L")
    if (gray.height, gray.width) != tuple(image_size):
        raise InputError(f"The mask is {gray.height}x{gray.width} pixels but the image is "
                         f"{image_size[0]}x{image_size[1]}. Fix: pass a mask of the image's "
                         "size (white where the image should be repainted).")
    if (gray.height, gray.width) != tuple(size):
        gray = gray.resize((size[1], size[0]), Image.Resampling.LANCZOS)
    values = np.asarray(gray, "float32") / 255.0
    return (values >= 0.5).astype("float32")
