"""Real photos for YOLOv8 tests: scikit-image's samples and the photo zoo ships
(zoo/data/grace_hopper.jpg, the same file as matplotlib's sample)."""

import numpy as np
import skimage.data
from PIL import Image

from zoo.data import demo_media


def grace_hopper_path() -> str:
    return str(demo_media("grace_hopper.jpg"))


def photos() -> dict[str, np.ndarray]:
    """name -> uint8 RGB photo (different sizes: 512x512, 400x600, 300x451, 600x512)."""
    return {
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "grace_hopper": np.asarray(Image.open(grace_hopper_path()).convert("RGB")),
    }
