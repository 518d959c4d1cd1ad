"""YOLOv8's training loss (ultralytics' `v8DetectionLoss`) in `keras.ops`.

Fixed shapes, no Python branching on tensor values, differentiable with
respect to the predictions on every backend, so it runs eagerly or under
`jax.jit` / `tf.function` / torch autograd alike.

The loss follows ultralytics step by step:

1. **Decoding.** The DFL logits become expected distances (softmax over
   `reg_max` bins, weighted by the bin index) and boxes around the anchor
   points, in units of each anchor's stride.
2. **Task-aligned assignment** (TOOD, Feng et al. 2021), computed on
   gradient-free copies: sigmoid class scores and the decoded boxes scaled to
   input pixels.
   - Candidates of a ground-truth box are the anchors whose centre lies
     strictly inside it (every edge distance `> 1e-9` pixels).
   - Per (box, candidate): overlap = CIoU clamped at 0, score = the
     predicted probability of the box's class, alignment =
     `score ** alpha * overlap ** beta` (0 for non-candidates).
   - Each box takes the `topk` anchors of highest alignment that are also
     candidates (ties at the k-th value: lowest anchor index first).
   - An anchor taken by several boxes goes to the box it overlaps most
     (ties: lowest box index), exactly as ultralytics' `select_highest_overlaps`
     does, including its quirk that the winner is chosen among all boxes,
     not only among those that took the anchor.
   - Target score of a positive anchor, in its box's class channel:
     `alignment / (max alignment of the box's positives + 1e-9) * max overlap
     of the box's positives`, maximised over boxes.
3. **Losses**, each divided by `max(sum of target scores over the batch, 1)`:
   - `cls`: binary cross-entropy with logits, summed over every anchor and
     class, against the target scores;
   - `box`: `1 - CIoU(predicted, assigned box)` over positive anchors, each
     weighted by its target score, in stride units;
   - `dfl`: distribution focal loss over positive anchors, weighted the same:
     the assigned box's edge distances (stride units) clamped to
     `[0, reg_max - 1.01]`, split linearly between the two neighbouring bins,
     cross-entropy against both, averaged over the four sides.
4. **Gains** 7.5 (box), 0.5 (cls), 1.5 (dfl); `total = box + cls + dfl`.

Scale: ultralytics returns `(box, cls, dfl) * batch_size` and its trainer
optimises the sum; `total` here is that sum divided by the batch size (a
per-image loss, what Keras optimizers expect). The components are returned
after their gains, as ultralytics logs them.

Deviations from ultralytics, all outside its normal operating range:

- ground-truth rows are valid when their class is `>= 0`; ultralytics pads
  with zero boxes and treats a box as valid when its coordinates sum to
  more than 0;
- top-k ties are broken by anchor index (torch leaves the order of equal
  values unspecified); ties only arise between equal alignments, in practice
  zeros (prediction not overlapping the box), and change the result only
  when fewer than `topk` candidates of a box have a positive alignment;
- with fewer anchors than `topk`, every anchor is a top-k pick (ultralytics
  raises);
- computed in float32 whatever the predictions' dtype.

ultralytics >= 8.4 (the YOLO26 release) also widens, for candidate selection
only, any box side shorter than the finest stride (8 px) to the next
stride (16 px) around the box centre ("small-target-aware assignment"); YOLOv8
was trained without it. `tiny_box_sizes=(8.0, 16.0)` turns it on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from keras import ops

from zoo.cv.box_ops import complete_iou
from zoo.cv.yolov8.yolov8_decode import dfl_distances, distances_to_boxes

#: ultralytics' TaskAlignedAssigner epsilon (inside-box test and normalisation)
ASSIGNER_EPS = 1e-9

#: DFL targets stay this far below the last bin, so the right neighbour exists
DFL_MARGIN = 0.01


class Assignment(NamedTuple):
    """Targets of every anchor, as the task-aligned assigner picks them.

    All gradient-free; background anchors carry the (unused) box and class of
    ground-truth row 0.
    """

    labels: Any  # (batch, anchors) int32 class of the assigned box
    boxes: Any  # (batch, anchors, 4) xyxy assigned box, in the ground truth's units
    scores: Any  # (batch, anchors, classes) soft class targets (0 on background)
    foreground: Any  # (batch, anchors) bool, anchors with an assigned box
    gt_index: Any  # (batch, anchors) int32 row of the assigned box in y_true


def _first_argmax(x: Any, axis: int) -> Any:
    """Index of the first maximum along `axis` (ties -> lowest index on every
    backend and device, which `argmax` does not promise)."""
    size = ops.shape(x)[axis]  # a tensor when the dimension is dynamic (tf.function)
    index_shape = [1] * len(x.shape)
    index_shape[axis] = -1
    index = ops.reshape(ops.arange(size, dtype="int32"), index_shape)
    is_max = ops.equal(x, ops.max(x, axis=axis, keepdims=True))
    return ops.min(ops.where(is_max, index, size), axis=axis)


def _top_k_mask(metric: Any, k: int) -> Any:
    """`(..., n)` -> bool mask of the `k` largest values along the last axis;
    among values equal to the k-th largest, the lowest indices win."""
    # top_k's values are well defined; which of several equal values it returns
    # is not (torch), so its indices are not used. Among the values equal to
    # the k-th, a second top_k over "n - index" picks the `free_slots` lowest
    # indices. (The k-th value is taken as the minimum of the k: XLA turns
    # top_k followed by a slice into a full sort, 50x slower on CPU.)
    size = metric.shape[-1]
    kth = ops.min(ops.top_k(metric, k)[0], axis=-1, keepdims=True)
    above = ops.greater(metric, kth)
    tied = ops.equal(metric, kth)
    free_slots = k - ops.sum(ops.cast(above, "int32"), axis=-1, keepdims=True)  # >= 1
    priority = ops.where(tied, size - ops.arange(size, dtype="float32"), 0.0)  # > 0 on ties
    cutoff = ops.take_along_axis(ops.top_k(priority, k)[0], free_slots - 1, axis=-1)
    return ops.logical_or(above, ops.logical_and(tied, priority >= cutoff))


class YOLOV8Loss:
    """ultralytics' YOLOv8 detection loss (box CIoU + class BCE + DFL).

    Args:
        num_classes: number of classes `C` of the detection head.
        reg_max: DFL bins per box side (16 in every YOLOv8).
        box_weight: gain of the CIoU box loss (ultralytics `box`, 7.5).
        class_weight: gain of the classification loss (ultralytics `cls`, 0.5).
        dfl_weight: gain of the distribution focal loss (ultralytics `dfl`, 1.5).
        topk: anchors each ground-truth box takes (ultralytics `tal_topk`, 10).
        alpha: exponent of the class score in the alignment metric (0.5).
        beta: exponent of the CIoU in the alignment metric (6.0).
        tiny_box_sizes: `(threshold, size)` in pixels, or None (default, the
            YOLOv8-era rule). When set, a box side shorter than `threshold` is
            widened to `size` about its centre when picking candidate anchors
            (ultralytics >= 8.4 uses `(8.0, 16.0)`).

    Call with `(y_true, y_pred, anchor_points, anchor_strides)`:

    - `y_true`: `{"boxes": (B, M, 4)` xyxy in input pixels, `"classes": (B, M)`
      ints, `-1` marking padding rows`}`;
    - `y_pred`: `{"boxes": (B, A, 4 * reg_max)` DFL logits (side-major: left,
      top, right, bottom; distances in units of the anchor's stride),
      `"classes": (B, A, C)` logits`}`;
    - `anchor_points` `(A, 2)` in stride units and `anchor_strides` `(A, 1)`,
      as `yolov8_decode.make_anchors` returns them.

    Returns `(total, {"box": ..., "cls": ..., "dfl": ...})`, scalars; `total`
    is ultralytics' loss divided by the batch size (see the module docstring).

    Example:

    >>> import numpy as np
    >>> from zoo.cv.yolov8.yolov8_decode import make_anchors
    >>> points, strides = make_anchors(64, 64)  # 84 anchors
    >>> loss = YOLOV8Loss(num_classes=3)
    >>> y_true = {"boxes": np.array([[[8., 8., 40., 32.], [0., 0., 0., 0.]]], "float32"),
    ...           "classes": np.array([[2, -1]])}
    >>> y_pred = {"boxes": np.zeros((1, 84, 64), "float32"),
    ...           "classes": np.zeros((1, 84, 3), "float32")}
    >>> total, parts = loss(y_true, y_pred, points, strides)
    >>> sorted(parts), bool(total > 0)
    (['box', 'cls', 'dfl'], True)
    """

    def __init__(self, num_classes: int, reg_max: int = 16, box_weight: float = 7.5,
                 class_weight: float = 0.5, dfl_weight: float = 1.5, topk: int = 10,
                 alpha: float = 0.5, beta: float = 6.0,
                 tiny_box_sizes: tuple[float, float] | None = None) -> None:
        for name, value, low in (("num_classes", num_classes, 1), ("reg_max", reg_max, 2),
                                 ("topk", topk, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be a Python int >= {low}, got {value!r}.")
        for name, value in (("box_weight", box_weight), ("class_weight", class_weight),
                            ("dfl_weight", dfl_weight), ("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative number, got {value!r}.")
        if tiny_box_sizes is not None:
            if len(tiny_box_sizes) != 2 or min(tiny_box_sizes) < 0:
                raise ValueError("`tiny_box_sizes` must be None or (threshold, size) in pixels, "
                                 f"e.g. (8.0, 16.0); got {tiny_box_sizes!r}.")
            tiny_box_sizes = (float(tiny_box_sizes[0]), float(tiny_box_sizes[1]))
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.box_weight = float(box_weight)
        self.class_weight = float(class_weight)
        self.dfl_weight = float(dfl_weight)
        self.topk = topk
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.tiny_box_sizes = tiny_box_sizes

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {"num_classes": self.num_classes, "reg_max": self.reg_max,
                "box_weight": self.box_weight, "class_weight": self.class_weight,
                "dfl_weight": self.dfl_weight, "topk": self.topk, "alpha": self.alpha,
                "beta": self.beta, "tiny_box_sizes": self.tiny_box_sizes}

    # -- inputs -----------------------------------------------------------------
    def _unpack(self, y_true: Any, y_pred: Any, anchor_points: Any, anchor_strides: Any
                ) -> tuple[Any, ...]:
        """Checks shapes (static ones) and returns float32/int32 tensors."""
        for name, value in (("y_true", y_true), ("y_pred", y_pred)):
            if not hasattr(value, "keys") or any(key not in value for key in ("boxes", "classes")):
                found = f"keys {sorted(value)}" if hasattr(value, "keys") else type(value).__name__
                raise ValueError(f"`{name}` must be a dict with keys 'boxes' and 'classes', "
                                 f"got {found}.")
        box_logits = ops.cast(y_pred["boxes"], "float32")
        class_logits = ops.cast(y_pred["classes"], "float32")
        points = ops.convert_to_tensor(anchor_points, "float32")
        strides = ops.reshape(ops.convert_to_tensor(anchor_strides, "float32"), (-1, 1))
        gt_boxes = ops.cast(y_true["boxes"], "float32")
        gt_classes = ops.cast(y_true["classes"], "int32")
        num_anchors = points.shape[0]
        expected = {
            "y_pred['boxes']": (box_logits, (None, num_anchors, 4 * self.reg_max)),
            "y_pred['classes']": (class_logits, (None, num_anchors, self.num_classes)),
            "y_true['boxes']": (gt_boxes, (None, None, 4)),
            "y_true['classes']": (gt_classes, (None, gt_boxes.shape[1])),
            "anchor_points": (points, (None, 2)),
            "anchor_strides": (strides, (num_anchors, 1)),
        }
        for name, (tensor, shape) in expected.items():
            actual = tuple(tensor.shape)
            if len(actual) != len(shape) or any(
                    want is not None and got is not None and want != got
                    for want, got in zip(shape, actual)):
                raise ValueError(
                    f"{name} has shape {actual}, expected {shape} (None = any), with "
                    f"num_classes={self.num_classes}, reg_max={self.reg_max} and "
                    f"{num_anchors} anchors from `anchor_points`. Pass the anchors of the "
                    "input size the predictions come from: make_anchors(height, width).")
        if gt_boxes.shape[1] == 0:  # no rows at all: one padding row keeps shapes non-empty
            gt_boxes = ops.zeros_like(box_logits[:, :1, :4])
            gt_classes = ops.cast(gt_boxes[..., 0], "int32") - 1
        valid = ops.greater_equal(gt_classes, 0)
        gt_boxes = ops.where(valid[..., None], gt_boxes, 0.0)  # padding rows: harmless zeros
        gt_classes = ops.maximum(gt_classes, 0)
        return box_logits, class_logits, points, strides, gt_boxes, gt_classes, valid

    # -- assignment -------------------------------------------------------------
    def assign(self, scores: Any, pred_boxes: Any, points: Any, gt_boxes: Any,
               gt_classes: Any, valid: Any) -> Assignment:
        """Task-aligned assignment (ultralytics' `TaskAlignedAssigner`), gradient-free.

        Args:
            scores: `(B, A, C)` class probabilities.
            pred_boxes: `(B, A, 4)` xyxy predicted boxes, in pixels.
            points: `(A, 2)` anchor centres, in pixels.
            gt_boxes: `(B, M, 4)` xyxy ground-truth boxes, in pixels.
            gt_classes: `(B, M)` int classes (any value >= 0 on padding rows).
            valid: `(B, M)` bool, False on padding rows.
        """
        scores, pred_boxes, points, gt_boxes = (
            ops.stop_gradient(ops.cast(t, "float32"))
            for t in (scores, pred_boxes, points, gt_boxes))
        num_gt = ops.shape(gt_boxes)[1]  # may be dynamic under tf.function

        # candidates: anchor centres strictly inside a (valid) box -> (B, M, A)
        area_boxes = gt_boxes
        if self.tiny_box_sizes is not None:
            threshold, size = self.tiny_box_sizes
            centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
            wh = gt_boxes[..., 2:] - gt_boxes[..., :2]
            wh = ops.where(ops.logical_and(wh < threshold, valid[..., None]), size, wh)
            area_boxes = ops.concatenate([centre - wh / 2, centre + wh / 2], axis=-1)
        centres = points[None, None]  # (1, 1, A, 2)
        edge_distances = ops.concatenate([centres - area_boxes[:, :, None, :2],
                                          area_boxes[:, :, None, 2:] - centres], axis=-1)
        inside = ops.min(edge_distances, axis=-1) > ASSIGNER_EPS
        candidate = ops.logical_and(inside, valid[..., None])

        # alignment metric of every (box, anchor) pair -> (B, M, A)
        class_index = ops.broadcast_to(gt_classes[..., None],
                                       ops.shape(candidate))  # (B, M, A)
        box_scores = ops.take_along_axis(ops.transpose(scores, (0, 2, 1)), class_index, axis=1)
        box_scores = ops.where(candidate, box_scores, 0.0)
        overlaps = complete_iou(gt_boxes[:, :, None, :], pred_boxes[:, None, :, :])
        overlaps = ops.where(candidate, ops.maximum(overlaps, 0.0), 0.0)
        alignment = ops.power(box_scores, self.alpha) * ops.power(overlaps, self.beta)

        # each box's top-k anchors, kept when they are candidates
        k = min(self.topk, alignment.shape[-1])
        positive = ops.cast(ops.logical_and(_top_k_mask(alignment, k), candidate), "float32")

        # an anchor taken by several boxes goes to the box it overlaps most
        taken = ops.sum(positive, axis=1)  # (B, A)
        best_gt = _first_argmax(overlaps, axis=1)  # (B, A)
        gt_range = ops.arange(num_gt, dtype="int32")[None, :, None]
        is_best = ops.cast(ops.equal(gt_range, best_gt[:, None, :]), "float32")
        positive = ops.where((taken > 1)[:, None, :], is_best, positive)
        foreground = ops.sum(positive, axis=1) > 0  # (B, A)
        gt_index = _first_argmax(positive, axis=1)  # (B, A); 0 on background

        # targets of each anchor from its box
        labels = ops.take_along_axis(gt_classes, gt_index, axis=1)  # (B, A)
        boxes = ops.take_along_axis(gt_boxes, ops.broadcast_to(
            gt_index[..., None], ops.shape(pred_boxes)), axis=1)  # (B, A, 4)

        # soft class targets: alignment normalised per box, scaled by its best overlap
        alignment = alignment * positive
        best_alignment = ops.max(alignment, axis=-1, keepdims=True)  # (B, M, 1)
        best_overlap = ops.max(overlaps * positive, axis=-1, keepdims=True)
        quality = ops.max(alignment * best_overlap / (best_alignment + ASSIGNER_EPS),
                          axis=1)  # (B, A)
        target_scores = (ops.one_hot(labels, self.num_classes, dtype="float32")
                         * (ops.cast(foreground, "float32") * quality)[..., None])
        return Assignment(labels, boxes, target_scores, foreground, gt_index)

    # -- loss -------------------------------------------------------------------
    def __call__(self, y_true: dict[str, Any], y_pred: dict[str, Any], anchor_points: Any,
                 anchor_strides: Any) -> tuple[Any, dict[str, Any]]:
        (box_logits, class_logits, points, strides, gt_boxes, gt_classes,
         valid) = self._unpack(y_true, y_pred, anchor_points, anchor_strides)

        distances = dfl_distances(box_logits, self.reg_max)  # (B, A, 4) stride units
        pred_boxes = distances_to_boxes(distances, points)  # (B, A, 4) stride units
        targets = self.assign(ops.sigmoid(class_logits), pred_boxes * strides, points * strides,
                              gt_boxes, gt_classes, valid)
        target_scores = ops.stop_gradient(targets.scores)
        score_sum = ops.maximum(ops.sum(target_scores), 1.0)

        # classification: BCE with logits over every anchor and class
        bce = ops.softplus(class_logits) - class_logits * target_scores
        cls_loss = ops.sum(bce) / score_sum

        # box regression on positives, weighted by their target score
        weight = ops.stop_gradient(
            ops.sum(target_scores, axis=-1) * ops.cast(targets.foreground, "float32"))  # (B, A)
        target_boxes = ops.stop_gradient(targets.boxes / strides)  # stride units
        ciou = complete_iou(pred_boxes, target_boxes)
        box_loss = ops.sum((1.0 - ciou) * weight) / score_sum

        # distribution focal loss on positives
        target_distances = ops.concatenate([points - target_boxes[..., :2],
                                            target_boxes[..., 2:] - points], axis=-1)
        target_distances = ops.clip(target_distances, 0.0, self.reg_max - 1 - DFL_MARGIN)
        left_bin = ops.floor(target_distances)
        left_weight = left_bin + 1 - target_distances
        left_index = ops.cast(left_bin, "int32")[..., None]  # (B, A, 4, 1)
        log_probs = ops.log_softmax(
            ops.reshape(box_logits, (-1, box_logits.shape[1], 4, self.reg_max)), axis=-1)
        left_ce = -ops.take_along_axis(log_probs, left_index, axis=-1)[..., 0]
        right_ce = -ops.take_along_axis(log_probs, left_index + 1, axis=-1)[..., 0]
        dfl = ops.mean(left_ce * left_weight + right_ce * (1 - left_weight), axis=-1)
        dfl_loss = ops.sum(dfl * weight) / score_sum

        parts = {"box": box_loss * self.box_weight, "cls": cls_loss * self.class_weight,
                 "dfl": dfl_loss * self.dfl_weight}
        return parts["box"] + parts["cls"] + parts["dfl"], parts
