"""The onnxruntime side of `bench_yolov8`: ultralytics' post-processing in
numpy, the detection comparison, and the export with its batch dimension
freed.

>>> box_iou(np.array([0., 0., 2., 2.]), np.array([[1., 1., 3., 3.]])).round(3)
array([0.143])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SCORE_THRESHOLD = 0.25  # ultralytics' predict defaults, also the detector's
IOU_THRESHOLD = 0.7
MAX_DETECTIONS = 300
MAX_WH = 7680.0  # ultralytics' class offset for class-aware NMS in one pass
MATCH_IOU = 0.95  # detections_match: per-box IoU at least this ...
MATCH_SCORE = 0.01  # ... and scores at most this far apart


def dynamic_batch_onnx(source: Path, target: Path) -> Path:
    """The export with a free batch dimension: the input's and output's first
    dimension named, the head's Reshape targets that pin batch 1 given 0
    (ONNX: copy that dimension from the input) instead, and the recorded
    intermediate shapes dropped."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    # intermediate shapes recorded at batch 1 (quantize_dynamic writes them): dropped
    del model.graph.value_info[:]
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[0] in initializers or (
                node.input[0] in constants):
            continue  # (a weight reshaped, e.g. a bias to (1, C, 1, 1): no batch in it)
        holder = constants.get(node.input[1])
        tensor = holder.attribute[0].t if holder is not None else initializers.get(node.input[1])
        shape = numpy_helper.to_array(tensor).copy()
        if shape[0] == 1:
            shape[0] = 0
            tensor.CopyFrom(numpy_helper.from_array(shape, tensor.name))
    onnx.save(model, str(target))
    return target


# --------------------------------------------------------------------------- #
# ultralytics' post-processing in numpy (the peer's).
# --------------------------------------------------------------------------- #


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of `boxes` (n, 4)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, best first (torchvision's `nms`: a box is
    dropped when its IoU with a kept, better one is above `iou_threshold`)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        if order.size:
            order = order[box_iou(boxes[best], boxes[order]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def postprocess(output: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ultralytics' `non_max_suppression` of one image's raw output (4 + classes,
    anchors) (xywh input pixels, class probabilities): xyxy boxes in input
    pixels, scores and classes, best first."""
    pred = output.T  # (anchors, 4 + classes)
    probs = pred[:, 4:]
    classes = probs.argmax(axis=1)
    scores = probs[np.arange(len(probs)), classes]
    keep = scores > SCORE_THRESHOLD
    xywh, scores, classes = pred[keep, :4], scores[keep], classes[keep]
    half = xywh[:, 2:] / 2
    boxes = np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)
    # Class-aware in one pass: boxes of different classes moved far apart.
    kept = greedy_nms(boxes + (classes * MAX_WH)[:, None], scores, IOU_THRESHOLD)
    kept = kept[:MAX_DETECTIONS]
    return boxes[kept], scores[kept], classes[kept]


def detections_json(boxes: Any, scores: Any, classes: Any) -> dict[str, list]:
    return {"boxes": np.asarray(boxes, np.float64).round(3).tolist(),
            "scores": np.asarray(scores, np.float64).round(5).tolist(),
            "classes": np.asarray(classes, np.int64).tolist()}


def compare_detections(ours: dict[str, list], reference: dict[str, list]) -> dict[str, Any]:
    """Match each of our boxes to an unmatched reference box of the same class
    (highest IoU); `match` when the counts agree and every pair has IoU >=
    MATCH_IOU and scores within MATCH_SCORE."""
    boxes, ref_boxes = np.asarray(ours["boxes"]), np.asarray(reference["boxes"])
    used: set[int] = set()
    min_iou, max_score_diff, paired = 1.0, 0.0, True
    for i, cls in enumerate(ours["classes"]):
        candidates = [j for j, c in enumerate(reference["classes"]) if c == cls and j not in used]
        if not candidates:
            paired = False
            break
        ious = box_iou(boxes[i], ref_boxes[candidates])
        j = candidates[int(ious.argmax())]
        used.add(j)
        min_iou = min(min_iou, float(ious.max()))
        max_score_diff = max(max_score_diff,
                             abs(ours["scores"][i] - reference["scores"][j]))
    match = (paired and len(ours["classes"]) == len(reference["classes"])
             and min_iou >= MATCH_IOU and max_score_diff <= MATCH_SCORE)
    return {"detections_match": bool(match), "min_iou": min_iou if paired else None,
            "max_score_diff": max_score_diff if paired else None}
