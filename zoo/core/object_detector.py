"""`ObjectDetector`: a task that maps raw images to boxes, classes and scores.

Families implement `detect_batch` (preprocessed batch -> padded detections in
input pixels) and their loss; this base handles raw inputs: images of any
size as numpy arrays, PIL images or file paths, batched through the
preprocessor's image converter, with boxes mapped back to original pixels.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from zoo.core.compiled_loop import keep_state_on_error
from zoo.core.errors import InputError
from zoo.core.task import PreprocessedBatches, Task, check_inputs, positive_int


def is_single_image(x: Any) -> bool:
    """A path, a PIL image or one 2-D / 3-D array (not a list of them)."""
    if isinstance(x, (str, os.PathLike)):
        return True
    if isinstance(x, np.ndarray):
        return x.ndim in (2, 3)
    return type(x).__module__.startswith("PIL.")


def as_image_list(x: Any) -> list[Any]:
    """Raw images as a list: one image, a list/tuple of them, or a 4-D array
    (a stack of same-size images).

    Raises:
        InputError: `x` is no image, or holds none (an empty list or stack).
    """
    if is_single_image(x):
        return [x]
    if isinstance(x, (list, tuple, np.ndarray)) and len(x) == 0:
        raise InputError(f"Got no images (an empty {type(x).__name__}). Fix: pass at least "
                         "one image, e.g. detector.predict(['photo.jpg']).")
    if isinstance(x, np.ndarray) and x.ndim == 4:
        return list(x)
    if isinstance(x, (list, tuple)) and all(is_single_image(i) for i in x):
        return list(x)
    raise InputError(
        f"Expected images: a file path, a PIL image, a (height, width[, channels]) array "
        f"or a list of them, got {type(x).__name__}"
        + (f" of shape {x.shape}" if isinstance(x, np.ndarray) else "")
        + (f" holding a {type(bad).__name__}" if (bad := _first_non_image(x)) is not None
           else "")
        + ". Fix: pass e.g. detector.predict(['photo.jpg']) or a list of numpy images.")


def _chunks(items: Any, size: int) -> Any:
    """Lists of `size` consecutive items (the last one shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _first_non_image(x: Any) -> Any:
    """The first item of a list or tuple that is not an image, or None."""
    if isinstance(x, (list, tuple)):
        return next((i for i in x if not is_single_image(i)), None)
    return None


def _is_raw_images(x: Any) -> bool:
    try:
        as_image_list(x)
        return True
    except InputError:
        return False


class ObjectDetector(Task):
    """Base class for object detectors.

    `predict(images)` returns one dict per image: `boxes` `(n, 4)` float32
    xyxy in the original image's pixels, `classes` `(n,)` int, `class_names`
    (list of str) and `scores` `(n,)`, best first. `fit(images, annotations)`
    trains on raw images with one annotation dict per image,
    `{"boxes": (n, 4) xyxy original pixels, "classes": (n,)}`, augmented by
    the preprocessor (training mode). `evaluate_coco(images, annotations)`
    computes COCO mAP@0.5:0.95 and mAP@0.5.

    Subclasses implement `detect_batch(batch)` returning padded arrays
    `boxes` `(b, d, 4)` (input pixels), `scores`, `classes` `(b, d)` and
    `num_detections` `(b,)`, and set `class_names`.
    """

    class_names: list[str]

    def detect_batch(self, batch: Any, score_threshold: float | None = None,
                     iou_threshold: float | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # -- raw-input training ---------------------------------------------------
    def _wrap(self, x: Any, y: Any, sample_weight: Any, batch_size: int | None,
              shuffle: bool = False, training: bool = False) -> tuple[Any, Any, Any, int | None]:
        check_inputs(x)
        if not self._is_raw_input(x):
            return x, y, sample_weight, batch_size
        images = as_image_list(x)
        if batch_size is not None:
            positive_int(batch_size, "batch_size", 16)
        if y is not None and len(y) != len(images):
            raise InputError(f"Got {len(images)} images but {len(y)} annotations. Fix: pass "
                             "one {'boxes', 'classes'} dict per image (empty arrays for none).")
        call = functools.partial(self.preprocessor, training=training)
        data = PreprocessedBatches(call, images, None if y is None else list(y), sample_weight,
                                   batch_size or 16, shuffle=shuffle)
        return data, None, None, None

    def _is_raw_input(self, x: Any) -> bool:
        return self.preprocessor is not None and _is_raw_images(x)

    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None,
            shuffle: bool = True, sample_weight: Any = None, validation_data: Any = None,
            **kwargs: Any) -> keras.callbacks.History:
        """Train on raw images and annotations (augmented) or preprocessed arrays.

        Args:
            x: images (list of arrays, PIL images or paths).
            y: one dict per image, `{"boxes": (n, 4) xyxy in original pixels,
                "classes": (n,) ints}`.
            batch_size: images per step (16).
            validation_data: `(images, annotations)` like `x` and `y` (preprocessed
                without augmentation), or what `keras.Model.fit` takes.
            **kwargs: the rest of `keras.Model.fit`'s arguments.
        """
        x, y, sample_weight, batch_size = self._wrap(x, y, sample_weight, batch_size,
                                                     shuffle, training=True)
        validation_data = self._wrap_validation(validation_data)
        with keep_state_on_error(self):
            return keras.Model.fit(self, x, y, batch_size=batch_size, shuffle=shuffle,
                                   sample_weight=sample_weight,
                                   validation_data=validation_data, **kwargs)

    # -- inference --------------------------------------------------------------
    def predict(self, x: Any, batch_size: int | None = None,
                score_threshold: float | None = None, iou_threshold: float | None = None,
                **kwargs: Any) -> list[dict[str, Any]]:
        """Detect objects in images of any size.

        Args:
            x: a file path, PIL image or numpy image (grayscale, RGB or RGBA;
                uint8, or float in [0, 1]), or a list of them; or many images
                by one name: a folder (its image files, sorted by name), a
                glob pattern (`"photos/*.jpg"`, `"**"` for subfolders) or a
                video file (every frame, decoded by PyAV). These are read a
                batch at a time, with a progress bar, and each result says
                where it came from: `path`, or `frame` and `time` (seconds).
            batch_size: images per forward pass (8).
            score_threshold: keep boxes scoring above this (default: the
                detector's `score_threshold`).
            iou_threshold: non-max suppression IoU (default: the detector's).

        Returns:
            One dict per image: `boxes` (xyxy, original pixels), `classes`,
            `class_names`, `scores`, best first.
        """
        if kwargs:
            raise InputError(f"predict() got unexpected arguments {sorted(kwargs)}. Fix: pass "
                             "only x, batch_size, score_threshold and iou_threshold.")
        if self.preprocessor is None:
            pre = getattr(self.preprocessor_cls, "__name__", None) or "a preprocessor"
            raise InputError("This detector has no preprocessor, so it cannot read raw "
                             f"images. Fix: pass preprocessor={pre}().")
        from zoo.utils.image_sources import open_source

        batch_size = 8 if batch_size is None else positive_int(batch_size, "batch_size", 8)
        source = open_source(x)  # a folder, glob or video: read a batch at a time
        if source is None:
            images = as_image_list(x)
            batches: Any = ([(None, image) for image in images[start:start + batch_size]]
                            for start in range(0, len(images), batch_size))
        else:
            from zoo.utils.progress import progress

            batches = progress(_chunks(source, batch_size), desc=f"detect {source.kind}",
                               unit="batch", total=None if source.count is None
                               else -(-source.count // batch_size))
        converter = self.preprocessor.image_converter
        results: list[dict[str, Any]] = []
        for chunk in batches:
            batch, metas = converter([image for _, image in chunk])
            out = self.detect_batch(batch, score_threshold, iou_threshold)
            for row, (meta, (where, _)) in enumerate(zip(metas, chunk)):
                n = int(out["num_detections"][row])
                boxes = converter.boxes_to_original(out["boxes"][row, :n], meta)
                classes = out["classes"][row, :n].astype("int64")
                results.append({
                    **(where or {}),
                    "boxes": np.asarray(boxes, "float32"),
                    "classes": classes,
                    "class_names": [self.class_names[c] for c in classes],
                    "scores": np.asarray(out["scores"][row, :n], "float32"),
                })
        return results

    def evaluate_coco(self, x: Sequence[Any], y: Sequence[dict[str, Any]],
                      batch_size: int | None = None, max_detections: int = 100,
                      score_threshold: float = 0.001) -> dict[str, Any]:
        """COCO-style mAP of `predict(x)` against annotations `y` (original pixels).

        Detections are kept down to `score_threshold` (0.001, as ultralytics
        validates), so the precision/recall curve is complete.

        Returns:
            `map` (mAP@0.5:0.95), `map50`, `map75` and per-class AP, as
            pycocotools computes them.
        """
        from zoo.utils.coco_metrics import coco_evaluate

        predictions = self.predict(x, batch_size=batch_size, score_threshold=score_threshold)
        return coco_evaluate(predictions, list(y), max_detections=max_detections)
