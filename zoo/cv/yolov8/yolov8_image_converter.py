"""`YOLOV8ImageConverter`: images of any size to YOLOv8's letterboxed input batch.

The geometry is ultralytics' `LetterBox` (what its predictor runs before the
model): scale by `r = min(H / h, W / w)` (up or down), resize to
`(round(w * r), round(h * r))` with OpenCV's bilinear interpolation, then pad
with grey 114, the padding split with `round(d / 2 - 0.1)` before and
`round(d / 2 + 0.1)` after. Pixels are RGB, divided by 255 in float32,
channels last. Boxes go back with ultralytics' `scale_boxes` + `clip_boxes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from zoo.core.errors import InputError
from zoo.utils.images import ImageError, load_image, resize_bilinear

#: uint8 value -> float32 value / 255 (a lookup table; the float32 division ultralytics does)
UINT8_TO_UNIT = np.arange(256, dtype=np.float32) / np.float32(255.0)


@dataclasses.dataclass(frozen=True)
class LetterboxMeta:
    """Where one image landed inside the model input (all sizes `(height, width)`)."""

    original_size: tuple[int, int]  # the image as loaded (after EXIF orientation)
    input_size: tuple[int, int]  # the letterboxed canvas it was placed in
    resized_size: tuple[int, int]  # the image after resizing, before padding
    ratio: float  # input pixels per original pixel, `r`
    pad: tuple[int, int]  # (left, top) padding in input pixels


def _size_pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0
            for v in value)):
        raise InputError(f"{name} must be a positive int or a (height, width) pair of them, "
                         f"got {value!r}. Fix: e.g. {name}=640 or {name}=(384, 640).")
    return int(value[0]), int(value[1])


def letterbox_meta(original_size: tuple[int, int], input_size: tuple[int, int],
                   stride: int | None = None) -> LetterboxMeta:
    """ultralytics' `LetterBox` geometry for one image.

    Args:
        original_size: the image's `(height, width)`.
        input_size: the target canvas `(height, width)`.
        stride: when given, the canvas shrinks to the smallest one that holds
            the resized image and whose sides are `input_size` minus a
            multiple of `stride` (ultralytics' `auto=True` "minimum rectangle").

    Returns:
        the `LetterboxMeta`. A side that would round to 0 pixels (an image
        more than 1280 times wider than tall at 640) is kept at 1 pixel.

    Example:

    >>> meta = letterbox_meta((720, 1280), (640, 640))
    >>> meta.ratio, meta.resized_size, meta.pad
    (0.5, (360, 640), (0, 140))
    >>> letterbox_meta((720, 1280), (640, 640), stride=32).input_size
    (384, 640)
    """
    h, w = original_size
    height, width = input_size
    ratio = min(height / h, width / w)
    new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
    pad_w, pad_h = width - new_w, height - new_h
    if stride is not None:
        pad_w, pad_h = pad_w % stride, pad_h % stride
    left, top = round(pad_w / 2 - 0.1), round(pad_h / 2 - 0.1)
    return LetterboxMeta(original_size=(int(h), int(w)),
                         input_size=(new_h + pad_h, new_w + pad_w),
                         resized_size=(new_h, new_w), ratio=ratio, pad=(left, top))


def paste_resized(image: np.ndarray, resized_size: tuple[int, int], offset: tuple[int, int],
                  canvas_size: tuple[int, int], pad_value: int = 114) -> np.ndarray:
    """Resize `image` to `resized_size` and paste it into a grey canvas at `offset`.

    The part falling outside the canvas is cut off (only the visible part is
    resized). This is the letterbox (`offset` = `(top, left)` padding) and
    also the random zoom of training augmentation (negative offsets).

    Args:
        image: uint8 (height, width, 3).
        resized_size: `(height, width)` the whole image is resized to.
        offset: `(top, left)` of the resized image in the canvas; may be
            negative or push it partly outside.
        canvas_size: `(height, width)` of the result.
        pad_value: grey level of the canvas where no image lands.

    Returns:
        uint8 canvas (canvas height, canvas width, 3).
    """
    canvas = np.full((*canvas_size, image.shape[2]), pad_value, np.uint8)
    (new_h, new_w), (top, left) = resized_size, offset
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + new_h, canvas_size[0]), min(left + new_w, canvas_size[1])
    if y1 <= y0 or x1 <= x0:
        return canvas  # the image lies wholly outside the canvas
    if (new_h, new_w) == image.shape[:2]:
        visible = image[y0 - top:y1 - top, x0 - left:x1 - left]
    else:
        visible = resize_bilinear(image, (new_h, new_w),
                                  window=(y0 - top, x0 - left, y1 - y0, x1 - x0))
    canvas[y0:y1, x0:x1] = visible
    return canvas


def as_boxes(boxes: Any) -> np.ndarray:
    """Boxes as a float64 array of shape (..., 4), or a clear error."""
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"Boxes must be numbers, an array of shape (..., 4), got "
                         f"{str(boxes)[:80]}. Fix: e.g. np.array([[10, 20, 110, 220]]).") from None
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim < 1 or array.shape[-1] != 4:
        raise InputError(f"Boxes must have shape (..., 4) (x1, y1, x2, y2 per box), got "
                         f"shape {array.shape}. Fix: e.g. np.array([[10, 20, 110, 220]]).")
    return array


def image_list(images: Any) -> list[Any]:
    """A batch of raw images as a list: a list or tuple of images, a 4-D array
    (a stack of same-size images), a 1-D array of paths or PIL images (what
    `np.asarray` makes of a list of them), or else one image."""
    if isinstance(images, (list, tuple)):
        items = list(images)
    elif isinstance(images, np.ndarray) and (
            images.ndim == 4 or (images.ndim == 1 and images.dtype.kind in "USO")):
        items = list(images)
    else:
        items = [images]
    if not items:
        raise ImageError("Got an empty list of images. Fix: pass at least one image.")
    return items


@keras.saving.register_keras_serializable(package="zoo")
class YOLOV8ImageConverter:
    """Letterboxes images of any size into a YOLOv8 input batch (numpy, any backend).

    Each image is read with `zoo.utils.images.load_image` (a path, a PIL
    image, or a gray / RGB / RGBA array, uint8 or float in [0, 1]), scaled
    by `r = min(H / h, W / w)` (up or down) with OpenCV-exact bilinear
    resizing, centred, and padded with `pad_value` (ultralytics' `LetterBox`).

    Args:
        image_size: the input `(height, width)`, or one int for a square;
            multiples of `stride`.
        stride: the model's largest stride (32 for YOLOv8).
        pad_value: grey level of the padding (ultralytics: 114).
        auto: pad only up to a multiple of `stride` (ultralytics' "minimum
            rectangle", what its predictor does for a batch of same-size
            images): 1280x720 photos become 384x640 inputs, not 640x640.
            It applies only when every image of a call has the same size (so
            the batch shares one shape); a call with mixed sizes falls back
            to the full `image_size`.

    Example:

    >>> import numpy as np
    >>> converter = YOLOV8ImageConverter(640)
    >>> photos = [np.zeros((720, 1280, 3), np.uint8), np.zeros((50, 2000), np.uint8)]
    >>> batch, metas = converter(photos)
    >>> batch.shape, batch.dtype
    ((2, 640, 640, 3), dtype('float32'))
    >>> metas[0].ratio, metas[0].pad, metas[1].resized_size
    (0.5, (0, 140), (16, 640))
    >>> converter.boxes_to_original(np.array([[0., 140., 640., 500.]]), metas[0])
    array([[   0.,    0., 1280.,  720.]], dtype=float32)
    """

    def __init__(self, image_size: int | Sequence[int] = 640, stride: int = 32,
                 pad_value: int = 114, auto: bool = False) -> None:
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride <= 0:
            raise InputError(f"stride must be a positive int, got {stride!r}. Fix: stride=32.")
        self.stride = int(stride)
        self.image_size = _size_pair(image_size, "image_size")
        for side in self.image_size:
            if side % self.stride:
                nearest = -(-side // self.stride) * self.stride
                raise InputError(
                    f"image_size {self.image_size} must be multiples of stride {self.stride}, "
                    f"so the feature maps tile the input. Fix: e.g. image_size={nearest}.")
        if isinstance(pad_value, bool) or not isinstance(pad_value, (int, np.integer)) or not (
                0 <= pad_value <= 255):
            raise InputError(f"pad_value must be an int grey level in [0, 255], got "
                             f"{pad_value!r}. Fix: pad_value=114 (ultralytics' grey).")
        self.pad_value = int(pad_value)
        self.auto = bool(auto)

    # -- images --------------------------------------------------------------------
    def letterbox(self, image: Any, auto: bool | None = None) -> tuple[np.ndarray, LetterboxMeta]:
        """Letterbox one image: the uint8 canvas (not divided by 255) and its meta.

        Args:
            image: anything `load_image` takes.
            auto: override the converter's `auto` for this image.
        """
        pixels = load_image(image)
        use_auto = self.auto if auto is None else auto
        meta = letterbox_meta(pixels.shape[:2], self.image_size,
                              self.stride if use_auto else None)
        canvas = paste_resized(pixels, meta.resized_size, meta.pad[::-1], meta.input_size,
                               self.pad_value)
        return canvas, meta

    def __call__(self, images: Any) -> tuple[np.ndarray, list[LetterboxMeta]]:
        """Letterbox a batch of images of any sizes.

        Args:
            images: one image or a list of them (paths, PIL images, arrays),
                a 4-D array (a stack of same-size images), or a 1-D array
                of paths.

        Returns:
            `(batch, metas)`: float32 `(batch, height, width, 3)` RGB in [0, 1],
            and one `LetterboxMeta` per image (for `boxes_to_original`).
        """
        loaded = [load_image(item) for item in image_list(images)]
        same = all(pixels.shape == loaded[0].shape for pixels in loaded)
        stride = self.stride if (self.auto and same) else None
        metas = [letterbox_meta(pixels.shape[:2], self.image_size, stride) for pixels in loaded]
        batch = np.empty((len(loaded), *metas[0].input_size, 3), np.float32)
        for row, (pixels, meta) in enumerate(zip(loaded, metas)):
            canvas = paste_resized(pixels, meta.resized_size, meta.pad[::-1], meta.input_size,
                                   self.pad_value)
            batch[row] = UINT8_TO_UNIT[canvas]
        return batch, metas

    # -- boxes ---------------------------------------------------------------------
    @staticmethod
    def boxes_to_original(boxes: Any, meta: LetterboxMeta) -> np.ndarray:
        """Boxes in letterboxed input pixels to the original image's pixels.

        ultralytics' `scale_boxes` then `clip_boxes`: remove the padding,
        divide by the ratio, clip to the image. The padding removed is the
        one the letterbox applied, as ultralytics' validator does (its
        predictor recomputes it from the shapes with the unrounded resized
        size, which for about one image size in ten is 1 input pixel more).

        Args:
            boxes: `(..., 4)` xyxy in input pixels.
            meta: the image's `LetterboxMeta` from `__call__`.

        Returns:
            float32 `(..., 4)` xyxy in original pixels, inside the image.
        """
        array = as_boxes(boxes)
        left, top = meta.pad
        h, w = meta.original_size
        out = (array - np.array([left, top, left, top], np.float64)) / meta.ratio
        out[..., 0::2] = np.clip(out[..., 0::2], 0, w)
        out[..., 1::2] = np.clip(out[..., 1::2], 0, h)
        return out.astype(np.float32)

    @staticmethod
    def boxes_to_input(boxes: Any, meta: LetterboxMeta) -> np.ndarray:
        """Boxes in original pixels to letterboxed input pixels (for training targets).

        The inverse of `boxes_to_original` for boxes inside the image:
        multiply by the ratio, add the padding (ultralytics' `LetterBox`
        label update). Nothing is clipped.

        Args:
            boxes: `(..., 4)` xyxy in original pixels.
            meta: the image's `LetterboxMeta`.

        Returns:
            float32 `(..., 4)` xyxy in input pixels.
        """
        array = as_boxes(boxes)
        left, top = meta.pad
        out = array * meta.ratio + np.array([left, top, left, top], np.float64)
        return out.astype(np.float32)

    # -- config ----------------------------------------------------------------------
    def get_config(self) -> dict:
        """The constructor arguments, JSON-serialisable."""
        return {"image_size": list(self.image_size), "stride": self.stride,
                "pad_value": self.pad_value, "auto": self.auto}

    @classmethod
    def from_config(cls, config: dict) -> YOLOV8ImageConverter:
        """Build a converter from `get_config()`'s output."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
