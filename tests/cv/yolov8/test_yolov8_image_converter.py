"""`YOLOV8ImageConverter`: ultralytics' letterbox geometry on hand-computable
cases, pixels, batching, box mapping both ways, config."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from tests.cv.yolov8.photos import grace_hopper_path, photos
from zoo.cv.yolov8.yolov8_image_converter import (
    LetterboxMeta,
    YOLOV8ImageConverter,
    letterbox_meta,
)
from zoo.utils.images import ImageError, resize_bilinear

GREY = 114 / 255


def _ramp(h, w):
    """A uint8 RGB image whose pixels differ (so misplacement shows)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)


# -- geometry ---------------------------------------------------------------------------
@pytest.mark.parametrize("original, ratio, resized, pad", [
    ((720, 1280), 0.5, (360, 640), (0, 140)),  # 16:9 landscape
    ((1280, 720), 0.5, (640, 360), (140, 0)),  # portrait
    ((512, 512), 1.25, (640, 640), (0, 0)),  # scaled up
    ((16, 16), 40.0, (640, 640), (0, 0)),  # tiny
    ((50, 2000), 0.32, (16, 640), (0, 312)),  # very wide
    ((101, 200), 3.2, (323, 640), (0, 158)),  # odd padding: 158 on top, 159 below
    ((600, 512), 640 / 600, (640, 546), (47, 0)),  # grace_hopper: 94 px split 47 / 47
])
def test_letterbox_geometry(original, ratio, resized, pad):
    meta = letterbox_meta(original, (640, 640))
    assert meta == LetterboxMeta(original, (640, 640), resized, ratio, pad)


def test_auto_pads_to_a_multiple_of_the_stride():
    assert letterbox_meta((720, 1280), (640, 640), stride=32) == LetterboxMeta(
        (720, 1280), (384, 640), (360, 640), 0.5, (0, 12))
    meta = letterbox_meta((600, 512), (640, 640), stride=32)  # 94 px of width padding
    assert meta.input_size == (640, 576) and meta.pad == (15, 0)  # 30 px: 15 / 15


def test_degenerate_side_is_kept_at_one_pixel():
    meta = letterbox_meta((1, 5000), (640, 640))
    assert meta.resized_size == (1, 640) and meta.pad == (0, 319)


# -- pixels -------------------------------------------------------------------------------
def test_landscape_canvas_layout():
    image = _ramp(720, 1280)
    batch, metas = YOLOV8ImageConverter(640)([image])
    assert batch.shape == (1, 640, 640, 3) and batch.dtype == np.float32
    canvas = batch[0]
    assert np.all(canvas[:140] == np.float32(GREY)) and np.all(canvas[500:] == np.float32(GREY))
    expected = resize_bilinear(image, (360, 640)).astype(np.float32) / np.float32(255)
    assert np.array_equal(canvas[140:500], expected)
    assert metas[0].pad == (0, 140)


def test_odd_padding_puts_the_extra_row_below():
    batch, metas = YOLOV8ImageConverter(640)(np.full((101, 200, 3), 200, np.uint8))
    column = batch[0, :, 320, 0]
    assert np.all(column[:158] == np.float32(GREY)) and column[158] == np.float32(200 / 255)
    assert column[480] == np.float32(200 / 255) and np.all(column[481:] == np.float32(GREY))
    assert 640 - 481 == 159


def test_pixels_are_uint8_divided_by_255_in_float32():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    batch, _ = YOLOV8ImageConverter(32)(image)  # 16x16 -> 32x32, scaled up exactly 2x
    values = np.unique(batch)
    assert values.dtype == np.float32 and values.min() >= 0 and values.max() <= 1
    assert np.all(np.isin(values, np.arange(256, dtype=np.float32) / np.float32(255)))


def test_gray_rgba_and_float_inputs_match_rgb():
    rgb = _ramp(37, 91)
    converter = YOLOV8ImageConverter(64)
    reference, _ = converter(rgb)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])
    assert np.array_equal(converter(rgba)[0], reference)
    assert np.array_equal(converter(rgb.astype(np.float32) / 255)[0], reference)
    gray = rgb[:, :, 0]
    assert np.array_equal(converter(gray)[0], converter(np.dstack([gray] * 3))[0])


def test_tiny_and_very_wide_images():
    converter = YOLOV8ImageConverter(640)
    batch, metas = converter([np.full((16, 16, 3), 255, np.uint8), np.zeros((50, 2000), np.uint8),
                              np.zeros((2, 5000, 4), np.uint8)])
    assert batch.shape == (3, 640, 640, 3)
    assert np.all(batch[0] == 1.0)  # scaled up 40x, no padding
    assert metas[1].resized_size == (16, 640) and np.all(batch[1, 312:328] == 0)
    assert np.all(batch[1, :312] == np.float32(GREY)) and np.all(batch[1, 328:] == np.float32(GREY))
    assert metas[2].resized_size == (1, 640)


def test_auto_batch_shapes():
    converter = YOLOV8ImageConverter(640, auto=True)
    same, metas = converter([_ramp(720, 1280), _ramp(720, 1280)])
    assert same.shape == (2, 384, 640, 3) and metas[0].pad == (0, 12)
    full, _ = YOLOV8ImageConverter(640)(_ramp(720, 1280))
    assert np.array_equal(same[0, 12:372], full[0, 140:500])
    mixed, metas = converter([_ramp(720, 1280), _ramp(100, 100)])
    assert mixed.shape == (2, 640, 640, 3) and metas[0].pad == (0, 140)  # falls back to full


def test_rectangular_image_size():
    batch, metas = YOLOV8ImageConverter((384, 640))([_ramp(720, 1280), _ramp(1280, 720)])
    assert batch.shape == (2, 384, 640, 3)
    assert metas[0].ratio == 0.5 and metas[0].resized_size == (360, 640)  # width-bound
    assert metas[0].pad == (0, 12)
    assert metas[1].ratio == 0.3 and metas[1].resized_size == (384, 216)
    assert metas[1].pad == (212, 0)


def test_real_photos_paths_and_pil_agree():
    images = photos()
    batch, metas = YOLOV8ImageConverter()(list(images.values()))
    assert batch.shape == (4, 640, 640, 3)
    assert [m.original_size for m in metas] == [(512, 512), (400, 600), (300, 451), (600, 512)]
    assert [m.pad for m in metas] == [(0, 0), (0, 106), (0, 107), (47, 0)]
    by_path, _ = YOLOV8ImageConverter()(grace_hopper_path())
    by_pil, _ = YOLOV8ImageConverter()(Image.open(grace_hopper_path()))
    assert np.array_equal(by_path, batch[3:]) and np.array_equal(by_pil, batch[3:])


def test_stack_and_single_image_inputs():
    stack = np.stack([_ramp(30, 40), _ramp(30, 40)[::-1]])
    batch, metas = YOLOV8ImageConverter(64)(stack)
    assert batch.shape == (2, 64, 64, 3) and len(metas) == 2
    single, _ = YOLOV8ImageConverter(64)(stack[1])
    assert np.array_equal(single[0], batch[1])
    canvas, meta = YOLOV8ImageConverter(64).letterbox(stack[1])
    assert canvas.dtype == np.uint8 and meta == metas[1]
    assert np.array_equal(canvas.astype(np.float32) / np.float32(255), batch[1])


def test_bad_inputs_are_explained():
    with pytest.raises(ImageError, match="empty list"):
        YOLOV8ImageConverter()([])
    with pytest.raises(ImageError, match="must be uint8"):
        YOLOV8ImageConverter()([np.zeros((8, 8, 3), np.int16)])


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 600}, "multiples of stride 32.*image_size=608"),
    ({"image_size": (640, 0)}, "positive int"),
    ({"image_size": "640"}, "positive int"),
    ({"stride": 0}, "stride"),
    ({"pad_value": 300}, r"\[0, 255\]"),
])
def test_bad_settings_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        YOLOV8ImageConverter(**kwargs)


# -- boxes -------------------------------------------------------------------------------
def test_boxes_to_original_hand_computed():
    meta = letterbox_meta((720, 1280), (640, 640))
    boxes = np.array([[0, 140, 640, 500], [100, 200, 300, 400], [-10, 100, 700, 600]], float)
    expected = [[0, 0, 1280, 720], [200, 120, 600, 520], [0, 0, 1280, 720]]  # last one clipped
    out = YOLOV8ImageConverter.boxes_to_original(boxes, meta)
    assert out.dtype == np.float32 and out.tolist() == expected
    assert YOLOV8ImageConverter.boxes_to_input([[200, 120, 600, 520]], meta).tolist() == [
        [100, 200, 300, 400]]


@pytest.mark.parametrize("original, auto", [((720, 1280), False), ((720, 1280), True),
                                            ((600, 512), False), ((101, 200), True),
                                            ((16, 16), False), ((50, 2000), False)])
def test_boxes_round_trip(original, auto):
    rng = np.random.default_rng(0)
    h, w = original
    corners = rng.uniform(0, 1, (2, 50, 2)) * [w, h]
    boxes = np.concatenate([corners.min(0), corners.max(0)], 1)  # inside the image
    converter = YOLOV8ImageConverter(640, auto=auto)
    _, (meta,) = converter([np.zeros(original, np.uint8)])
    there = converter.boxes_to_input(boxes, meta)
    assert there.shape == (50, 4) and there.dtype == np.float32
    back = converter.boxes_to_original(there, meta)
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-3 * max(1, 1 / meta.ratio))


def test_box_content_stays_aligned():
    """A white rectangle letterboxed lands where boxes_to_input puts its box."""
    image = np.zeros((333, 777, 3), np.uint8)
    image[100:200, 300:500] = 255
    converter = YOLOV8ImageConverter(320)
    batch, (meta,) = converter(image)
    white = np.argwhere(batch[0, :, :, 0] > 0.5)
    found = [white[:, 1].min(), white[:, 0].min(), white[:, 1].max() + 1, white[:, 0].max() + 1]
    box = converter.boxes_to_input([[300, 100, 500, 200]], meta)[0]
    assert np.abs(np.array(found) - box).max() <= 1


def test_boxes_of_any_leading_shape():
    meta = letterbox_meta((720, 1280), (640, 640))
    out = YOLOV8ImageConverter.boxes_to_original(np.zeros((2, 3, 4)), meta)
    assert out.shape == (2, 3, 4)
    assert YOLOV8ImageConverter.boxes_to_original([], meta).shape == (0, 4)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        YOLOV8ImageConverter.boxes_to_original(np.zeros((3, 5)), meta)
    with pytest.raises(ValueError, match="must be numbers"):
        YOLOV8ImageConverter.boxes_to_input([[1, 2, 3, "x"]], meta)


# -- config ------------------------------------------------------------------------------
def test_config_round_trip():
    converter = YOLOV8ImageConverter((384, 640), stride=32, pad_value=0, auto=True)
    config = json.loads(json.dumps(converter.get_config()))
    assert config == {"image_size": [384, 640], "stride": 32, "pad_value": 0, "auto": True}
    restored = YOLOV8ImageConverter.from_config(config)
    assert restored.get_config() == config and restored.image_size == (384, 640)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(converter))
    assert isinstance(again, YOLOV8ImageConverter) and again.get_config() == config
    assert repr(restored).startswith("YOLOV8ImageConverter(image_size=[384, 640]")
