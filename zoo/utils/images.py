"""Reading images into uint8 RGB arrays, and resizing them like OpenCV.

Vision models take RGB pixels. `load_image` turns what users have — a file
path, a PIL image, or a numpy array (grayscale, RGB or RGBA; uint8, or float
in [0, 1]) — into one `(height, width, 3)` uint8 RGB array, and says clearly
what is wrong when it cannot. `resize_bilinear` resizes such arrays exactly
the way `cv2.resize(..., interpolation=cv2.INTER_LINEAR)` does, in numpy.
"""

from __future__ import annotations

import os
import numpy as np
from PIL import Image, ImageOps

from zoo.core.errors import ZooError

#: float pixels may stray this far outside [0, 1] (numerical noise; under
#: half a grey level) and are clipped; further out is an error
FLOAT_TOLERANCE = 1.0 / 512

#: OpenCV's fixed-point resize weights: 11 fractional bits
_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS

_ACCEPTED = (
    "a file path, a PIL image, or a numpy array of shape (height, width), "
    "(height, width, 1), (height, width, 3) RGB or (height, width, 4) RGBA"
)


class ImageError(ZooError, ValueError):
    """Image input that cannot be used: missing, unreadable, empty or malformed."""


def load_image(image: str | os.PathLike | Image.Image | np.ndarray) -> np.ndarray:
    """Read one image as a uint8 RGB array of shape (height, width, 3).

    - A file path (str or `os.PathLike`) is decoded with Pillow (JPEG, PNG,
      BMP, GIF's first frame, TIFF, WebP, ...), and its EXIF orientation is
      applied, so the pixels come out the way viewers show the photo.
    - A PIL image is used as it is (its EXIF orientation is not applied; call
      `PIL.ImageOps.exif_transpose(image)` first if you want it).
    - A numpy array is read as RGB (not OpenCV's BGR: pass `image[..., ::-1]`
      for arrays from `cv2.imread`): (height, width) or (height, width, 1)
      grayscale, (height, width, 2) grayscale + alpha, (height, width, 3)
      RGB or (height, width, 4) RGBA. It must be uint8 (0-255), or float
      with values in [0, 1] (scaled by 255 and rounded).

    Grayscale is repeated into three channels. Alpha is dropped, not
    composited (ultralytics does the same: OpenCV's `imread` and Pillow's
    `convert("RGB")` both discard it), so fully transparent pixels show the
    colour they store. Palette, CMYK, YCbCr, 1-bit and other Pillow modes are
    converted to RGB; 16-bit images are scaled to 8 bits (`value / 257`,
    rounded).

    Args:
        image: the image, as above.

    Returns:
        a C-contiguous uint8 array of shape (height, width, 3). The input is
        never modified; when it already is such an array, it is returned
        itself, not a copy.

    Raises:
        ImageError: the file is missing or not a readable image; the array is
            empty, has the wrong shape or type, NaN values, or float values
            outside [0, 1].

    Example:

    >>> import numpy as np
    >>> gray = np.zeros((2, 3), np.uint8)
    >>> load_image(gray).shape
    (2, 3, 3)
    >>> load_image(np.full((1, 1, 4), 0.5, np.float32)).tolist()  # alpha dropped
    [[[128, 128, 128]]]
    >>> load_image(np.full((2, 2, 3), 255.0))
    Traceback (most recent call last):
    ...
    zoo.utils.images.ImageError: Float images must hold values in [0, 1], got values up to 255 ...
    """
    if isinstance(image, (str, os.PathLike)):
        return _load_file(image)
    if isinstance(image, Image.Image):
        return _from_pil(image, "The PIL image")
    if isinstance(image, np.ndarray):
        return _from_array(image)
    raise ImageError(
        f"Cannot read an image from a {type(image).__name__}. Fix: pass {_ACCEPTED}."
    )


def _load_file(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file with Pillow, applying its EXIF orientation."""
    name = os.fspath(path)
    if not os.path.exists(name):
        raise ImageError(f"No image file at {name!r}. Fix: check the path (and the working "
                         f"directory, {os.getcwd()!r}, for a relative path).")
    if os.path.isdir(name):
        raise ImageError(f"{name!r} is a directory, not an image file. Fix: pass the path of "
                         "one image, or a list of image paths.")
    try:
        with Image.open(name) as opened:
            opened.load()  # decode now: truncated or corrupt data fails here
            try:
                oriented = ImageOps.exif_transpose(opened)
            except Exception:  # a broken EXIF block must not stop the pixels loading
                oriented = opened
            return _from_pil(oriented, f"The image file {name!r}")
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"The image file {name!r} is too large to decode safely ({e}). Fix: "
                         "shrink it first, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust "
                         "the file.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # UnidentifiedImageError (not an image), "image file is truncated", bad headers
        raise ImageError(f"Could not read {name!r} as an image: {e}. Fix: check the file is "
                         "a complete image (JPEG, PNG, BMP, GIF, TIFF, WebP) that other "
                         "programs can open; re-download or re-export it if it is "
                         "truncated.") from None


def _from_pil(image: Image.Image, what: str) -> np.ndarray:
    """Convert a PIL image of any mode into uint8 RGB."""
    if image.width == 0 or image.height == 0:
        raise ImageError(f"{what} is empty ({image.width}x{image.height} pixels). "
                         "Fix: pass an image with at least one pixel.")
    try:
        return _pil_to_rgb(image)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # a lazily opened image decodes here: truncated data, or a mode with no RGB path
        raise ImageError(f"{what} (Pillow mode {image.mode!r}) could not be decoded or "
                         f"converted to RGB: {e}. Fix: check that the file it came from is "
                         "complete, or convert it yourself, e.g. image.convert('RGB').") from None


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):  # 16-bit (PNG, TIFF) grayscale
        values = np.asarray(image).astype(np.float64)
        return _from_array(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8))
    if mode == "F":  # 32-bit float grayscale: same rules as float arrays
        return _from_array(np.asarray(image))
    if mode == "RGB":
        converted = image
    elif mode in ("P", "PA"):  # palette: go through RGBA so transparency is well defined
        converted = image.convert("RGBA").convert("RGB")
    else:  # L, LA, 1, RGBA, RGBa, CMYK, YCbCr, LAB, HSV, ...
        converted = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(converted, dtype=np.uint8))


def _from_array(array: np.ndarray) -> np.ndarray:
    """Check a numpy image and convert it into uint8 RGB."""
    shape = array.shape
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim != 3:
        hint = (" Fix: pass one image at a time; a batch is a list of images."
                if array.ndim == 4 else f" Fix: pass {_ACCEPTED}.")
        raise ImageError(f"An image array must have 2 or 3 dimensions, got shape {shape}.{hint}")
    if array.size == 0:
        raise ImageError(f"The image array is empty (shape {shape}). "
                         "Fix: pass an image with at least one pixel.")
    channels = array.shape[2]
    if channels not in (1, 2, 3, 4):
        fix = ("it looks channels-first; pass np.transpose(image, (1, 2, 0))"
               if shape[0] in (1, 3, 4) else f"pass {_ACCEPTED}")
        raise ImageError(f"An image array must have 1 (gray), 2 (gray + alpha), 3 (RGB) or "
                         f"4 (RGBA) channels on its last axis, got shape {shape}. Fix: {fix}.")
    array = _to_uint8(array)
    if channels in (2, 4):
        array = array[:, :, : channels - 1]  # drop alpha
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 stays; float in [0, 1] is scaled by 255 and rounded; the rest is refused."""
    dtype = array.dtype
    if dtype == np.uint8:
        return array
    if np.issubdtype(dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError("The image array holds NaN or infinite values. Fix: clean it "
                             "first, e.g. np.nan_to_num(image), or find where they came from.")
        low, high = float(array.min()), float(array.max())
        if low < -FLOAT_TOLERANCE or high > 1.0 + FLOAT_TOLERANCE:
            fix = ("it looks like 0-255 values: pass image.astype(np.uint8) (or image / 255)"
                   if low >= -FLOAT_TOLERANCE and high <= 255.0 else
                   "rescale it, e.g. (image - image.min()) / (image.max() - image.min())")
            raise ImageError(f"Float images must hold values in [0, 1], got values up to "
                             f"{high:g} and down to {low:g}. Fix: {fix}.")
        return np.rint(np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    if dtype == np.bool_:
        raise ImageError("The image array is boolean. Fix: pass a mask as "
                         "image.astype(np.uint8) * 255.")
    if np.issubdtype(dtype, np.integer):
        raise ImageError(f"Integer images must be uint8 (0-255), got {dtype}. Fix: "
                         "image.astype(np.uint8) if the values are 0-255, or "
                         "np.rint(image / 257).astype(np.uint8) for 16-bit images.")
    raise ImageError(f"An image array must hold numbers, got dtype {dtype}. Fix: pass uint8 "
                     "values (0-255) or floats in [0, 1].")


# -- resizing ---------------------------------------------------------------------
def _linear_taps(src: int, dst: int, start: int, stop: int, clamp: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps for outputs `start..stop-1` along one axis.

    Output pixel `d` samples source coordinate `(d + 0.5) * src / dst - 0.5`
    (pixel centres aligned), computed as OpenCV does: in float32, weights
    rounded to 1/2048. Taps outside the source are clamped to its edge.

    Returns:
        int64 indices `lo`, `hi` and int32 weights `w_lo`, `w_hi` (summing
        to 2048), each of shape (stop - start,).
    """
    scale = 1.0 / (dst / src)  # OpenCV inverts its inverse scale
    position = ((np.arange(start, stop, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    lo = np.floor(position).astype(np.int64)
    frac = position - lo.astype(np.float32)  # float32, as OpenCV
    if clamp:  # horizontal taps: out-of-range positions take the edge pixel with weight 1
        outside = (lo < 0) | (lo >= src - 1)
        frac = np.where(outside, np.float32(0.0), frac)
        lo = np.clip(lo, 0, src - 1)
    w_lo = np.rint((np.float32(1.0) - frac) * np.float32(_COEF_SCALE)).astype(np.int32)
    w_hi = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int32)
    hi = np.clip(lo + 1, 0, src - 1)
    return np.clip(lo, 0, src - 1), hi, w_lo, w_hi


def resize_bilinear(image: np.ndarray, size: tuple[int, int],
                    window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Resize a uint8 image with bilinear interpolation, as OpenCV's INTER_LINEAR.

    Pixel centres are aligned (output pixel `d` samples source position
    `(d + 0.5) * src / dst - 0.5`), edges are clamped, there is no
    antialiasing when shrinking, and the result is rounded to uint8. The
    arithmetic is OpenCV's fixed point (weights in 1/2048 steps), so results
    equal `cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)`
    up to at most one grey level.

    Args:
        image: uint8 array of shape (height, width) or (height, width, channels).
        size: the output `(height, width)`, each at least 1.
        window: optionally `(top, left, height, width)`: compute only this
            part of the resized image (cheaper than resizing and cropping).
            It must lie inside `size`.

    Returns:
        uint8 array of shape `size` (or the window's size) plus the input's
        channel axis, if any.

    Example:

    >>> import numpy as np
    >>> resize_bilinear(np.array([[0, 100]], np.uint8), (1, 4))
    array([[  0,  25,  75, 100]], dtype=uint8)
    >>> resize_bilinear(np.zeros((1080, 1920, 3), np.uint8), (360, 640)).shape
    (360, 640, 3)
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0:
        raise ImageError(f"resize_bilinear takes a non-empty uint8 (height, width[, channels]) "
                         f"array, got {image.dtype} of shape {image.shape}. Fix: read it with "
                         "zoo.utils.images.load_image first.")
    out_h, out_w = (int(v) for v in size)
    if out_h < 1 or out_w < 1:
        raise ImageError(f"resize_bilinear needs an output size of at least 1x1, got {size}.")
    top, left, win_h, win_w = window if window is not None else (0, 0, out_h, out_w)
    if top < 0 or left < 0 or win_h < 1 or win_w < 1 or top + win_h > out_h or (
            left + win_w > out_w):
        raise ImageError(f"The window {window} (top, left, height, width) must lie inside "
                         f"the {out_h}x{out_w} output.")
    in_h, in_w = image.shape[:2]
    squeeze = image.ndim == 2
    src = image[:, :, None] if squeeze else image
    x_lo, x_hi, a_lo, a_hi = _linear_taps(in_w, out_w, left, left + win_w, clamp=True)
    y_lo, y_hi, b_lo, b_hi = _linear_taps(in_h, out_h, top, top + win_h, clamp=False)
    # Horizontal pass over only the source rows the vertical pass reads.
    rows, inverse = np.unique(np.concatenate([y_lo, y_hi]), return_inverse=True)
    picked = src if rows.size == in_h else src[rows]  # (rows, in_w, c)
    # uint8 * int32 weights -> int32, values up to 255 * 2048
    horizontal = np.take(picked, x_lo, axis=1) * a_lo[None, :, None]  # (rows, win_w, c)
    horizontal += np.take(picked, x_hi, axis=1) * a_hi[None, :, None]
    # Vertical pass, in OpenCV's SIMD fixed point: drop 4 bits, 16-bit products
    # keeping their high half, then round away the last 2 bits (at most 255).
    horizontal >>= 4
    upper = np.take(horizontal, inverse[:win_h], axis=0)  # (win_h, win_w, c)
    upper *= b_lo[:, None, None]
    upper >>= 16
    lower = np.take(horizontal, inverse[win_h:], axis=0)
    lower *= b_hi[:, None, None]
    lower >>= 16
    upper += lower
    upper += 2
    upper >>= 2
    out = upper.astype(np.uint8)
    return out[:, :, 0] if squeeze else out
