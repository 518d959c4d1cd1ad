"""`YOLOV8Loss` against a plain numpy transcription of ultralytics' v8DetectionLoss.

The reference below follows ultralytics' algorithm one step at a time, in
float64 with explicit loops (one image, one box, one anchor at a time), so it
shares no code with the vectorised `keras.ops` version. Inputs are small (a
64 x 64 image: 84 anchors), with padding rows, overlapping boxes (anchors
claimed by two boxes), a tiny box and an image without any box.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from zoo.cv.yolov8.yolov8_decode import decode_boxes, make_anchors
from zoo.cv.yolov8.yolov8_loss import YOLOV8Loss

BACKEND = keras.backend.backend()
NUM_CLASSES, REG_MAX = 3, 16
POINTS, STRIDES = make_anchors(64, 64)  # 84 anchors


# -- reference ------------------------------------------------------------------
def _ciou(b1, b2, eps=1e-7):
    """CIoU of two xyxy boxes, ultralytics' formula, float64 scalars."""
    w1, h1 = b1[2] - b1[0], b1[3] - b1[1] + eps
    w2, h2 = b2[2] - b2[0], b2[3] - b2[1] + eps
    inter = (max(min(b1[2], b2[2]) - max(b1[0], b2[0]), 0.0)
             * max(min(b1[3], b2[3]) - max(b1[1], b2[1]), 0.0))
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    cw = max(b1[2], b2[2]) - min(b1[0], b2[0])
    ch = max(b1[3], b2[3]) - min(b1[1], b2[1])
    c2 = cw**2 + ch**2 + eps
    rho2 = ((b2[0] + b2[2] - b1[0] - b1[2]) ** 2 + (b2[1] + b2[3] - b1[1] - b1[3]) ** 2) / 4
    v = 4 / math.pi**2 * (math.atan(w2 / h2) - math.atan(w1 / h1)) ** 2
    alpha = v / (v - iou + 1 + eps)
    return iou - (rho2 / c2 + v * alpha)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference_loss(y_true, y_pred, points, strides, topk=10, alpha=0.5, beta=6.0, tiny=None):
    """ultralytics' v8DetectionLoss / (batch size), step by step; returns (parts, assignment)."""
    gt_boxes = np.asarray(y_true["boxes"], "float64")
    gt_classes = np.asarray(y_true["classes"]).astype(int)
    box_logits = np.asarray(y_pred["boxes"], "float64")
    class_logits = np.asarray(y_pred["classes"], "float64")
    points, strides = np.asarray(points, "float64"), np.asarray(strides, "float64")
    batch, anchors, num_classes = class_logits.shape
    rows = gt_boxes.shape[1]

    # bbox_decode: softmax over bins, expectation, dist2bbox (stride units)
    log_probs = _log_softmax(box_logits.reshape(batch, anchors, 4, REG_MAX))
    dist = (np.exp(log_probs) * np.arange(REG_MAX)).sum(-1)
    pred_boxes = np.concatenate([points - dist[..., :2], points + dist[..., 2:]], -1)
    scores = 1 / (1 + np.exp(-class_logits))  # detached sigmoid
    pred_px, points_px = pred_boxes * strides, points * strides

    target_scores = np.zeros((batch, anchors, num_classes))
    target_boxes = np.zeros((batch, anchors, 4))
    foreground = np.zeros((batch, anchors), bool)
    claimed_twice = 0
    for b in range(batch):
        valid = gt_classes[b] >= 0
        metric, overlaps, candidate = (np.zeros((rows, anchors)) for _ in range(3))
        for m in range(rows):
            if not valid[m]:
                continue
            x1, y1, x2, y2 = gt_boxes[b, m]
            if tiny is not None:  # ultralytics >= 8.4: widen tiny sides about the centre
                cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
                w, h = (tiny[1] if w < tiny[0] else w), (tiny[1] if h < tiny[0] else h)
                x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            for a in range(anchors):
                px, py = points_px[a]
                if min(px - x1, py - y1, x2 - px, y2 - py) > 1e-9:
                    candidate[m, a] = 1
                    overlaps[m, a] = max(_ciou(gt_boxes[b, m], pred_px[b, a]), 0.0)
                    score = scores[b, a, gt_classes[b, m]]
                    metric[m, a] = score**alpha * overlaps[m, a] ** beta
        positive = np.zeros((rows, anchors))
        for m in range(rows):
            if valid[m]:
                for a in np.argsort(-metric[m], kind="stable")[:topk]:  # ties: lower index
                    positive[m, a] = candidate[m, a]
        for a in range(anchors):  # select_highest_overlaps
            if positive[:, a].sum() > 1:
                claimed_twice += 1
                positive[:, a] = 0
                positive[np.argmax(overlaps[:, a]), a] = 1
        gt_index = positive.argmax(0)
        foreground[b] = positive.sum(0) > 0
        aligned = metric * positive
        best_aligned = aligned.max(1)
        best_overlap = (overlaps * positive).max(1)
        for a in range(anchors):
            target_boxes[b, a] = gt_boxes[b, gt_index[a]]
            if foreground[b, a]:
                quality = max(aligned[m, a] * best_overlap[m] / (best_aligned[m] + 1e-9)
                              for m in range(rows))
                target_scores[b, a, gt_classes[b, gt_index[a]]] = quality

    score_sum = max(target_scores.sum(), 1.0)
    x, z = class_logits, target_scores
    cls = (np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))).sum() / score_sum
    box = dfl = 0.0
    for b in range(batch):
        for a in range(anchors):
            if not foreground[b, a]:
                continue
            weight = target_scores[b, a].sum()
            target = target_boxes[b, a] / strides[a, 0]
            box += (1 - _ciou(pred_boxes[b, a], target)) * weight
            ltrb = np.concatenate([points[a] - target[:2], target[2:] - points[a]])
            ltrb = np.clip(ltrb, 0, REG_MAX - 1 - 0.01)
            side_losses = []
            for side in range(4):
                left = int(ltrb[side])
                w_left = left + 1 - ltrb[side]
                lp = log_probs[b, a, side]
                side_losses.append(-lp[left] * w_left - lp[left + 1] * (1 - w_left))
            dfl += np.mean(side_losses) * weight
    parts = {"box": 7.5 * box / score_sum, "cls": 0.5 * cls, "dfl": 1.5 * dfl / score_sum}
    return parts, {"foreground": foreground, "scores": target_scores,
                   "claimed_twice": claimed_twice}


# -- data -----------------------------------------------------------------------
def make_batch(seed=0, with_tiny=False):
    """Two images, four rows each: image 0 has two overlapping boxes, one more
    box and a padding row (garbage coordinates) in the middle; image 1 only padding."""
    rng = np.random.default_rng(seed)
    boxes = np.array([[[6.3, 9.1, 45.7, 41.2], [14.2, 3.6, 57.9, 37.4],
                       [5.0, 5.0, 50.0, 50.0], [30.4, 34.8, 61.3, 62.1]],
                      [[1.0, 2.0, 30.0, 40.0]] * 4], "float32")
    classes = np.array([[2, 0, -1, 1], [-1, -1, -1, -1]], "int32")
    if with_tiny:
        boxes[0, 3] = [21.3, 26.1, 26.2, 30.7]  # 4.9 x 4.6 px, between anchor centres
    boxes += rng.uniform(-0.4, 0.4, boxes.shape).astype("float32")
    # DFL logits leaning to short distances so that predictions overlap the boxes
    bias = -0.35 * np.arange(REG_MAX)
    box_logits = (rng.normal(0, 1.5, (2, len(POINTS), 4, REG_MAX)) + bias).reshape(2, -1, 64)
    class_logits = rng.normal(-1.0, 1.5, (2, len(POINTS), NUM_CLASSES))
    return ({"boxes": boxes, "classes": classes},
            {"boxes": box_logits.astype("float32"), "classes": class_logits.astype("float32")})


def _numpy_parts(parts):
    return {k: float(ops.convert_to_numpy(v)) for k, v in parts.items()}


def _assert_parts_close(actual, expected, rtol=1e-4):
    for key in ("box", "cls", "dfl"):
        np.testing.assert_allclose(actual[key], expected[key], rtol=rtol, atol=1e-6, err_msg=key)


# -- backend-specific helpers --------------------------------------------------
# Eager JAX compiles every primitive on first use (seconds on a small CPU), so on
# JAX the loss runs under jax.jit throughout; TensorFlow and torch run it eagerly.
_COMPILED = {}


def compute(loss, y_true, y_pred):
    """`loss(y_true, y_pred, POINTS, STRIDES)`, under jax.jit on JAX."""
    if BACKEND != "jax":
        return loss(y_true, y_pred, POINTS, STRIDES)
    import jax

    key = tuple(sorted(loss.get_config().items()))
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(lambda t, p: loss(t, p, POINTS, STRIDES))
    return _COMPILED[key](y_true, y_pred)


def value_and_grad(fn, *arrays):
    """(fn(*arrays), [d fn / d array]) as numpy, with the backend's own autodiff."""
    if BACKEND == "jax":
        import jax

        argnums = tuple(range(len(arrays)))
        value, grads = jax.jit(jax.value_and_grad(fn, argnums=argnums))(*arrays)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        xs = [tf.convert_to_tensor(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            value = fn(*xs)
        grads = tape.gradient(value, xs)
    else:
        xs = [ops.convert_to_tensor(a).detach().requires_grad_(True) for a in arrays]
        value = fn(*xs)
        value.backward()
        grads = [x.grad for x in xs]
    return float(ops.convert_to_numpy(value)), [ops.convert_to_numpy(g) for g in grads]


# -- tests ----------------------------------------------------------------------
@pytest.mark.parametrize("seed,topk", [(0, 10), (1, 10), (2, 10), (0, 84)])
def test_matches_reference(seed, topk):
    """topk=84: every anchor is a top-k pick (k equals the number of anchors)."""
    y_true, y_pred = make_batch(seed)
    expected, ref_assignment = reference_loss(y_true, y_pred, POINTS, STRIDES, topk=topk)
    loss = YOLOV8Loss(NUM_CLASSES, topk=topk)
    total, parts = compute(loss, y_true, y_pred)
    _assert_parts_close(_numpy_parts(parts), expected)
    np.testing.assert_allclose(float(ops.convert_to_numpy(total)), sum(expected.values()),
                               rtol=1e-4)

    # the assignment itself, and that the data exercise what they should
    fg = ref_assignment["foreground"]
    assert fg[0].sum() >= 10 and not fg[1].any()
    assert ref_assignment["claimed_twice"] > 0  # select_highest_overlaps had work to do

    def assign(y_true, y_pred):
        pred_px = decode_boxes(y_pred["boxes"], POINTS, STRIDES)
        classes = ops.convert_to_tensor(y_true["classes"])
        return loss.assign(ops.sigmoid(y_pred["classes"]), pred_px, POINTS * STRIDES,
                           y_true["boxes"], ops.maximum(classes, 0), classes >= 0)

    if BACKEND == "jax":
        import jax

        assign = jax.jit(assign)
    got = assign(y_true, y_pred)
    np.testing.assert_array_equal(ops.convert_to_numpy(got.foreground), fg)
    np.testing.assert_allclose(ops.convert_to_numpy(got.scores), ref_assignment["scores"],
                               rtol=1e-4, atol=1e-7)


def test_tiny_box_option_matches_reference():
    y_true, y_pred = make_batch(0, with_tiny=True)
    # anchors around the tiny box predict ~8 x 8 px boxes, so that they overlap it
    centre = y_true["boxes"][0, 3].reshape(2, 2).mean(0)
    near = np.nonzero(np.abs(POINTS * STRIDES - centre).max(-1) < 10)[0]
    logits = y_pred["boxes"].reshape(2, -1, 4, REG_MAX)
    logits[0, near] = -10.0
    logits[0, near, :, :2] = 0.0
    y_pred["boxes"] = logits.reshape(2, -1, 4 * REG_MAX)
    plain, _ = reference_loss(y_true, y_pred, POINTS, STRIDES)
    widened, _ = reference_loss(y_true, y_pred, POINTS, STRIDES, tiny=(8.0, 16.0))
    assert plain != widened  # the tiny box gets anchors only when widened
    _, parts = compute(YOLOV8Loss(NUM_CLASSES), y_true, y_pred)
    _assert_parts_close(_numpy_parts(parts), plain)
    _, parts = compute(YOLOV8Loss(NUM_CLASSES, tiny_box_sizes=(8.0, 16.0)), y_true, y_pred)
    _assert_parts_close(_numpy_parts(parts), widened)


def test_compiled_matches_eager():
    """tf.function with XLA; on JAX every test here already runs under jax.jit."""
    if BACKEND != "tensorflow":
        pytest.skip("JAX: covered by jax.jit everywhere; torch: eager only")
    import tensorflow as tf

    y_true, y_pred = make_batch(0)
    loss = YOLOV8Loss(NUM_CLASSES)
    eager = _numpy_parts(loss(y_true, y_pred, POINTS, STRIDES)[1])
    compiled = tf.function(lambda t, p: loss(t, p, POINTS, STRIDES)[1], jit_compile=True)
    _assert_parts_close(_numpy_parts(compiled(y_true, y_pred)), eager, rtol=1e-5)


def _perfect_predictions(y_true):
    """Every anchor inside a box predicts that box exactly (DFL two-hot); the
    anchors the assigner then picks predict its class confidently, every other
    anchor predicts background."""
    batch, anchors = y_true["boxes"].shape[0], len(POINTS)
    box_logits = np.full((batch, anchors, 4, REG_MAX), -20.0)
    class_logits = np.full((batch, anchors, NUM_CLASSES), -12.0)
    for b in range(batch):
        for m in np.argsort(-np.prod(np.diff(y_true["boxes"][b].reshape(-1, 2, 2), axis=1),
                                     axis=-1)[:, 0]):  # small boxes painted last
            if y_true["classes"][b, m] < 0:
                continue
            box = y_true["boxes"][b, m] / STRIDES  # (A, 4) stride units
            ltrb = np.concatenate([POINTS - box[:, :2], box[:, 2:] - POINTS], -1)
            for a in np.nonzero(ltrb.min(-1) > 0)[0]:
                class_logits[b, a] = -12.0
                class_logits[b, a, y_true["classes"][b, m]] = 12.0
                for side in range(4):
                    t = min(ltrb[a, side], REG_MAX - 1.01)
                    left = int(t)
                    box_logits[b, a, side] = -20.0
                    box_logits[b, a, side, left] = np.log(left + 1 - t + 1e-9)
                    box_logits[b, a, side, left + 1] = np.log(t - left + 1e-9)
    y_pred = {"boxes": box_logits.reshape(batch, anchors, -1).astype("float32"),
              "classes": class_logits.astype("float32")}
    # only the anchors the assigner picks should be confident: the others are background
    _, assignment = reference_loss(y_true, y_pred, POINTS, STRIDES)
    y_pred["classes"][~assignment["foreground"]] = -12.0
    return y_pred


def test_perfect_predictions_score_lower():
    y_true, y_pred = make_batch(0)
    loss = YOLOV8Loss(NUM_CLASSES)
    random_total, random_parts = compute(loss, y_true, y_pred)
    perfect_total, perfect_parts = compute(loss, y_true, _perfect_predictions(y_true))
    random_parts, perfect_parts = _numpy_parts(random_parts), _numpy_parts(perfect_parts)
    assert float(perfect_total) < 0.2 * float(random_total)
    assert perfect_parts["box"] < 0.01 and perfect_parts["cls"] < 0.1 * random_parts["cls"]
    assert perfect_parts["dfl"] < random_parts["dfl"]


def test_gradients_exist_and_are_finite():
    y_true, y_pred = make_batch(0)
    loss = YOLOV8Loss(NUM_CLASSES)
    value, (g_boxes, g_classes) = value_and_grad(
        lambda b, c: loss(y_true, {"boxes": b, "classes": c}, POINTS, STRIDES)[0],
        y_pred["boxes"], y_pred["classes"])
    assert np.isfinite(value)
    for g in (g_boxes, g_classes):
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    # box logits get gradient only on positives, which image 1 (no boxes) has none of
    assert np.abs(g_boxes[0]).max() > 0 and np.abs(g_boxes[1]).max() == 0
    # class logits: d BCE / d logit = (sigmoid(x) - target) / (gain-normalised sum)
    expected, ref = reference_loss(y_true, y_pred, POINTS, STRIDES)
    score_sum = max(ref["scores"].sum(), 1.0)
    sig = 1 / (1 + np.exp(-y_pred["classes"].astype("float64")))
    np.testing.assert_allclose(g_classes, 0.5 * (sig - ref["scores"]) / score_sum,
                               rtol=1e-3, atol=1e-7)


def test_batch_without_boxes():
    y_true, y_pred = make_batch(0)
    empty = {"boxes": np.zeros((2, 4, 4), "float32"), "classes": np.full((2, 4), -1)}
    loss = YOLOV8Loss(NUM_CLASSES)
    for truth in (empty, {"boxes": np.zeros((2, 0, 4), "float32"),
                          "classes": np.zeros((2, 0), "int32")}):
        value, grads = value_and_grad(
            lambda b, c, t=truth: loss(t, {"boxes": b, "classes": c}, POINTS, STRIDES)[0],
            y_pred["boxes"], y_pred["classes"])
        _, parts = compute(loss, truth, y_pred)
        parts = _numpy_parts(parts)
        assert parts["box"] == 0 and parts["dfl"] == 0
        x = y_pred["classes"].astype("float64")  # all-background BCE over a sum of 1
        np.testing.assert_allclose(parts["cls"], 0.5 * np.logaddexp(0, x).sum(), rtol=1e-5)
        np.testing.assert_allclose(value, parts["cls"], rtol=1e-6)
        assert all(np.all(np.isfinite(g)) for g in grads)


def test_overfits_a_batch():
    """Gradient descent (Adam) on the predictions themselves drives the loss down."""
    y_true, y_pred = make_batch(0)
    loss = YOLOV8Loss(NUM_CLASSES)

    def objective(b, c):
        return loss(y_true, {"boxes": b, "classes": c}, POINTS, STRIDES)[0]

    if BACKEND == "jax":
        import jax

        grad_fn = jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function
        def grad_fn(b, c):
            with tf.GradientTape() as tape:
                tape.watch([b, c])
                value = objective(b, c)
            return value, tape.gradient(value, [b, c])
    else:
        def grad_fn(b, c):
            b, c = b.detach().requires_grad_(True), c.detach().requires_grad_(True)
            value = objective(b, c)
            value.backward()
            return value.detach(), (b.grad, c.grad)

    params = [ops.convert_to_tensor(y_pred["boxes"]), ops.convert_to_tensor(y_pred["classes"])]
    moments = [[ops.zeros_like(p), ops.zeros_like(p)] for p in params]
    lr, b1, b2 = 0.1, 0.9, 0.999
    first = last = None
    for step in range(1, 101):
        value, grads = grad_fn(*params)
        first = float(value) if first is None else first
        last = float(value)
        for i, g in enumerate(grads):
            m, v = moments[i]
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            moments[i] = [m, v]
            update = (m / (1 - b1**step)) / (ops.sqrt(v / (1 - b2**step)) + 1e-8)
            params[i] = params[i] - lr * update
    assert np.isfinite(last) and last < 0.05 * first, (first, last)


def test_clear_errors():
    y_true, y_pred = make_batch(0)
    loss = YOLOV8Loss(NUM_CLASSES)
    with pytest.raises(ValueError, match="y_pred\\['classes'\\]"):
        YOLOV8Loss(5)(y_true, y_pred, POINTS, STRIDES)
    with pytest.raises(ValueError, match="make_anchors"):
        loss(y_true, y_pred, *make_anchors(96, 96))
    with pytest.raises(ValueError, match="keys 'boxes' and 'classes'"):
        loss(y_true, {"boxes": y_pred["boxes"]}, POINTS, STRIDES)
    with pytest.raises(ValueError, match="topk"):
        YOLOV8Loss(NUM_CLASSES, topk=0)
    with pytest.raises(ValueError, match="tiny_box_sizes"):
        YOLOV8Loss(NUM_CLASSES, tiny_box_sizes=(8.0,))


def test_top_k_ties_go_to_the_lowest_index():
    from zoo.cv.yolov8.yolov8_loss import _top_k_mask

    metric = np.array([[0.0, 1.0, 0.0, 1.0, 1.0, 0.5, 0.0],
                       [0.2, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0]], "float32")
    got = ops.convert_to_numpy(_top_k_mask(ops.convert_to_tensor(metric), 3))
    np.testing.assert_array_equal(got, [[0, 1, 0, 1, 1, 0, 0], [1, 1, 0, 0, 1, 0, 0]])
