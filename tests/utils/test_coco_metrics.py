"""`zoo.utils.coco_metrics.coco_evaluate` against pycocotools' COCOeval on the same data."""

import contextlib
import io

import numpy as np
import pytest

from zoo.utils.coco_metrics import coco_evaluate

pytestmark = pytest.mark.once  # numpy only: the same on every backend

pytest.importorskip("pycocotools")

#: agreement with pycocotools required by the issue
TOLERANCE = 1e-3


def make_dataset(seed, num_images=8, num_classes=5, crowded_image=True):
    """Ground truth plus jittered copies, duplicates and false positives.

    Image 0 has no ground truth; class 4 never appears in the predictions and
    class 3 never in the ground truth (it only gets false positives).
    """
    rng = np.random.default_rng(seed)
    predictions, ground_truths = [], []
    for image in range(num_images):
        count = 0 if image == 0 else int(rng.integers(1, 7))
        xy = rng.uniform(0, 500, (count, 2))
        wh = rng.uniform(8, 150, (count, 2))
        gt_boxes = np.concatenate([xy, xy + wh], -1)
        gt_classes = rng.choice([0, 1, 2, 4], count)
        boxes, classes = [], []
        for box, label in zip(gt_boxes, gt_classes):
            if label == 4:
                continue
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):  # missed, found, found twice
                size = box[2:] - box[:2]
                shift = rng.normal(0, rng.choice([0.03, 0.1, 0.25]), 4) * np.tile(size, 2)
                jittered = box + shift
                boxes.append(np.concatenate([np.minimum(jittered[:2], jittered[2:] - 1),
                                             jittered[2:]]))
                classes.append(label if rng.uniform() < 0.9 else rng.integers(0, 4))
        for _ in range(int(rng.integers(0, 5))):  # false positives anywhere
            corner = rng.uniform(0, 500, 2)
            boxes.append(np.concatenate([corner, corner + rng.uniform(8, 150, 2)]))
            classes.append(rng.integers(0, 4))
        if crowded_image and image == 1:  # many overlapping detections of one class
            for _ in range(120):
                corner = rng.uniform(0, 60, 2)
                boxes.append(np.concatenate([corner, corner + rng.uniform(40, 120, 2)]))
                classes.append(0)
        boxes = np.array(boxes, "float64").reshape(-1, 4)
        predictions.append({"boxes": boxes, "classes": np.array(classes, "int64"),
                            "scores": rng.uniform(0.01, 1.0, len(boxes))})
        ground_truths.append({"boxes": gt_boxes, "classes": gt_classes})
    return predictions, ground_truths


def pycocotools_eval(predictions, ground_truths, num_classes=5, max_detections=100):
    """COCOeval(bbox) on in-memory data sets; returns (stats, eval dict)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box):
        return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]

    images, annotations, results = [], [], []
    for image, (pred, gt) in enumerate(zip(predictions, ground_truths), start=1):
        images.append({"id": image})
        for box, label in zip(gt["boxes"], gt["classes"]):
            bbox = xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": image,
                                "category_id": int(label) + 1, "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": 0})
        for box, label, score in zip(pred["boxes"], pred["classes"], pred["scores"]):
            results.append({"image_id": image, "category_id": int(label) + 1,
                            "bbox": xywh(box), "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations,
                           "categories": [{"id": c + 1} for c in range(num_classes)]}
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        if max_detections != 100:  # evaluate() sorts maxDets; stats use the third, the last
            coco_eval.params.maxDets = [1, max_detections, max_detections]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats, coco_eval.eval


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_matches_pycocotools(seed):
    predictions, ground_truths = make_dataset(seed)
    stats, reference = pycocotools_eval(predictions, ground_truths)
    result = coco_evaluate(predictions, ground_truths)
    assert abs(result["map"] - stats[0]) < TOLERANCE
    assert abs(result["map50"] - stats[1]) < TOLERANCE
    assert abs(result["map75"] - stats[2]) < TOLERANCE
    assert abs(result["mar"] - stats[8]) < TOLERANCE
    assert 0.05 < result["map"] < 0.95  # a non-trivial case
    # per class: pycocotools' precision for area "all", last maxDets, -1 = no ground truth
    assert result["class_ids"].tolist() == [0, 1, 2, 3, 4]
    ref_precision = reference["precision"][:, :, :, 0, -1]  # (T, R, K)
    ref_ap = np.where(ref_precision[0, 0] < 0, np.nan, ref_precision.mean(axis=(0, 1)))
    np.testing.assert_allclose(result["per_class_ap"], ref_ap, atol=TOLERANCE)
    assert np.isnan(result["per_class_ap"][3])  # false positives only, no ground truth
    assert result["per_class_ap"][4] == 0.0  # ground truth, never predicted


@pytest.mark.parametrize("max_detections", [1, 3])
def test_max_detections_matches_pycocotools(max_detections):
    predictions, ground_truths = make_dataset(7)
    stats, reference = pycocotools_eval(predictions, ground_truths, max_detections=max_detections)
    result = coco_evaluate(predictions, ground_truths, max_detections=max_detections)
    # stats[0] is hard-wired to maxDets=100 (-1 here): average the precision array instead
    precision = reference["precision"][:, :, :, 0, -1]
    assert abs(result["map"] - precision[precision > -1].mean()) < TOLERANCE
    for key, index in (("map50", 1), ("map75", 2), ("mar", 8)):
        assert abs(result[key] - stats[index]) < TOLERANCE, key


def test_perfect_predictions_score_one():
    _, ground_truths = make_dataset(5, crowded_image=False)
    predictions = [{"boxes": g["boxes"], "classes": g["classes"],
                    "scores": np.linspace(0.9, 0.5, len(g["boxes"]))} for g in ground_truths]
    result = coco_evaluate(predictions, ground_truths)
    assert result["map"] == result["map50"] == result["map75"] == result["mar"] == 1.0
    assert np.all(result["per_class_ap"] == 1.0)


def test_no_predictions_and_no_ground_truth():
    _, ground_truths = make_dataset(6)
    empty = [{"boxes": np.zeros((0, 4)), "classes": [], "scores": []}] * len(ground_truths)
    result = coco_evaluate(empty, ground_truths)
    assert result["map"] == 0.0 and result["mar"] == 0.0
    nothing = coco_evaluate(empty, [{"boxes": [], "classes": []}] * len(empty))
    assert np.isnan(nothing["map"]) and nothing["class_ids"].size == 0


def test_custom_iou_thresholds():
    predictions, ground_truths = make_dataset(8)
    full = coco_evaluate(predictions, ground_truths)
    only_50 = coco_evaluate(predictions, ground_truths, iou_thresholds=[0.5])
    assert only_50["map"] == pytest.approx(full["map50"], abs=1e-12)
    assert np.isnan(only_50["map75"])


GOOD_PRED = {"boxes": [[0, 0, 5, 5]], "classes": [1], "scores": [0.5]}
GOOD_GT = {"boxes": [[0, 0, 5, 5]], "classes": [1]}


@pytest.mark.parametrize("predictions,ground_truths,kwargs,message", [
    ([GOOD_PRED], [GOOD_GT, GOOD_GT], {}, "one entry per image"),
    (GOOD_PRED, GOOD_GT, {}, "list with one dict per image"),
    ([{**GOOD_PRED, "boxes": [[0, 0, 5]]}], [GOOD_GT], {}, r"shape \(N, 4\)"),
    ([{**GOOD_PRED, "boxes": [[5, 0, 0, 5]]}], [GOOD_GT], {}, "x2 < x1"),
    ([{**GOOD_PRED, "scores": [0.5, 0.4]}], [GOOD_GT], {}, "one score per box"),
    ([{**GOOD_PRED, "classes": [1.5]}], [GOOD_GT], {}, "integer class id"),
    ([{"boxes": [[0, 0, 5, 5]], "classes": [1]}], [GOOD_GT], {}, "'scores' entry"),
    ([GOOD_PRED], [{"boxes": [[0, 0, np.nan, 5]], "classes": [1]}], {}, "NaN"),
    ([GOOD_PRED], [GOOD_GT], {"iou_thresholds": [0.5, 1.5]}, "iou_thresholds"),
    ([GOOD_PRED], [GOOD_GT], {"max_detections": 0}, "max_detections"),
])
def test_bad_inputs(predictions, ground_truths, kwargs, message):
    with pytest.raises(ValueError, match=message):
        coco_evaluate(predictions, ground_truths, **kwargs)
