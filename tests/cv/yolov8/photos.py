"""Real photos for YOLOv8 tests: scikit-image's and matplotlib's bundled samples."""

import os

import matplotlib
import numpy as np
import skimage.data
from PIL import Image


def grace_hopper_path() -> str:
    return os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")


def photos() -> dict[str, np.ndarray]:
    """name -> uint8 RGB photo (different sizes: 512x512, 400x600, 300x451, 600x512)."""
    return {
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "grace_hopper": np.asarray(Image.open(grace_hopper_path()).convert("RGB")),
    }
