"""Box utilities in `keras.ops` (any backend): format conversion, IoU, CIoU.

Boxes are `(..., 4)` tensors, `xyxy` = (x1, y1, x2, y2) corners or
`xywh` = (center x, center y, width, height), in any consistent unit.
"""

from __future__ import annotations

import math
from typing import Any

from keras import ops

#: added to denominators so empty boxes give IoU 0, not NaN (ultralytics' value)
EPS = 1e-7


def xywh_to_xyxy(boxes: Any) -> Any:
    """Center/size boxes to corner boxes.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> ops.convert_to_numpy(xywh_to_xyxy(np.array([[5., 5., 4., 2.]]))).tolist()
    [[3.0, 4.0, 7.0, 6.0]]
    """
    center, size = boxes[..., :2], boxes[..., 2:]
    return ops.concatenate([center - size / 2, center + size / 2], axis=-1)


def xyxy_to_xywh(boxes: Any) -> Any:
    """Corner boxes to center/size boxes (the inverse of `xywh_to_xyxy`)."""
    low, high = boxes[..., :2], boxes[..., 2:]
    return ops.concatenate([(low + high) / 2, high - low], axis=-1)


def box_area(boxes: Any) -> Any:
    """Areas of `xyxy` boxes, `(...)`; inverted boxes count as 0."""
    size = ops.maximum(boxes[..., 2:] - boxes[..., :2], 0.0)
    return size[..., 0] * size[..., 1]


def box_iou(boxes1: Any, boxes2: Any) -> Any:
    """Pairwise IoU of `xyxy` boxes: `(..., N, 4)` x `(..., M, 4)` -> `(..., N, M)`.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> a = np.array([[0., 0., 2., 2.]]); b = np.array([[1., 0., 3., 2.], [5., 5., 6., 6.]])
    >>> [[round(float(v), 4) for v in row] for row in ops.convert_to_numpy(box_iou(a, b))]
    [[0.3333, 0.0]]
    """
    b1, b2 = boxes1[..., :, None, :], boxes2[..., None, :, :]
    low = ops.maximum(b1[..., :2], b2[..., :2])
    high = ops.minimum(b1[..., 2:], b2[..., 2:])
    size = ops.maximum(high - low, 0.0)
    inter = size[..., 0] * size[..., 1]
    union = box_area(boxes1)[..., :, None] + box_area(boxes2)[..., None, :] - inter
    return inter / (union + EPS)


def complete_iou(boxes1: Any, boxes2: Any) -> Any:
    """Elementwise CIoU of `xyxy` boxes `(..., 4)` and `(..., 4)` -> `(...)`.

    CIoU (Zheng et al., 2020) = IoU - center distance^2 / enclosing diagonal^2
    - alpha * v, with v the aspect-ratio term 4/pi^2 (atan(w2/h2) -
    atan(w1/h1))^2 and alpha = v / (v - IoU + 1): the box regression target
    of YOLOv8, written as ultralytics writes it (EPS added to heights and
    denominators).
    """
    x1, y1, x2, y2 = (boxes1[..., i] for i in range(4))
    u1, v1, u2, v2 = (boxes2[..., i] for i in range(4))
    w1, h1 = x2 - x1, y2 - y1 + EPS
    w2, h2 = u2 - u1, v2 - v1 + EPS
    inter = (ops.maximum(ops.minimum(x2, u2) - ops.maximum(x1, u1), 0.0)
             * ops.maximum(ops.minimum(y2, v2) - ops.maximum(y1, v1), 0.0))
    union = w1 * h1 + w2 * h2 - inter + EPS
    iou = inter / union
    cw = ops.maximum(x2, u2) - ops.minimum(x1, u1)  # enclosing box
    ch = ops.maximum(y2, v2) - ops.minimum(y1, v1)
    diagonal = cw**2 + ch**2 + EPS
    distance = ((u1 + u2 - x1 - x2) ** 2 + (v1 + v2 - y1 - y2) ** 2) / 4
    v = (4 / math.pi**2) * (ops.arctan(w2 / h2) - ops.arctan(w1 / h1)) ** 2
    alpha = ops.stop_gradient(v / (v - iou + (1 + EPS)))
    return iou - (distance / diagonal + v * alpha)
