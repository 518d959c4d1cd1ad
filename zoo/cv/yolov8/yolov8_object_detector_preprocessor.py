"""Images and box annotations -> YOLOv8 inputs and padded training targets.

Inference letterboxes with `YOLOV8ImageConverter`. Training
(`training=True`) also augments as ultralytics' `RandomPerspective` (its
`scale` zoom about the image centre) and `RandomFlip` (horizontal) do, and
drops the boxes that the zoom pushes (mostly) out of view, with ultralytics'
`box_candidates` rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from zoo.core.preprocessor import Preprocessor
from zoo.cv.yolov8.yolov8_image_converter import (
    UINT8_TO_UNIT,
    YOLOV8ImageConverter,
    image_list,
    letterbox_meta,
    paste_resized,
)
from zoo.utils.images import load_image

#: a box survives augmentation when wider and taller than this many input pixels ...
MIN_BOX_SIZE = 2.0
#: ... keeps more than this fraction of its (zoomed) area inside the canvas ...
MIN_AREA_FRACTION = 0.1
#: ... and is less elongated than this (ultralytics' `box_candidates` thresholds)
MAX_ASPECT_RATIO = 100.0

_FORMAT = ("{'boxes': (n, 4) array of x1, y1, x2, y2 in the original image's pixels, "
           "'classes': (n,) ints}")


def _check_annotation(annotation: Any, index: int, size: tuple[int, int]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Validate one image's annotation; boxes clipped to the image, classes int64."""
    if not isinstance(annotation, Mapping) or not {"boxes", "classes"} <= set(annotation):
        got = (f"a dict with keys {sorted(annotation)}" if isinstance(annotation, Mapping)
               else f"a {type(annotation).__name__}")
        raise ValueError(f"Annotation {index} must be a dict {_FORMAT}, got {got}. Fix: pass "
                         "one such dict per image (empty arrays for an image with no objects).")
    where = f"Annotation {index}"
    try:
        boxes = np.asarray(annotation["boxes"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'boxes' must be an (n, 4) array of numbers, got "
                         f"{str(annotation['boxes'])[:80]}. Fix: one row of x1, y1, x2, y2 "
                         "per object, e.g. [[10, 20, 110, 220]].") from None
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}: 'boxes' must have shape (n, 4), got {boxes.shape}. Fix: "
                         "one row of x1, y1, x2, y2 per object, e.g. [[10, 20, 110, 220]].")
    classes = np.asarray(annotation["classes"])
    if classes.size == 0:
        classes = classes.reshape(0).astype(np.int64)
    if classes.shape != (boxes.shape[0],):
        raise ValueError(f"{where}: 'classes' must have shape ({boxes.shape[0]},), one per box, "
                         f"got {classes.shape}.")
    if classes.dtype == np.bool_ or not (
            np.issubdtype(classes.dtype, np.integer) or (
                np.issubdtype(classes.dtype, np.floating) and np.all(np.mod(classes, 1) == 0))):
        raise ValueError(f"{where}: 'classes' must be whole numbers (class indices), got "
                         f"{classes.dtype} values {classes[:5].tolist()}. Fix: map class "
                         "names to indices 0, 1, ... first.")
    classes = classes.astype(np.int64)
    if (classes < 0).any():
        raise ValueError(f"{where}: class indices must be >= 0, got {int(classes.min())}. "
                         "Fix: leave unlabelled objects out instead of marking them -1.")
    if not np.isfinite(boxes).all():
        raise ValueError(f"{where}: 'boxes' holds NaN or infinite values.")
    bad = np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    if bad.size:
        raise ValueError(
            f"{where}: box {bad[0]} {boxes[bad[0]].tolist()} has x2 <= x1 or y2 <= y1. Fix: "
            "boxes are corners (x1, y1, x2, y2); convert (x, y, width, height) boxes with "
            "np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1).")
    h, w = size
    if boxes.shape[0] and max(h, w) > 2 and boxes.max() <= 1.0:
        raise ValueError(f"{where}: every coordinate is <= 1, so the boxes look normalised, "
                         f"but they must be in pixels of the {w}x{h} image. Fix: multiply "
                         "them by (width, height, width, height).")
    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    clipped[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    outside = np.flatnonzero((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    if outside.size:
        raise ValueError(f"{where}: box {outside[0]} {boxes[outside[0]].tolist()} lies outside "
                         f"the {w}x{h} (width x height) image. Fix: boxes are in the original "
                         "image's pixels (after EXIF orientation); drop boxes outside it.")
    return clipped, classes


def box_candidates(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Which augmented boxes to keep (ultralytics' `box_candidates` rule).

    Args:
        before: `(n, 4)` xyxy boxes transformed but not clipped.
        after: the same boxes clipped to the canvas.

    Returns:
        bool `(n,)`: wider and taller than `MIN_BOX_SIZE` px, more than
        `MIN_AREA_FRACTION` of the area left, aspect ratio under
        `MAX_ASPECT_RATIO`.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    eps = 1e-16
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return ((w2 > MIN_BOX_SIZE) & (h2 > MIN_BOX_SIZE)
            & (w2 * h2 / (w1 * h1 + eps) > MIN_AREA_FRACTION) & (aspect < MAX_ASPECT_RATIO))


@keras.saving.register_keras_serializable(package="zoo")
class YOLOV8ObjectDetectorPreprocessor(Preprocessor):
    """Turns images (and box annotations) into `YOLOV8Detector` inputs and targets.

    The dataset format: `x` is a list of images (paths, PIL images or numpy
    arrays of any sizes; see `zoo.utils.images.load_image`); `y` is a list
    with one dict per image, `{"boxes": (n, 4), "classes": (n,)}`: boxes as
    corners `x1, y1, x2, y2` in the original image's pixels (x to the right,
    y down, origin at the top-left corner of the top-left pixel, after EXIF
    orientation), classes as ints `>= 0`. An image without objects has
    `np.zeros((0, 4))` boxes and `np.zeros((0,), int)` classes. Boxes reaching
    outside the image are clipped to it; a box wholly outside is an error, and
    so are boxes whose coordinates all lie in [0, 1] (normalised, not pixels).

    Called with `y`, it returns `(images, {"boxes": (b, max_boxes, 4)
    float32 xyxy in input pixels, "classes": (b, max_boxes) int32})`, padded
    with zero boxes and class -1. An image with more than `max_boxes` boxes
    (after augmentation) keeps its first `max_boxes`, with a warning.

    `training=True` (what `fit` uses) augments each image independently:
    a random zoom about the canvas centre by a factor drawn uniformly from
    `[1 - scale_range, 1 + scale_range]` (the letterboxed image is resized
    once, straight from the original, then cropped or padded back into the
    canvas), then a horizontal flip with `flip_probability`. Boxes follow,
    are clipped to the canvas, and are dropped when the zoom leaves them 2
    px wide or tall or less, or with 10% or less of their area, or with an
    aspect ratio of 100 or more (ultralytics' `box_candidates`). Training
    always uses the full `image_size` canvas (`auto` is for inference only).

    Args:
        image_converter: the `YOLOV8ImageConverter` (or its config); default
            640x640.
        max_boxes: boxes per image in the padded targets.
        flip_probability: chance of a horizontal flip in training
            (ultralytics' `fliplr`, 0.5).
        scale_range: zoom range `s` in training: factor uniform in
            `[1 - s, 1 + s]` (ultralytics' `scale`, 0.5); 0 turns zoom off.
        seed: seeds the augmentation, which is then the same for the same
            sequence of calls. `None` takes a seed from numpy's global random
            state when the preprocessor is built (so
            `keras.utils.set_random_seed` makes it reproducible too).

    Example:

    >>> import numpy as np
    >>> pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(320), max_boxes=4)
    >>> images = [np.zeros((480, 640, 3), np.uint8), np.zeros((100, 50), np.uint8)]
    >>> annotations = [
    ...     {"boxes": np.array([[100., 120., 300., 360.]]), "classes": np.array([2])},
    ...     {"boxes": np.zeros((0, 4)), "classes": np.zeros((0,), int)},
    ... ]
    >>> x, y = pre(images, annotations)
    >>> x.shape, y["boxes"].shape, y["classes"].tolist()
    ((2, 320, 320, 3), (2, 4, 4), [[2, -1, -1, -1], [-1, -1, -1, -1]])
    >>> y["boxes"][0, 0].tolist()  # ratio 0.5, 40 px padding on top
    [50.0, 100.0, 150.0, 220.0]
    >>> x_aug, y_aug = pre(images, annotations, training=True)  # zoomed and flipped
    >>> pre(images).shape  # without annotations: the images only
    (2, 320, 320, 3)
    """

    def __init__(self, image_converter: YOLOV8ImageConverter | dict | None = None,
                 max_boxes: int = 100, flip_probability: float = 0.5,
                 scale_range: float = 0.5, seed: int | None = None) -> None:
        super().__init__(tokenizer=None)
        if isinstance(image_converter, dict):
            image_converter = YOLOV8ImageConverter.from_config(image_converter)
        self.image_converter = image_converter or YOLOV8ImageConverter()
        if isinstance(max_boxes, bool) or not isinstance(max_boxes, (int, np.integer)) or (
                max_boxes < 1):
            raise ValueError(f"max_boxes must be a positive int, got {max_boxes!r}. "
                             "Fix: e.g. max_boxes=100.")
        self.max_boxes = int(max_boxes)
        if not 0.0 <= float(flip_probability) <= 1.0:
            raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability!r}.")
        self.flip_probability = float(flip_probability)
        if not 0.0 <= float(scale_range) < 1.0:
            raise ValueError(f"scale_range must be in [0, 1) (zoom factors 1 - s to 1 + s), "
                             f"got {scale_range!r}. Fix: e.g. scale_range=0.5.")
        self.scale_range = float(scale_range)
        self.seed = None if seed is None else int(seed)
        start = self.seed if self.seed is not None else int(np.random.randint(2**31 - 1))
        self._rng = np.random.default_rng(start)

    def __call__(self, x: Any, y: Any = None, sample_weight: Any = None,
                 training: bool = False) -> Any:
        """Preprocess a batch; see the class docstring for the formats.

        Args:
            x: images: one, a list, a 4-D array of same-size images, or a
                1-D array of paths.
            y: `None`, or one annotation dict per image.
            sample_weight: optional per-image weights, returned as float32.
            training: augment (random zoom and flip).

        Returns:
            the float32 `(b, height, width, 3)` images when `y` is None, else
            `(images, targets)`, or `(images, targets, sample_weight)`.
        """
        images = image_list(x)
        if y is not None:
            annotations = [y] if isinstance(y, Mapping) else list(y)
            if len(annotations) != len(images):
                raise ValueError(f"Got {len(images)} images but {len(annotations)} annotations. "
                                 f"Fix: pass one dict {_FORMAT} per image.")
        elif sample_weight is not None:
            raise ValueError("sample_weight was given without annotations y. Fix: pass y too.")
        if training:
            batch, targets = self._augment(images, None if y is None else annotations)
        else:
            batch, metas = self.image_converter(images)
            targets = None
            if y is not None:
                targets = []
                for index, (meta, annotation) in enumerate(zip(metas, annotations)):
                    boxes, classes = _check_annotation(annotation, index, meta.original_size)
                    targets.append((self.image_converter.boxes_to_input(boxes, meta), classes))
        if y is None:
            return batch
        padded = self._pad(targets)
        if sample_weight is None:
            return batch, padded
        return batch, padded, np.asarray(sample_weight, dtype=np.float32)

    def _augment(self, images: list[Any], annotations: list[Any] | None
                 ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]] | None]:
        """Letterbox, zoom and flip each image (and its boxes) on the full canvas."""
        converter = self.image_converter
        height, width = converter.image_size
        batch = np.empty((len(images), height, width, 3), np.float32)
        targets = None if annotations is None else []
        for index, image in enumerate(images):
            pixels = load_image(image)
            h, w = pixels.shape[:2]
            # Draw both numbers for every image, so the stream does not depend on settings.
            flip = self._rng.random() < self.flip_probability
            zoom = self._rng.uniform(1.0 - self.scale_range, 1.0 + self.scale_range)
            meta = letterbox_meta((h, w), (height, width))
            ratio = meta.ratio * zoom
            new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
            (old_h, old_w), (left, top) = meta.resized_size, meta.pad
            # The letterboxed image's centre moves away from the canvas centre by `zoom`.
            left = round(zoom * (left + old_w / 2 - width / 2) + width / 2 - new_w / 2)
            top = round(zoom * (top + old_h / 2 - height / 2) + height / 2 - new_h / 2)
            canvas = paste_resized(pixels, (new_h, new_w), (top, left), (height, width),
                                   converter.pad_value)
            if flip:
                canvas = canvas[:, ::-1]
            batch[index] = UINT8_TO_UNIT[canvas]
            if annotations is None:
                continue
            boxes, classes = _check_annotation(annotations[index], index, (h, w))
            moved = boxes * ratio + np.array([left, top, left, top], np.float64)
            if flip:
                moved = np.stack([width - moved[:, 2], moved[:, 1],
                                  width - moved[:, 0], moved[:, 3]], axis=1)
            clipped = moved.copy()
            clipped[:, 0::2] = np.clip(moved[:, 0::2], 0, width)
            clipped[:, 1::2] = np.clip(moved[:, 1::2], 0, height)
            keep = box_candidates(moved, clipped)
            targets.append((clipped[keep].astype(np.float32), classes[keep]))
        return batch, targets

    def _pad(self, targets: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        boxes = np.zeros((len(targets), self.max_boxes, 4), np.float32)
        classes = np.full((len(targets), self.max_boxes), -1, np.int32)
        for row, (image_boxes, image_classes) in enumerate(targets):
            if len(image_boxes) > self.max_boxes:
                warnings.warn(
                    f"An image has more than max_boxes={self.max_boxes} boxes; only the first "
                    f"{self.max_boxes} are kept. Fix: build the preprocessor with a larger "
                    "max_boxes.", stacklevel=3)
            n = min(len(image_boxes), self.max_boxes)
            boxes[row, :n] = image_boxes[:n]
            classes[row, :n] = image_classes[:n]
        return {"boxes": boxes, "classes": classes}

    def get_config(self) -> dict:
        return {
            "image_converter": self.image_converter.get_config(),
            "max_boxes": self.max_boxes,
            "flip_probability": self.flip_probability,
            "scale_range": self.scale_range,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict) -> YOLOV8ObjectDetectorPreprocessor:
        config = {k: v for k, v in config.items() if k != "tokenizer"}
        return cls(**config)
