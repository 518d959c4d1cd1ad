"""`YOLOV8ObjectDetectorPreprocessor`: targets, validation, and training
augmentation that keeps boxes on the objects they mark."""

import json
import warnings

import keras
import numpy as np
import pytest
import skimage.data

from tests.cv.yolov8.photos import photos
from zoo.cv.yolov8.yolov8_image_converter import YOLOV8ImageConverter
from zoo.cv.yolov8.yolov8_object_detector_preprocessor import (
    YOLOV8ObjectDetectorPreprocessor,
    box_candidates,
)


def _annotation(boxes, classes):
    return {"boxes": np.asarray(boxes, float).reshape(-1, 4), "classes": np.asarray(classes, int)}


def _rectangles(h, w, boxes):
    """A black image with a white filled rectangle per (integer) box."""
    image = np.zeros((h, w, 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[y1:y2, x1:x2] = 255
    return image


def _white_extent(canvas, box, margin=4):
    """Bounds (x1, y1, x2, y2) of the white pixels near `box` in a float canvas."""
    x1, y1, x2, y2 = box
    height, width = canvas.shape[:2]
    top, left = max(int(y1) - margin, 0), max(int(x1) - margin, 0)
    bottom, right = min(int(np.ceil(y2)) + margin, height), min(int(np.ceil(x2)) + margin, width)
    white = np.argwhere(canvas[top:bottom, left:right, 0] > 0.5)
    return np.array([white[:, 1].min() + left, white[:, 0].min() + top,
                     white[:, 1].max() + 1 + left, white[:, 0].max() + 1 + top], float)


# -- inference targets ---------------------------------------------------------------------
def test_targets_in_input_pixels_with_padding():
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(640), max_boxes=3)
    images = [np.zeros((720, 1280, 3), np.uint8), np.zeros((100, 100), np.uint8)]
    y = [_annotation([[200, 120, 600, 520], [0, 0, 1280, 720]], [4, 0]), _annotation([], [])]
    x, targets = pre(images, y)
    assert x.shape == (2, 640, 640, 3) and x.dtype == np.float32
    assert targets["boxes"].dtype == np.float32 and targets["boxes"].shape == (2, 3, 4)
    assert targets["classes"].dtype == np.int32
    assert targets["boxes"][0].tolist() == [[100, 200, 300, 400], [0, 140, 640, 500], [0] * 4]
    assert targets["classes"].tolist() == [[4, 0, -1], [-1, -1, -1]]
    assert np.array_equal(pre(images), x)  # without y: the images alone


def test_targets_match_the_converter_and_real_photos():
    pre = YOLOV8ObjectDetectorPreprocessor()
    images = list(photos().values())
    rng = np.random.default_rng(1)
    y = []
    for image in images:
        h, w = image.shape[:2]
        corners = rng.uniform(0, 1, (2, 7, 2)) * [w, h]
        y.append(_annotation(np.concatenate([corners.min(0), corners.max(0) + 1], 1), range(7)))
    x, targets = pre(images, y)
    batch, metas = pre.image_converter(images)
    assert np.array_equal(x, batch)
    for row, (meta, annotation) in enumerate(zip(metas, y)):
        h, w = meta.original_size
        clipped = np.minimum(annotation["boxes"], [w, h, w, h])
        np.testing.assert_allclose(targets["boxes"][row, :7],
                                   pre.image_converter.boxes_to_input(clipped, meta))
        back = pre.image_converter.boxes_to_original(targets["boxes"][row, :7], meta)
        np.testing.assert_allclose(back, clipped, atol=1e-3)


def test_object_array_of_dicts_and_sample_weight():
    """What `PreprocessedBatches` passes: np.asarray(list of dicts)[rows]."""
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(64))
    y = np.asarray([_annotation([[1, 2, 30, 40]], [1]), _annotation([], [])], dtype=object)
    x, targets, weights = pre([np.zeros((64, 64, 3), np.uint8)] * 2, y, [1, 0.5])
    assert targets["classes"][:, 0].tolist() == [1, -1]
    assert weights.dtype == np.float32 and weights.tolist() == [1.0, 0.5]
    with pytest.raises(ValueError, match="sample_weight was given without"):
        pre([np.zeros((8, 8), np.uint8)], None, [1.0])


def test_boxes_reaching_outside_are_clipped():
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(64))
    _, targets = pre(np.zeros((64, 64), np.uint8), [_annotation([[-5, 10, 70, 20]], [0])])
    assert targets["boxes"][0, 0].tolist() == [0, 10, 64, 20]


def test_more_than_max_boxes_keeps_the_first_with_a_warning():
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(64), max_boxes=2)
    boxes = [[i, i, i + 10, i + 10] for i in range(5)]
    with pytest.warns(UserWarning, match="more than max_boxes=2 boxes"):
        _, targets = pre([np.zeros((64, 64), np.uint8)], [_annotation(boxes, [0, 1, 2, 3, 4])])
    assert targets["classes"].tolist() == [[0, 1]]
    assert targets["boxes"][0, 1].tolist() == [1, 1, 11, 11]


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("annotation, match", [
    ([[1, 2, 3, 4]], "must be a dict"),
    ({"boxes": [[1, 2, 3, 4]]}, r"keys \['boxes'\]"),
    ({"boxes": [1, 2, 3, 4], "classes": [0]}, r"shape \(n, 4\)"),
    ({"boxes": [[1, 2, 3, 4], [1, 2]], "classes": [0, 1]}, "array of numbers"),
    ({"boxes": [[1, 2, 3, 4]], "classes": [0, 1]}, r"shape \(1,\), one per box"),
    ({"boxes": [[1, 2, 3, 4]], "classes": [[0]]}, r"shape \(1,\), one per box"),
    ({"boxes": [[1, 2, 3, 4]], "classes": [0.5]}, "whole numbers"),
    ({"boxes": [[1, 2, 3, 4]], "classes": ["cat"]}, "whole numbers"),
    ({"boxes": [[1, 2, 3, 4]], "classes": [-1]}, ">= 0"),
    ({"boxes": [[1, 2, np.nan, 4]], "classes": [0]}, "NaN"),
    ({"boxes": [[1, 2, 3, 4], [30, 20, 10, 40]], "classes": [0, 1]}, "box 1 .* x2 <= x1"),
    ({"boxes": [[5, 5, 5, 9]], "classes": [0]}, "x2 <= x1 or y2 <= y1"),
    ({"boxes": [[0.1, 0.2, 0.5, 0.9]], "classes": [0]}, "look normalised"),
    ({"boxes": [[100, 10, 120, 20]], "classes": [0]}, "lies outside the 64x48"),
])
def test_bad_annotations_are_explained(annotation, match):
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(64))
    for training in (False, True):
        with pytest.raises(ValueError, match=match):
            pre([np.zeros((48, 64), np.uint8)], [annotation], training=training)


def test_float_whole_classes_are_accepted_and_counts_must_match():
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(64))
    _, targets = pre([np.zeros((64, 64), np.uint8)], [{"boxes": [[1, 2, 30, 40]],
                                                       "classes": [3.0]}])
    assert targets["classes"][0, 0] == 3
    with pytest.raises(ValueError, match="2 images but 1 annotations"):
        pre([np.zeros((8, 8), np.uint8)] * 2, [_annotation([], [])])


@pytest.mark.parametrize("kwargs, match", [
    ({"max_boxes": 0}, "max_boxes"),
    ({"flip_probability": 1.5}, "flip_probability"),
    ({"scale_range": 1.0}, "scale_range"),
    ({"scale_range": -0.1}, "scale_range"),
])
def test_bad_settings_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        YOLOV8ObjectDetectorPreprocessor(**kwargs)


# -- augmentation ----------------------------------------------------------------------------
def test_training_without_augmentation_equals_inference():
    pre = YOLOV8ObjectDetectorPreprocessor(flip_probability=0.0, scale_range=0.0, seed=0)
    images = list(photos().values())
    y = [_annotation([[10, 20, 200, 250]], [1])] * len(images)
    x_train, t_train = pre(images, y, training=True)
    x_infer, t_infer = pre(images, y)
    assert np.array_equal(x_train, x_infer)
    np.testing.assert_allclose(t_train["boxes"], t_infer["boxes"], atol=1e-4)
    assert np.array_equal(t_train["classes"], t_infer["classes"])


def test_flip_mirrors_image_and_boxes():
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(320), flip_probability=1.0,
                                           scale_range=0.0)
    image = skimage.data.coffee()  # 400x600
    y = [_annotation([[60, 40, 200, 300]], [0])]
    x_flip, t_flip = pre([image], y, training=True)
    x_plain, t_plain = pre([image], y)
    assert np.array_equal(x_flip[0], x_plain[0, :, ::-1])
    x1, y1, x2, y2 = t_plain["boxes"][0, 0]
    np.testing.assert_allclose(t_flip["boxes"][0, 0], [320 - x2, y1, 320 - x1, y2], atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_augmented_boxes_bound_their_white_rectangles(seed):
    """Zoom and flip move the drawn rectangles and their boxes alike (to 1.5 px)."""
    h, w = 300, 500
    boxes = [[40, 30, 140, 90], [300, 150, 460, 280], [220, 60, 250, 240], [5, 200, 80, 295]]
    image = _rectangles(h, w, boxes)
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(320), scale_range=0.5, seed=seed)
    for _ in range(3):
        x, targets = pre([image], [_annotation(boxes, [0, 1, 2, 3])], training=True)
        kept = targets["classes"][0] >= 0
        assert kept.any()
        canvas = x[0]
        for box in targets["boxes"][0, kept]:
            found = _white_extent(canvas, box)
            assert np.abs(found - box).max() <= 1.5, (found, box)
        # every white pixel belongs to some box (dropped ones only if mostly cut off)
        mask = np.zeros(canvas.shape[:2], bool)
        for x1, y1, x2, y2 in targets["boxes"][0, kept]:
            mask[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = True
        stray = (canvas[:, :, 0] > 0.5) & ~mask
        assert stray.sum() <= 0.1 * (canvas[:, :, 0] > 0.5).sum() + 40


def test_zoom_covers_the_range_and_crops_boxes():
    h, w = 320, 320
    boxes = [[0, 0, 40, 40], [140, 140, 180, 180]]  # a corner box and a centre box
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(320), flip_probability=0.0,
                                           scale_range=0.5, seed=3)
    sizes, corner_kept = [], []
    for _ in range(40):
        _, targets = pre([_rectangles(h, w, boxes)], [_annotation(boxes, [0, 1])], training=True)
        centre = targets["boxes"][0, list(targets["classes"][0]).index(1)]
        sizes.append(centre[2] - centre[0])
        corner_kept.append(0 in targets["classes"][0])
        np.testing.assert_allclose((centre[:2] + centre[2:]) / 2, 160, atol=1.0)  # zoom centre
    assert min(sizes) < 25 and max(sizes) > 55 and all(19 <= s <= 61 for s in sizes)
    assert not all(corner_kept)  # zooming in by more than 1 pushes the corner box out


def test_real_photo_content_follows_its_box():
    """The face in the astronaut photo, cut out at the augmented box, still matches."""
    image = skimage.data.astronaut()
    face = [170, 40, 290, 190]
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(320), seed=5)
    reference_crop = image[40:190, 170:290].astype(float) / 255
    compared = 0
    for _ in range(8):
        x, targets = pre([image], [_annotation([face], [0])], training=True)
        if targets["classes"][0, 0] < 0:
            continue
        x1, y1, x2, y2 = np.round(targets["boxes"][0, 0]).astype(int)
        crop = x[0, y1:y2, x1:x2]
        if x2 - x1 < 20 or abs((x2 - x1) / (y2 - y1) - 120 / 150) > 0.05:
            continue  # cut by the canvas edge: not the whole face to compare
        compared += 1
        flipped = crop[:, ::-1] if _mean_diff(crop[:, ::-1], reference_crop) < _mean_diff(
            crop, reference_crop) else crop
        assert _mean_diff(flipped, reference_crop) < 0.05
        shifted = x[0, y1 + 6:y2 + 6, x1:x2]  # 6 px off: clearly worse, so the check bites
        assert min(_mean_diff(shifted, reference_crop),
                   _mean_diff(shifted[:, ::-1], reference_crop)) > 0.08
    assert compared >= 3


def _mean_diff(crop, reference, cells=(10, 8)):
    """Mean absolute difference of the two images' means over a grid of cells
    (so the comparison does not depend on how either was resampled)."""
    def means(image):
        return np.array([[block.mean((0, 1)) for block in np.array_split(band, cells[1], 1)]
                         for band in np.array_split(image, cells[0], 0)])
    return float(np.abs(means(crop) - means(reference)).mean())


def test_seeded_augmentation_is_deterministic():
    images = list(photos().values())
    y = [_annotation([[10, 20, 200, 250], [50, 60, 90, 100]], [1, 2])] * len(images)

    def run(seed):
        pre = YOLOV8ObjectDetectorPreprocessor(seed=seed)
        return [pre(images, y, training=True) for _ in range(2)]

    first, second, other = run(7), run(7), run(8)
    for (xa, ta), (xb, tb) in zip(first, second):
        assert np.array_equal(xa, xb) and np.array_equal(ta["boxes"], tb["boxes"])
    assert not np.array_equal(first[0][0], first[1][0])  # consecutive calls differ
    assert not np.array_equal(first[0][0], other[0][0])  # other seeds differ


def test_unseeded_augmentation_follows_keras_seed():
    image = [skimage.data.chelsea()]
    keras.utils.set_random_seed(11)
    a = YOLOV8ObjectDetectorPreprocessor()(image, training=True)
    keras.utils.set_random_seed(11)
    b = YOLOV8ObjectDetectorPreprocessor()(image, training=True)
    assert np.array_equal(a, b)


def test_training_without_annotations_returns_images():
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(64), seed=0)
    out = pre([np.zeros((10, 300, 3), np.uint8), np.ones((16, 16), np.float32)], training=True)
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.float32


def test_box_candidates_rule():
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 300, 2.5]], float)
    after = np.array([[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 3, 3], [0, 0, 300, 2.5]], float)
    assert box_candidates(before, after).tolist() == [True, False, False, False]
    # 3x3 of 10x10 is 9% (dropped); 4x3 is 12% (kept); aspect 120 is dropped
    assert box_candidates(before[:1], np.array([[0, 0, 4, 3.0]])).tolist() == [True]


# -- config --------------------------------------------------------------------------------
def test_config_round_trip(tmp_path):
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter((320, 480), auto=True),
                                           max_boxes=7, flip_probability=0.25,
                                           scale_range=0.1, seed=3)
    config = json.loads(json.dumps(pre.get_config()))
    assert config == {"image_converter": {"image_size": [320, 480], "stride": 32,
                                          "pad_value": 114, "auto": True},
                      "max_boxes": 7, "flip_probability": 0.25, "scale_range": 0.1, "seed": 3}
    restored = YOLOV8ObjectDetectorPreprocessor.from_config({**config, "tokenizer": None})
    assert restored.get_config() == config
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pre))
    assert isinstance(again, YOLOV8ObjectDetectorPreprocessor) and again.get_config() == config
    image = [skimage.data.coffee()]
    y = [_annotation([[1, 2, 300, 200]], [0])]
    a, b = pre(image, y, training=True), again(image, y, training=True)
    assert np.array_equal(a[0], b[0])  # the seed travels with the config


def test_default_preprocessor():
    pre = YOLOV8ObjectDetectorPreprocessor()
    assert pre.image_converter.image_size == (640, 640) and pre.max_boxes == 100
    assert pre.flip_probability == 0.5 and pre.scale_range == 0.5 and pre.seed is None
    assert pre.tokenizer is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pre([np.zeros((8, 8), np.uint8)])


def test_inside_preprocessed_batches(tmp_path):
    """How `fit` feeds it: paths and dicts sliced through numpy object arrays."""
    import functools

    from PIL import Image

    from zoo.core.task import PreprocessedBatches

    paths = []
    for i, image in enumerate(photos().values()):
        paths.append(str(tmp_path / f"photo{i}.png"))
        Image.fromarray(image).save(paths[-1])
    y = [_annotation([[10, 20, 200, 250]], [i]) for i in range(len(paths))]
    pre = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(320), seed=0)
    data = PreprocessedBatches(functools.partial(pre, training=True), paths, y, batch_size=3)
    x, targets = data[0]
    assert x.shape == (3, 320, 320, 3) and targets["classes"][:, 0].tolist() == [0, 1, 2]
    x, targets = data[1]
    assert x.shape == (1, 320, 320, 3) and targets["classes"][0, 0] == 3
    batch, _ = pre.image_converter(np.asarray(paths))  # a 1-D array of paths is a batch
    assert batch.shape == (4, 320, 320, 3)
