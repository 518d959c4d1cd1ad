"""Drawing detections onto images.

Example:

>>> import numpy as np
>>> image = np.zeros((40, 60, 3), "uint8")
>>> detection = {"boxes": np.array([[5.0, 5.0, 30.0, 35.0]]), "scores": np.array([0.9]),
...              "classes": np.array([0]), "class_names": ["person"]}
>>> annotated = draw_detections(image, detection)
>>> annotated.size, annotated.getpixel((5, 20)) != (0, 0, 0)
((60, 40), True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zoo.utils.images import load_image

#: a colour per class id (cycled), chosen to stay readable on photos
PALETTE = ((255, 56, 56), (56, 136, 255), (72, 220, 72), (255, 178, 29), (207, 68, 255),
           (0, 212, 187), (255, 112, 31), (132, 56, 255), (255, 55, 199), (146, 204, 23))


def draw_detections(image: str | os.PathLike | Image.Image | np.ndarray,
                    detection: Mapping[str, Any], line_width: int | None = None) -> Image.Image:
    """Draw boxes and "name score" labels on a copy of `image`.

    Args:
        image: anything `zoo.utils.images.load_image` reads.
        detection: one result of `ObjectDetector.predict`: `boxes` (xyxy in
            the image's pixels), `scores`, `classes` and `class_names`.
        line_width: box outline width in pixels (default: scaled to the image).

    Returns:
        The annotated RGB PIL image.
    """
    pixels = load_image(image)
    canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)
    width = line_width or max(2, round(0.003 * (canvas.width + canvas.height)))
    font = ImageFont.load_default()
    for box, score, cls, name in zip(detection["boxes"], detection["scores"],
                                     detection["classes"], detection["class_names"]):
        colour = PALETTE[int(cls) % len(PALETTE)]
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        label = f"{name} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left + 4, bottom - top + 4
        ty = y0 - th if y0 - th >= 0 else y0
        draw.rectangle((x0, ty, x0 + tw, ty + th), fill=colour)
        draw.text((x0 + 2 - left, ty + 2 - top), label, fill=(255, 255, 255), font=font)
    return canvas
