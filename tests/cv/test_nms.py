"""`zoo.cv.nms.non_max_suppression` against a plain numpy greedy NMS, on every backend.

The data are clustered boxes (many overlaps), several classes, a batch with
an image whose scores all sit below the threshold. Scores are distinct and
the IoU threshold is nudged away from every pairwise IoU, so the reference's
float64 arithmetic and the backends' float32 one must agree exactly.
"""

import keras
import numpy as np
import pytest
from keras import ops

from zoo.cv import nms
from zoo.cv.nms import non_max_suppression

BACKEND = keras.backend.backend()


def _iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes in float64 (no epsilon, as torchvision computes it)."""
    b = boxes.astype("float64")
    low = np.maximum(b[:, None, :2], b[None, :, :2])
    high = np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=-1)
    area = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def reference_nms(boxes, scores, iou_threshold, score_threshold, max_detections,
                  max_candidates, class_aware):
    """The obvious greedy loop, one image at a time; returns padded arrays like the library."""
    batch = boxes.shape[0]
    out_boxes = np.zeros((batch, max_detections, 4), "float32")
    out_scores = np.zeros((batch, max_detections), "float32")
    out_classes = np.full((batch, max_detections), -1, "int32")
    counts = np.zeros(batch, "int32")
    for b in range(batch):
        best, label = scores[b].max(-1), scores[b].argmax(-1)
        candidates = np.nonzero(best > score_threshold)[0]
        candidates = candidates[np.argsort(-best[candidates], kind="stable")][:max_candidates]
        iou = _iou_matrix(boxes[b])
        kept = []
        for i in candidates:
            if len(kept) == max_detections:
                break
            if not any(iou[i, j] > iou_threshold and (not class_aware or label[i] == label[j])
                       for j in kept):
                kept.append(i)
        n = len(kept)
        counts[b] = n
        out_boxes[b, :n], out_scores[b, :n], out_classes[b, :n] = (
            boxes[b, kept], best[kept], label[kept])
    return {"boxes": out_boxes, "scores": out_scores, "classes": out_classes,
            "num_detections": counts}


def make_detections(seed, batch=3, anchors=300, classes=4, objects=8, empty_image=1):
    """Clustered boxes around a few objects, distinct per-anchor best scores."""
    rng = np.random.default_rng(seed)
    boxes = np.zeros((batch, anchors, 4), "float32")
    scores = np.zeros((batch, anchors, classes), "float32")
    for b in range(batch):
        centers = rng.uniform(40, 600, (objects, 2))
        sizes = rng.uniform(20, 200, (objects, 2))
        owner = rng.integers(0, objects, anchors)
        jitter = rng.normal(0, 0.12, (anchors, 4))
        center = centers[owner] + jitter[:, :2] * sizes[owner]
        size = sizes[owner] * np.exp(jitter[:, 2:])
        boxes[b] = np.concatenate([center - size / 2, center + size / 2], -1)
        object_class = rng.integers(0, classes, objects)
        label = np.where(rng.uniform(size=anchors) < 0.8, object_class[owner],
                         rng.integers(0, classes, anchors))
        best = rng.permutation(np.linspace(0.0123, 0.9871, anchors))
        if b == empty_image:
            best = best * 0.2  # nothing above 0.25
        scores[b] = best[:, None] * rng.uniform(0.0, 0.9, (anchors, classes))
        scores[b, np.arange(anchors), label] = best
    return boxes, scores


def safe_iou_threshold(boxes, base, margin=1e-5):
    """`base`, nudged until no pairwise IoU within an image lies within `margin` of it."""
    ious = np.concatenate([_iou_matrix(b).ravel() for b in boxes])
    threshold = base
    while np.any(np.abs(ious - threshold) < margin):
        threshold += 1.7e-4
    return threshold


def assert_same(result, expected):
    result = {k: ops.convert_to_numpy(v) for k, v in result.items()}
    assert result["classes"].dtype == np.int32 and result["num_detections"].dtype == np.int32
    np.testing.assert_array_equal(result["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(result["classes"], expected["classes"])
    np.testing.assert_array_equal(result["scores"], expected["scores"])
    np.testing.assert_array_equal(result["boxes"], expected["boxes"])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("class_aware", [True, False])
@pytest.mark.parametrize("max_detections,max_candidates,tile_size", [
    (300, 30000, 256),  # every candidate, one tile and a bit
    (12, 30000, 32),  # output cut at 12, early stop, many tiles
    (400, 100, 16),  # more rows than anchors (padding), candidate cap
])
def test_matches_greedy_reference(seed, class_aware, max_detections, max_candidates, tile_size,
                                  monkeypatch):
    monkeypatch.setattr(nms, "TILE_SIZE", tile_size)
    boxes, scores = make_detections(seed)
    iou_threshold = safe_iou_threshold(boxes, 0.5 if seed % 2 else 0.7)
    kwargs = dict(iou_threshold=iou_threshold, score_threshold=0.25,
                  max_detections=max_detections, max_candidates=max_candidates)
    expected = reference_nms(boxes, scores, class_aware=class_aware, **kwargs)
    assert expected["num_detections"][1] == 0 and expected["num_detections"].max() > 5
    result = non_max_suppression(boxes, scores, class_aware=class_aware, **kwargs)
    assert result["boxes"].shape == (3, max_detections, 4)
    assert_same(result, expected)


def test_class_agnostic_suppresses_across_classes():
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60]]], "float32")
    scores = np.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.1]]], "float32")
    aware = non_max_suppression(boxes, scores, max_detections=5)
    agnostic = non_max_suppression(boxes, scores, max_detections=5, class_aware=False)
    assert ops.convert_to_numpy(aware["classes"])[0].tolist() == [0, 1, 0, -1, -1]
    assert ops.convert_to_numpy(agnostic["classes"])[0].tolist() == [0, 0, -1, -1, -1]
    assert ops.convert_to_numpy(agnostic["num_detections"]).tolist() == [2]


def test_padding_rows_and_empty_image():
    boxes, scores = make_detections(3, batch=2, anchors=50)
    out = non_max_suppression(boxes, scores, max_detections=60)
    count = ops.convert_to_numpy(out["num_detections"])
    assert count[1] == 0 and 0 < count[0] < 50
    out_boxes, out_scores, out_classes = (ops.convert_to_numpy(out[k])
                                          for k in ("boxes", "scores", "classes"))
    assert np.all(out_boxes[1] == 0) and np.all(out_scores[1] == 0) and np.all(out_classes[1] == -1)
    assert np.all(out_boxes[0, count[0]:] == 0) and np.all(out_classes[0, count[0]:] == -1)
    assert np.all(np.diff(out_scores[0, :count[0]]) < 0)  # best first


@pytest.mark.parametrize("class_aware", [True, False])
def test_compiled(class_aware, monkeypatch):
    """It traces: jax.jit on JAX, tf.function (graph and XLA) on TensorFlow, eager on torch."""
    monkeypatch.setattr(nms, "TILE_SIZE", 64)
    boxes, scores = make_detections(4)
    iou_threshold = safe_iou_threshold(boxes, 0.6)
    kwargs = dict(iou_threshold=iou_threshold, score_threshold=0.25, max_detections=50,
                  class_aware=class_aware)
    expected = reference_nms(boxes, scores, max_candidates=30000, **kwargs)

    def run(b, s):
        return non_max_suppression(b, s, **kwargs)

    if BACKEND == "jax":
        import jax

        assert_same(jax.jit(run)(boxes, scores), expected)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        spec = (tf.TensorSpec((None, *boxes.shape[1:])), tf.TensorSpec((None, *scores.shape[1:])))
        assert_same(tf.function(run, input_signature=spec)(boxes, scores), expected)
        assert_same(tf.function(run, jit_compile=True)(boxes, scores), expected)
    else:
        assert_same(run(boxes, scores), expected)


@pytest.mark.parametrize("kwargs,message", [
    (dict(iou_threshold=1.5), "iou_threshold"),
    (dict(score_threshold=-0.1), "score_threshold"),
    (dict(max_detections=0), "max_detections"),
    (dict(max_candidates=2.5), "max_candidates"),
])
def test_bad_arguments(kwargs, message):
    boxes, scores = np.zeros((1, 5, 4), "float32"), np.zeros((1, 5, 3), "float32")
    with pytest.raises(ValueError, match=message):
        non_max_suppression(boxes, scores, **kwargs)


@pytest.mark.parametrize("box_shape,score_shape,message", [
    ((5, 4), (1, 5, 3), "batch axis"),
    ((1, 5, 5), (1, 5, 3), r"\(batch, anchors, 4\)"),
    ((1, 5, 4), (1, 5), "num_classes"),
    ((1, 5, 4), (1, 6, 3), "anchors axis"),
    ((2, 5, 4), (1, 5, 3), "batch axis"),
])
def test_bad_shapes(box_shape, score_shape, message):
    with pytest.raises(ValueError, match=message):
        non_max_suppression(np.zeros(box_shape, "float32"), np.zeros(score_shape, "float32"))
