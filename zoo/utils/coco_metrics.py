"""COCO-style detection metrics (box mAP) in numpy, following pycocotools' `COCOeval`.

`coco_evaluate` reproduces the numbers `COCOeval(iouType="bbox")` reports for
the area range "all" (its `stats[0]`, `stats[1]`, `stats[2]` and `stats[8]`),
without building COCO json files. The rules, as pycocotools applies them:

- images and classes are evaluated independently; per image and class the
  detections are ranked by score (stable for ties) and only the best
  `max_detections` count;
- at each IoU threshold `t`, detections are matched greedily in score order,
  each to the still unmatched ground-truth box of highest IoU among those with
  IoU >= `t` (the last such box on ties); unmatched detections are false
  positives;
- per class, all images' detections are ranked together, precision is made
  monotone (each value raised to the best precision at higher recall) and
  read at the 101 recall points 0, 0.01, ..., 1 (0 beyond the reached recall);
  AP is their mean; classes without ground truth are left out of every mean;
- box IoU is intersection / union of the plain areas (no +1 pixel).

Crowd annotations and the small/medium/large area ranges are not modelled.
ultralytics' own validator computes mAP differently (no per-image cap, other
interpolation), so its numbers differ slightly from these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: pycocotools' default IoU thresholds: 0.50, 0.55, ..., 0.95 (built as it builds them)
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
#: the 101 recall points at which precision is read
RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1)


def _array(entry: Mapping[str, Any], key: str, where: str, dtype: str) -> np.ndarray:
    if not isinstance(entry, Mapping) or key not in entry:
        found = f"keys {sorted(entry)}" if isinstance(entry, Mapping) else type(entry).__name__
        raise ValueError(f"{where} must be a dict with a {key!r} entry; got {found}.")
    try:
        value = np.asarray(entry[key], dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}[{key!r}] is not numeric: {error}") from None
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{where}[{key!r}] holds NaN or infinite values.")
    return value


def _parse(entry: Mapping[str, Any], where: str, with_scores: bool) -> tuple[np.ndarray, ...]:
    """(boxes (N, 4) float64, classes (N,) int64[, scores (N,) float64]) of one image."""
    boxes = _array(entry, "boxes", where, "float64")
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}['boxes'] must have shape (N, 4) (x1, y1, x2, y2), got "
                         f"{boxes.shape}.")
    if np.any(boxes[:, 2:] < boxes[:, :2]):
        raise ValueError(f"{where}['boxes'] has boxes with x2 < x1 or y2 < y1; boxes must be "
                         "xyxy corners (convert xywh boxes first).")
    classes = _array(entry, "classes", where, "float64").reshape(-1)
    if classes.shape[0] != boxes.shape[0] or np.any(classes != np.round(classes)):
        raise ValueError(f"{where}['classes'] must hold one integer class id per box: "
                         f"{boxes.shape[0]} boxes, classes {np.asarray(entry['classes'])!r}.")
    parsed = (boxes, classes.astype("int64"))
    if with_scores:
        scores = _array(entry, "scores", where, "float64").reshape(-1)
        if scores.shape[0] != boxes.shape[0]:
            raise ValueError(f"{where}['scores'] must hold one score per box: "
                             f"{boxes.shape[0]} boxes, {scores.shape[0]} scores.")
        parsed += (scores,)
    return parsed


def _box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes; disjoint or touching boxes give 0."""
    low = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    high = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    size = high - low
    overlap = np.all(size > 0, axis=-1)
    inter = np.where(overlap, size[..., 0] * size[..., 1], 0.0)
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    union = area1[:, None] + area2[None, :] - inter
    return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def _match(ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(T, D) bool: detection d (rows of `ious`, best first) is a true positive at threshold t."""
    num_dt, num_gt = ious.shape
    limits = np.minimum(thresholds, 1 - 1e-10)[:, None]  # (T, 1)
    gt_taken = np.zeros((len(thresholds), num_gt), bool)
    dt_matched = np.zeros((len(thresholds), num_dt), bool)
    if num_gt == 0:
        return dt_matched
    rows = np.arange(len(thresholds))
    for d in range(num_dt):
        eligible = ~gt_taken & (ious[d] >= limits)  # (T, G)
        hit = eligible.any(axis=1)
        if not hit.any():
            continue
        # the eligible box of highest IoU, the last one on ties
        best = num_gt - 1 - np.argmax(np.where(eligible, ious[d], -1.0)[:, ::-1], axis=1)
        dt_matched[hit, d] = True
        gt_taken[rows[hit], best[hit]] = True
    return dt_matched


def _precision_recall(scores: np.ndarray, matched: np.ndarray, num_gt: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One class over all images: precision (T, R) at `RECALL_POINTS` and final recall (T,)."""
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[:, order], axis=1, dtype="float64")  # (T, N)
    fp = np.cumsum(~matched[:, order], axis=1, dtype="float64")
    precision = np.zeros((matched.shape[0], len(RECALL_POINTS)))
    recall = np.zeros(matched.shape[0])
    if tp.shape[1] == 0:
        return precision, recall
    for t in range(matched.shape[0]):
        rc = tp[t] / num_gt
        pr = tp[t] / (tp[t] + fp[t] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # best precision at this recall or more
        index = np.searchsorted(rc, RECALL_POINTS, side="left")
        reached = index < len(pr)
        precision[t, reached] = pr[index[reached]]
        recall[t] = rc[-1]
    return precision, recall


def coco_evaluate(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    *,
    iou_thresholds: Sequence[float] | None = None,
    max_detections: int = 100,
) -> dict[str, Any]:
    """COCO box mAP of detections against ground truth, as pycocotools computes it.

    Args:
        predictions: one dict per image: `"boxes"` `(N, 4)` xyxy (e.g.
            pixels), `"classes"` `(N,)` integer ids, `"scores"` `(N,)`. Only
            real detections: slice NMS output to its `num_detections`.
        ground_truths: one dict per image, in the same order: `"boxes"`
            `(M, 4)` xyxy in the same unit, `"classes"` `(M,)`.
        iou_thresholds: IoU thresholds to average over; default pycocotools'
            0.50:0.05:0.95 (`COCO_IOU_THRESHOLDS`).
        max_detections: per image and class, only the best this many
            detections count (pycocotools' `maxDets`, default 100).

    Returns:
        A dict: `"map"` (AP averaged over thresholds and classes), `"map50"`
        and `"map75"` (AP at IoU 0.5 and 0.75; NaN if not among the
        thresholds), `"mar"` (recall at `max_detections`, averaged likewise),
        `"class_ids"` `(K,)` every class seen in ground truth or predictions,
        `"per_class_ap"` and `"per_class_ap50"` `(K,)`, `"precision"`
        `(T, 101, K)` (at `RECALL_POINTS`) and `"iou_thresholds"` `(T,)`.
        Classes without ground truth get NaN and are left out of the means
        (pycocotools reports -1); all means are NaN without any ground truth.

    Example:

    >>> gt = [{"boxes": [[0, 0, 10, 10], [20, 20, 40, 40]], "classes": [0, 1]}]
    >>> pred = [{"boxes": [[0, 0, 10, 10], [21, 21, 40, 40], [50, 50, 60, 60]],
    ...          "classes": [0, 1, 1], "scores": [0.9, 0.8, 0.95]}]
    >>> result = coco_evaluate(pred, gt)
    >>> round(result["map50"], 4), round(result["map"], 4)
    (0.75, 0.725)
    >>> result["class_ids"].tolist(), result["per_class_ap"].round(4).tolist()
    ([0, 1], [1.0, 0.45])
    """
    for name, value in (("predictions", predictions), ("ground_truths", ground_truths)):
        if isinstance(value, Mapping) or not isinstance(value, Sequence):
            raise ValueError(f"`{name}` must be a list with one dict per image, got "
                             f"{type(value).__name__}.")
    if len(predictions) != len(ground_truths):
        raise ValueError(f"`predictions` has {len(predictions)} images but `ground_truths` has "
                         f"{len(ground_truths)}; pass one entry per image to both, in the same "
                         "order (an image without boxes gets empty arrays).")
    if (isinstance(max_detections, bool) or not isinstance(max_detections, int)
            or max_detections < 1):
        raise ValueError(f"`max_detections` must be a positive int, got {max_detections!r}.")
    thresholds = COCO_IOU_THRESHOLDS if iou_thresholds is None else np.asarray(
        iou_thresholds, dtype="float64")
    if thresholds.ndim != 1 or thresholds.size == 0 or np.any((thresholds < 0) | (thresholds > 1)):
        raise ValueError(f"`iou_thresholds` must be a non-empty list of numbers in [0, 1], got "
                         f"{iou_thresholds!r}.")

    preds = [_parse(p, f"predictions[{i}]", True) for i, p in enumerate(predictions)]
    gts = [_parse(g, f"ground_truths[{i}]", False) for i, g in enumerate(ground_truths)]
    class_ids = np.unique(np.concatenate(
        [c for _, c, _ in preds] + [c for _, c in gts] + [np.zeros(0, "int64")]))

    num_t, num_k = len(thresholds), len(class_ids)
    # per class: ground-truth count and, per image, detection scores and matches
    num_gt = np.zeros(num_k, "int64")
    scores: list[list[np.ndarray]] = [[] for _ in range(num_k)]
    matches: list[list[np.ndarray]] = [[] for _ in range(num_k)]
    for (p_boxes, p_classes, p_scores), (g_boxes, g_classes) in zip(preds, gts):
        np.add.at(num_gt, np.searchsorted(class_ids, g_classes), 1)
        for class_id in np.unique(p_classes):
            k = np.searchsorted(class_ids, class_id)
            mine = np.nonzero(p_classes == class_id)[0]
            mine = mine[np.argsort(-p_scores[mine], kind="mergesort")][:max_detections]
            scores[k].append(p_scores[mine])
            ious = _box_iou(p_boxes[mine], g_boxes[g_classes == class_id])
            matches[k].append(_match(ious, thresholds))

    precision = np.full((num_t, len(RECALL_POINTS), num_k), np.nan)
    recall = np.full((num_t, num_k), np.nan)
    for k in np.nonzero(num_gt)[0]:
        precision[:, :, k], recall[:, k] = _precision_recall(
            np.concatenate(scores[k] + [np.zeros(0)]),
            np.concatenate(matches[k] + [np.zeros((num_t, 0), bool)], axis=1), int(num_gt[k]))

    def mean(values: np.ndarray) -> float:
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else float("nan")

    def at(threshold: float) -> np.ndarray | None:
        found = np.nonzero(np.isclose(thresholds, threshold, rtol=0, atol=1e-12))[0]
        return precision[found[0]] if found.size else None

    p50, p75 = at(0.5), at(0.75)
    return {
        "map": mean(precision),
        "map50": mean(p50) if p50 is not None else float("nan"),
        "map75": mean(p75) if p75 is not None else float("nan"),
        "mar": mean(recall),
        "class_ids": class_ids,
        "per_class_ap": precision.mean(axis=(0, 1)),
        "per_class_ap50": p50.mean(axis=0) if p50 is not None else np.full(num_k, np.nan),
        "precision": precision,
        "iou_thresholds": thresholds,
    }
