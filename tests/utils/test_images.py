"""`load_image` (every accepted input, every refused one) and `resize_bilinear`
(against a direct loop-based half-pixel bilinear reference)."""

import math

import numpy as np
import pytest
import skimage.data
from PIL import Image

from tests.cv.yolov8.photos import grace_hopper_path
from zoo.core.errors import ZooError
from zoo.utils.images import ImageError, load_image, resize_bilinear

pytestmark = pytest.mark.once  # numpy only: the same on every backend


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()  # 512x512 RGB uint8


# -- arrays -------------------------------------------------------------------------
def test_rgb_uint8_is_returned_as_is(astronaut):
    assert load_image(astronaut) is astronaut
    before = astronaut.copy()
    out = load_image(astronaut[:, ::-1])  # a non-contiguous view is copied, not modified
    assert out.flags.c_contiguous and np.array_equal(out, before[:, ::-1])
    assert np.array_equal(astronaut, before)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1)])
def test_grayscale_becomes_three_equal_channels(shape):
    gray = np.arange(35, dtype=np.uint8).reshape(shape)
    out = load_image(gray)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    for channel in range(3):
        assert np.array_equal(out[:, :, channel], gray.reshape(5, 7))


def test_alpha_is_dropped_not_composited():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = [10, 20, 30]
    rgba[0, 0, 3] = 0  # fully transparent pixel keeps its colour
    assert load_image(rgba).tolist() == [[[10, 20, 30]] * 2] * 2
    gray_alpha = np.stack([np.full((2, 2), 70, np.uint8), np.zeros((2, 2), np.uint8)], -1)
    assert load_image(gray_alpha).tolist() == [[[70] * 3] * 2] * 2


def test_float_images_in_unit_range_are_scaled_and_rounded():
    values = np.array([[0.0, 1.0, 0.5, 0.2, 1.0 + 1e-4, -1e-4]], np.float32)
    out = load_image(values)
    assert out[0, :, 0].tolist() == [0, 255, 128, 51, 255, 0]
    assert load_image(values.astype(np.float64)).tolist() == out.tolist()


@pytest.mark.parametrize("values, fix", [
    (np.full((3, 3, 3), 255.0), "astype(np.uint8)"),
    (np.full((3, 3, 3), -0.5), "rescale"),
    (np.full((3, 3, 3), 1000.0), "rescale"),
])
def test_float_images_outside_unit_range_are_refused(values, fix):
    with pytest.raises(ImageError, match=r"values in \[0, 1\]") as info:
        load_image(values)
    assert fix in str(info.value)


def test_nan_is_refused():
    image = np.zeros((4, 4, 3), np.float32)
    image[1, 2, 0] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        load_image(image)


@pytest.mark.parametrize("array, match", [
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((4, 0), np.uint8), "empty"),
    (np.zeros((2, 4, 4, 3), np.uint8), "one image at a time"),
    (np.zeros((7,), np.uint8), "2 or 3 dimensions"),
    (np.zeros((4, 4, 5), np.uint8), "channels"),
    (np.zeros((3, 32, 32), np.uint8), "channels-first"),
    (np.zeros((4, 4, 3), np.uint16), "must be uint8"),
    (np.zeros((4, 4, 3), np.int64), "must be uint8"),
    (np.zeros((4, 4), bool), "boolean"),
    (np.zeros((4, 4), complex), "must hold numbers"),
])
def test_malformed_arrays_are_refused(array, match):
    with pytest.raises(ImageError, match=match):
        load_image(array)


def test_other_types_are_refused_and_errors_are_value_errors():
    with pytest.raises(ImageError, match="a file path, a PIL image, or a numpy array"):
        load_image([[0, 1], [2, 3]])
    assert issubclass(ImageError, ValueError) and issubclass(ImageError, ZooError)


# -- PIL images -----------------------------------------------------------------------
def test_pil_rgb_and_modes(astronaut):
    assert np.array_equal(load_image(Image.fromarray(astronaut)), astronaut)
    gray = Image.fromarray(astronaut[:, :, 0])
    assert np.array_equal(load_image(gray), np.repeat(astronaut[:, :, :1], 3, axis=2))
    rgba = Image.fromarray(np.dstack([astronaut, np.zeros(astronaut.shape[:2], np.uint8)]))
    assert np.array_equal(load_image(rgba), astronaut)  # alpha dropped
    cmyk = Image.new("CMYK", (3, 2), (0, 255, 0, 0))  # no magenta ink: green
    assert load_image(cmyk)[0, 0].tolist() == [255, 0, 255]
    bilevel = Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1")
    assert load_image(bilevel)[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_pil_palette_with_transparency():
    palette = Image.new("P", (4, 3))
    palette.putpalette([0, 0, 0, 200, 10, 20] + [0, 0, 0] * 254)
    palette.putpixel((1, 1), 1)
    palette.info["transparency"] = 0
    out = load_image(palette)
    assert out.shape == (3, 4, 3) and out[1, 1].tolist() == [200, 10, 20]
    assert out[0, 0].tolist() == [0, 0, 0]


def test_sixteen_bit_images_are_scaled(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 300]], np.uint16)
    expected = [0, 100, 255, 1]  # round(value / 257)
    assert load_image(Image.fromarray(values))[0, :, 0].tolist() == expected
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert load_image(path)[0, :, 1].tolist() == expected
    assert load_image(Image.fromarray(values.astype(np.int32)))[0, :, 2].tolist() == expected


def test_pil_float_mode_follows_the_float_rules():
    assert load_image(Image.fromarray(np.array([[0.0, 1.0]], np.float32)))[0, :, 0].tolist() \
        == [0, 255]
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        load_image(Image.fromarray(np.array([[0.0, 200.0]], np.float32)))


def test_empty_pil_image_is_refused():
    with pytest.raises(ImageError, match="empty"):
        load_image(Image.new("RGB", (0, 3)))


# -- files ------------------------------------------------------------------------------
def test_files_png_and_jpeg(tmp_path, astronaut):
    png = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(png)
    assert np.array_equal(load_image(png), astronaut)
    assert np.array_equal(load_image(str(png)), astronaut)
    photo = load_image(grace_hopper_path())
    assert photo.shape == (600, 512, 3) and photo.dtype == np.uint8
    assert np.array_equal(photo, np.asarray(Image.open(grace_hopper_path()).convert("RGB")))


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_exif_orientation_is_applied_for_files(tmp_path, suffix):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:10, :20] = 255  # white top-left quadrant
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / f"rotated.{suffix}"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (40, 20, 3)
    expected = np.rot90(pixels, k=-1)  # clockwise: the white quadrant goes top-right
    assert np.abs(out.astype(int) - expected).max() <= (0 if suffix == "png" else 40)
    assert load_image(Image.open(path)).shape == (20, 40, 3)  # PIL images are used as given


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="No image file at"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_corrupt_files_are_explained(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    with pytest.raises(ImageError, match="Could not read .* as an image") as info:
        load_image(text)
    assert "Fix:" in str(info.value)
    data = open(grace_hopper_path(), "rb").read()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_image(truncated)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="Could not read"):
        load_image(empty)


# -- resizing ---------------------------------------------------------------------------
def _reference_resize(image, height, width):
    """Bilinear with aligned pixel centres and clamped edges, one pixel at a time."""
    in_h, in_w = image.shape[:2]
    out = np.zeros((height, width) + image.shape[2:])
    for y in range(height):
        sy = min(max((y + 0.5) * in_h / height - 0.5, 0.0), in_h - 1.0)
        y0 = int(math.floor(sy))
        y1, fy = min(y0 + 1, in_h - 1), sy - y0
        for x in range(width):
            sx = min(max((x + 0.5) * in_w / width - 0.5, 0.0), in_w - 1.0)
            x0 = int(math.floor(sx))
            x1, fx = min(x0 + 1, in_w - 1), sx - x0
            top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
            bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
            out[y, x] = top * (1 - fy) + bottom * fy
    return np.floor(out + 0.5).astype(np.uint8)


@pytest.mark.parametrize("size", [(20, 31), (90, 70), (37, 53), (18, 106), (1, 1), (5, 200)])
def test_resize_matches_direct_bilinear(size, astronaut):
    image = np.ascontiguousarray(astronaut[100:137, 200:253])  # 37x53 crop
    ours = resize_bilinear(image, size)
    reference = _reference_resize(image.astype(np.float64), *size)
    assert ours.shape == size + (3,)
    # OpenCV's fixed-point weights (1/2048) round a few values the other way
    assert np.abs(ours.astype(int) - reference).max() <= 1


def test_resize_grayscale_tiny_and_noise():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (9, 13), dtype=np.uint8)
    for size in [(40, 17), (3, 5), (9, 13)]:
        ours = resize_bilinear(noise, size)
        assert ours.shape == size
        assert np.abs(ours.astype(int) - _reference_resize(noise.astype(float), *size)).max() <= 1
    assert np.array_equal(resize_bilinear(noise, (9, 13)), noise)  # same size: unchanged
    single = np.array([[[7, 8, 9]]], np.uint8)
    assert np.array_equal(resize_bilinear(single, (4, 6)), np.broadcast_to(single, (4, 6, 3)))


def test_resize_halving_averages_two_by_two():
    image = np.array([[0, 2, 10, 20], [4, 6, 30, 41]], np.uint8)
    assert resize_bilinear(image, (1, 2)).tolist() == [[3, 25]]


def test_resize_window_is_a_crop_of_the_full_resize(astronaut):
    full = resize_bilinear(astronaut, (700, 900))
    window = resize_bilinear(astronaut, (700, 900), window=(123, 45, 300, 511))
    assert np.array_equal(window, full[123:423, 45:556])


def test_resize_refuses_bad_inputs(astronaut):
    with pytest.raises(ImageError, match="uint8"):
        resize_bilinear(astronaut.astype(np.float32), (10, 10))
    with pytest.raises(ImageError, match="at least 1x1"):
        resize_bilinear(astronaut, (0, 10))
    with pytest.raises(ImageError, match="inside"):
        resize_bilinear(astronaut, (10, 10), window=(5, 5, 10, 10))


def test_truncated_pil_image_is_explained(tmp_path):
    data = open(grace_hopper_path(), "rb").read()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    lazy = Image.open(truncated)  # opens fine; decoding fails later
    with pytest.raises(ImageError, match="could not be decoded"):
        load_image(lazy)
