"""YOLOv8 head geometry: anchor points per feature-map cell and DFL box decoding.

The detector's raw outputs are, per anchor (feature-map cell of the P3, P4
and P5 maps, stride 8, 16, 32, each map row-major):

- `"boxes"`: `(batch, anchors, 4 * reg_max)` logits of four distributions
  over `0 .. reg_max - 1` (left, top, right, bottom distances from the anchor
  point, in units of the level's stride), side-major as ultralytics lays
  them out;
- `"classes"`: `(batch, anchors, num_classes)` logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops

#: YOLOv8's three output levels (P3, P4, P5)
STRIDES: tuple[int, ...] = (8, 16, 32)


def feature_sizes(height: int, width: int, strides: Sequence[int] = STRIDES
                  ) -> list[tuple[int, int]]:
    """(rows, columns) of each level's map for an input of `height` x `width`
    (stride-2 convolutions with padding 1 round up)."""
    sizes = []
    for stride in strides:
        h, w = height, width
        for _ in range(int(np.log2(stride))):
            h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def make_anchors(height: int, width: int, strides: Sequence[int] = STRIDES,
                 offset: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Anchor points and their strides for an input of `height` x `width`.

    Returns:
        `points` `(anchors, 2)`: (x, y) cell centres in units of each level's
        stride (column + 0.5, row + 0.5), and `strides` `(anchors, 1)`;
        multiply the two for input pixels.

    Example:

    >>> points, strides = make_anchors(64, 64)
    >>> points.shape, strides[:, 0].tolist()[-4:]
    ((84, 2), [32.0, 32.0, 32.0, 32.0])
    """
    points, out_strides = [], []
    for (rows, cols), stride in zip(feature_sizes(height, width, strides), strides):
        ys, xs = np.meshgrid(np.arange(rows, dtype="float32") + offset,
                             np.arange(cols, dtype="float32") + offset, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()], axis=-1))
        out_strides.append(np.full((rows * cols, 1), stride, "float32"))
    return np.concatenate(points), np.concatenate(out_strides)


def dfl_distances(box_logits: Any, reg_max: int = 16) -> Any:
    """Expected distances (..., 4) from DFL logits (..., 4 * reg_max): the
    softmax over each side's bins, weighted by the bin index. With
    `reg_max=1` there is no distribution: the head predicts the four
    distances directly (ultralytics' `DFL` is then an identity)."""
    if reg_max == 1:
        return box_logits
    shape = ops.shape(box_logits)
    logits = ops.reshape(box_logits, (*shape[:-1], 4, reg_max))
    bins = ops.arange(reg_max, dtype=logits.dtype)
    return ops.sum(ops.softmax(logits, axis=-1) * bins, axis=-1)


def distances_to_boxes(distances: Any, points: Any) -> Any:
    """(left, top, right, bottom) distances from `points` -> `xyxy` boxes."""
    return ops.concatenate([points - distances[..., :2], points + distances[..., 2:]], axis=-1)


def decode_boxes(box_logits: Any, points: Any, strides: Any, reg_max: int = 16) -> Any:
    """DFL logits -> `xyxy` boxes in input pixels, `(batch, anchors, 4)`."""
    distances = dfl_distances(box_logits, reg_max)
    points = ops.convert_to_tensor(points, distances.dtype)
    strides = ops.convert_to_tensor(strides, distances.dtype)
    return distances_to_boxes(distances, points) * strides
