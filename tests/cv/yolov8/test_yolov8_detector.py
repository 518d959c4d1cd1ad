"""YOLOV8Detector: raw-image predict, presets, odd inputs, training and mAP."""

import keras
import numpy as np
import pytest
from PIL import Image

from tests.cv.yolov8.synthetic import rectangles
from zoo.core.errors import ZooError
from zoo.models import (
    Task,
    YOLOV8Backbone,
    YOLOV8Detector,
    YOLOV8ImageConverter,
    YOLOV8ObjectDetectorPreprocessor,
)

TINY = {"stackwise_channels": [8, 16, 32, 32, 64], "stackwise_depth": [1, 1, 1, 1]}


def _detector(size=128, **kwargs):
    preprocessor = YOLOV8ObjectDetectorPreprocessor(
        YOLOV8ImageConverter(image_size=size), flip_probability=0.0, scale_range=0.0)
    return YOLOV8Detector(YOLOV8Backbone(**TINY), num_classes=2, class_names=["red", "blue"],
                          preprocessor=preprocessor, **kwargs)


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["class_names"] == y["class_names"]
        np.testing.assert_array_equal(x["classes"], y["classes"])
        np.testing.assert_allclose(x["boxes"], y["boxes"], atol=1e-3)
        np.testing.assert_allclose(x["scores"], y["scores"], atol=1e-5)


def test_predict_fused_inference_equals_the_trained_graph():
    # predict runs a batch-norm-folded copy; it must decode what call() computes.
    detector = _detector(score_threshold=0.0, max_detections=500)
    for layer in detector.layers:  # non-trivial batch-norm statistics
        for v in getattr(layer, "non_trainable_weights", []):
            v.assign(np.random.default_rng(0).uniform(0.5, 1.5, v.shape).astype("float32"))
    images = np.random.default_rng(1).uniform(0, 1, (2, 128, 128, 3)).astype("float32")
    boxes, scores = (keras.ops.convert_to_numpy(t) for t in detector.decode(
        detector(images, training=False), 128, 128))
    fused_boxes, fused_scores = detector.decoded_outputs(images)
    np.testing.assert_allclose(fused_boxes, boxes, atol=1e-3)
    np.testing.assert_allclose(fused_scores, scores, atol=1e-5)


def test_preset_round_trip(tmp_path):
    detector = _detector(score_threshold=0.0, max_detections=20)
    images, _ = rectangles(3, seed=2)
    reference = detector.predict(images)
    assert sum(len(r["boxes"]) for r in reference) > 0
    detector.save_to_preset(tmp_path / "preset")
    for loader in (YOLOV8Detector, Task):
        loaded = loader.from_preset(tmp_path / "preset")
        assert type(loaded) is YOLOV8Detector and loaded.class_names == ["red", "blue"]
        _same(loaded.predict(images), reference)


@pytest.mark.parametrize("name,image", [
    ("grayscale", np.full((60, 80), 128, "uint8")),
    ("grayscale_1", np.full((60, 80, 1), 128, "uint8")),
    ("rgba", np.full((50, 70, 4), 200, "uint8")),
    ("tiny", np.full((16, 16, 3), 90, "uint8")),
    ("very_wide", np.full((20, 1500, 3), 90, "uint8")),
    ("very_tall", np.full((900, 12, 3), 90, "uint8")),
    ("float", np.full((64, 64, 3), 0.5, "float32")),
    ("pil_rgba", Image.new("RGBA", (40, 30), (10, 20, 30, 128))),
])
def test_odd_images_work(name, image):
    detector = _detector(score_threshold=0.0, max_detections=5)
    out = detector.predict(image)[0]
    h, w = (image.size[1], image.size[0]) if isinstance(image, Image.Image) else image.shape[:2]
    assert out["boxes"].shape == (5, 4) and out["scores"].shape == (5,)
    assert (out["boxes"] >= 0).all()
    assert (out["boxes"][:, [0, 2]] <= w).all() and (out["boxes"][:, [1, 3]] <= h).all()


def test_list_of_different_sizes_in_one_call():
    """5 images in batches of 4: on every backend a batch and a remainder,
    and on jax and torch forward calls of FORWARD_BATCH images within them."""
    detector = _detector(score_threshold=0.0, max_detections=20)
    images, _ = rectangles(5, seed=3)
    together = detector.predict(images, batch_size=4)
    alone = [detector.predict(image)[0] for image in images]
    _same(together, alone)


def test_corrupt_image_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises((ValueError, ZooError), match="photo.jpg"):
        _detector().predict(str(path))


def test_bad_inputs():
    detector = _detector()
    with pytest.raises(ValueError, match="Expected images"):
        detector.predict(12)
    with pytest.raises(ValueError, match="num_classes"):
        YOLOV8Detector(YOLOV8Backbone(**TINY), num_classes=0)
    with pytest.raises(ValueError, match="class_names"):
        YOLOV8Detector(YOLOV8Backbone(**TINY), num_classes=2, class_names=["a"])
