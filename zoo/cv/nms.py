"""Non-max suppression in `keras.ops`, with fixed shapes (jit-friendly, any backend).

`non_max_suppression` turns a detector's dense per-anchor output into a
short, padded list of detections per image, with the semantics of
ultralytics' YOLOv8 post-processing in its single-label mode
(`multi_label=False`):

1. each anchor keeps its best class and that class's probability;
2. anchors scoring `<= score_threshold` are dropped;
3. the rest are ranked by score and the best `max_candidates` go on;
4. greedy suppression: walking down the ranking, a box is dropped when its
   IoU with an already kept box is `> iou_threshold` (in class-aware mode
   only boxes of the same class suppress each other);
5. the first `max_detections` kept boxes are returned, best first.

Greedy NMS is sequential; here it runs with fixed shapes. Candidates are
visited in tiles of `TILE_SIZE` in ranking order (`ops.while_loop`). A tile's
candidates are first checked against the boxes kept so far (which are the
output rows themselves), then resolved among themselves by iterating "keep a
candidate unless a kept, higher-ranked, overlapping one exists" to its fixed
point, the Cluster-NMS scheme of Zheng et al. (2021): that fixed point is
unique and equals the greedy result, so the output is exactly greedy NMS. The
walk stops as soon as every image has filled its `max_detections` rows or run
out of candidates, so the cost follows the number of candidates actually
visited, not the square of `max_candidates`.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from zoo.cv.box_ops import box_iou

#: default cap on candidates entering suppression: ultralytics' `max_nms`. It
#: exceeds YOLOv8's 8400 anchors at 640 x 640, so every anchor above the score
#: threshold takes part, as in ultralytics. Lowering it bounds the worst case
#: (a sort of `max_candidates` plus visiting all their tiles) and changes the
#: result only when fewer than `max_detections` of the best `max_candidates`
#: survive suppression.
MAX_CANDIDATES = 30000

#: candidates resolved together per loop step: the per-step work is
#: O(TILE_SIZE^2 + TILE_SIZE * max_detections)
TILE_SIZE = 256


def _check_arguments(boxes: Any, scores: Any, iou_threshold: float, score_threshold: float,
                     max_detections: int, max_candidates: int) -> int:
    """Validates `non_max_suppression`'s arguments (tensors); returns the number of anchors."""
    for name, value in (("iou_threshold", iou_threshold), ("score_threshold", score_threshold)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}. "
                             f"Pass a Python float such as {name}=0.5.")
    for name, value in (("max_detections", max_detections), ("max_candidates", max_candidates)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive Python int, got {value!r}.")
    box_shape, score_shape = tuple(boxes.shape), tuple(scores.shape)  # static; None if unknown
    if len(box_shape) != 3 or box_shape[-1] != 4:
        raise ValueError(f"`boxes` must have shape (batch, anchors, 4) (xyxy corners), got "
                         f"{box_shape}. Add a batch axis with `boxes[None]` for one image.")
    if len(score_shape) != 3:
        raise ValueError(f"`scores` must have shape (batch, anchors, num_classes), got "
                         f"{score_shape}. For one class use `scores[..., None]`.")
    for axis, name in ((0, "batch"), (1, "anchors")):
        b, s = box_shape[axis], score_shape[axis]
        if b is not None and s is not None and b != s:
            raise ValueError(f"`boxes` {box_shape} and `scores` {score_shape} disagree on the "
                             f"{name} axis (axis {axis}); they must describe the same anchors.")
    anchors = box_shape[1] if box_shape[1] is not None else score_shape[1]
    if anchors is None:
        raise ValueError("The number of anchors (axis 1 of `boxes`/`scores`) must be known "
                         "when tracing; give the input a static anchor dimension.")
    return int(anchors)


def non_max_suppression(
    boxes: Any,
    scores: Any,
    *,
    iou_threshold: float = 0.7,
    score_threshold: float = 0.25,
    max_detections: int = 300,
    max_candidates: int = MAX_CANDIDATES,
    class_aware: bool = True,
) -> dict[str, Any]:
    """Greedy non-max suppression of dense per-anchor detections, batched.

    Args:
        boxes: `(batch, anchors, 4)` boxes as `xyxy` corners (any unit).
        scores: `(batch, anchors, num_classes)` class probabilities.
        iou_threshold: a box is suppressed by a kept higher-scoring box whose
            IoU with it is strictly greater than this (ultralytics' default for
            prediction is 0.7).
        score_threshold: anchors whose best class probability is `<=` this are
            discarded before suppression (ultralytics' `conf`, default 0.25).
        max_detections: number of rows returned per image (`D`); the best
            kept boxes fill them and the rest is padding.
        max_candidates: at most this many anchors, the highest-scoring, enter
            suppression (ultralytics' `max_nms`; see `MAX_CANDIDATES`).
        class_aware: if True (ultralytics' default), boxes of different
            classes never suppress each other; if False, any box can suppress
            any other (ultralytics' `agnostic=True`).

    Returns:
        A dict of tensors:
        `"boxes"` `(batch, D, 4)` float32, `"scores"` `(batch, D)` float32,
        `"classes"` `(batch, D)` int32, sorted by descending score, and
        `"num_detections"` `(batch,)` int32, the number of real rows. Padding
        rows have boxes and scores 0 and class -1. Among equal scores the order
        is the backend's `top_k` order.

    On JAX, call it under `jax.jit` (as a model's `predict` does): an eager
    call traces its loops anew each time (about half a second on CPU).

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> boxes = np.array([[[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]], "float32")
    >>> scores = np.array([[[0.9, 0.0], [0.8, 0.1], [0.1, 0.7]]], "float32")
    >>> out = non_max_suppression(boxes, scores, max_detections=4)
    >>> int(out["num_detections"][0]), ops.convert_to_numpy(out["classes"])[0].tolist()
    (2, [0, 1, -1, -1])
    >>> [round(float(s), 2) for s in ops.convert_to_numpy(out["scores"])[0]]
    [0.9, 0.7, 0.0, 0.0]
    """
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    anchors = _check_arguments(boxes, scores, iou_threshold, score_threshold,
                               max_detections, max_candidates)
    d = max_detections

    # 1-3: best class per anchor, threshold, the k best candidates, best first
    k = min(max_candidates, anchors)
    best = ops.max(scores, axis=-1)  # (B, A)
    best_class = ops.cast(ops.argmax(scores, axis=-1), "int32")  # (B, A)
    ranked = ops.where(best > score_threshold, best, float("-inf"))
    cand_scores, cand_index = ops.top_k(ranked, k)  # (B, k), descending
    cand_valid = cand_scores > score_threshold  # (B, k); False for the -inf fillers
    num_valid = ops.sum(ops.cast(cand_valid, "int32"), axis=-1)  # (B,)
    cand_boxes = ops.take_along_axis(boxes, cand_index[..., None], axis=1)  # (B, k, 4)
    cand_classes = ops.take_along_axis(best_class, cand_index, axis=1)  # (B, k)

    # candidates in tiles of t, walked in ranking order: (B, tiles, t, ...)
    t = min(TILE_SIZE, k)
    tiles = -(-k // t)
    pad = tiles * t - k
    cand_boxes = ops.reshape(ops.pad(cand_boxes, ((0, 0), (0, pad), (0, 0))), (-1, tiles, t, 4))
    cand_scores = ops.reshape(ops.pad(ops.where(cand_valid, cand_scores, 0.0), ((0, 0), (0, pad))),
                              (-1, tiles, t))
    cand_classes = ops.reshape(ops.pad(cand_classes, ((0, 0), (0, pad)), constant_values=-1),
                               (-1, tiles, t))
    cand_valid = ops.reshape(ops.pad(cand_valid, ((0, 0), (0, pad))), (-1, tiles, t))
    in_tile = ops.arange(t)
    earlier = ops.cast(in_tile[:, None] < in_tile[None, :], "float32")  # (t, t): i ranks above j
    slots = ops.arange(d)

    def overlaps(boxes1, classes1, boxes2, classes2):
        """(B, n, m) bool: box i of set 1 and box j of set 2 may suppress each other."""
        hit = box_iou(boxes1, boxes2) > iou_threshold
        if class_aware:
            hit = ops.logical_and(hit, classes1[:, :, None] == classes2[:, None, :])
        return hit

    def cond(tile, count, out_boxes, out_scores, out_classes):
        # some image still has unvisited valid candidates and free output rows
        pending = ops.logical_and(tile * t < num_valid, count < d)
        return ops.logical_and(tile < tiles, ops.any(pending))

    def body(tile, count, out_boxes, out_scores, out_classes):
        boxes_t = ops.take(cand_boxes, tile, axis=1)  # (B, t, 4)
        classes_t = ops.take(cand_classes, tile, axis=1)  # (B, t)
        scores_t = ops.take(cand_scores, tile, axis=1)
        # suppressed by a box kept in an earlier tile (all of them sit in the output
        # rows while fewer than d are kept; once d are, nothing later matters)
        filled = (slots < count[:, None])[:, None, :]  # (B, 1, d)
        prior = ops.any(ops.logical_and(
            overlaps(boxes_t, classes_t, out_boxes, out_classes), filled), axis=-1)
        alive = ops.logical_and(ops.take(cand_valid, tile, axis=1), ops.logical_not(prior))
        # greedy inside the tile: iterate "kept unless a kept earlier box suppresses
        # it" to its fixed point, which is the greedy result
        suppresses = ops.cast(overlaps(boxes_t, classes_t, boxes_t, classes_t),
                              "float32") * earlier  # (B, t, t)

        def inner_body(keep, changed):
            hits = ops.matmul(ops.cast(keep, "float32")[:, None, :], suppresses)[:, 0, :]
            new_keep = ops.logical_and(alive, hits == 0)
            return new_keep, ops.any(ops.not_equal(new_keep, keep))

        keep, _ = ops.while_loop(lambda keep, changed: changed, inner_body,
                                 (alive, ops.convert_to_tensor(True)), maximum_iterations=t)
        # append the kept boxes to the output rows, in order
        position = count[:, None] + ops.cumsum(ops.cast(keep, "int32"), axis=-1) - 1  # (B, t)
        route = ops.logical_and(position[:, :, None] == slots, keep[:, :, None])  # (B, t, d)
        taken = ops.any(route, axis=1)  # (B, d)
        out_boxes = ops.where(taken[..., None], ops.sum(
            ops.where(route[..., None], boxes_t[:, :, None, :], 0.0), axis=1), out_boxes)
        out_scores = ops.where(taken, ops.sum(
            ops.where(route, scores_t[:, :, None], 0.0), axis=1), out_scores)
        out_classes = ops.where(taken, ops.sum(
            ops.where(route, classes_t[:, :, None], 0), axis=1), out_classes)
        count = count + ops.sum(ops.cast(keep, "int32"), axis=-1)
        return tile + 1, count, out_boxes, out_scores, out_classes

    batch = ops.shape(boxes)[0]
    start = (ops.convert_to_tensor(0, "int32"), ops.zeros((batch,), "int32"),
             ops.zeros((batch, d, 4), "float32"), ops.zeros((batch, d), "float32"),
             ops.full((batch, d), -1, "int32"))
    _, count, out_boxes, out_scores, out_classes = ops.while_loop(
        cond, body, start, maximum_iterations=tiles)
    return {
        "boxes": out_boxes,
        "scores": out_scores,
        "classes": out_classes,
        "num_detections": ops.minimum(count, d),
    }
