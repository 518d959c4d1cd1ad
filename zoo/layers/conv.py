"""3x3 convolutions through Winograd's minimal filtering on the CPU.

`winograd_conv2d` computes a stride-1, "same"-padded 3x3 convolution with
Winograd's F(4x4, 3x3) algorithm: the image is cut into 6x6 tiles that
overlap by two pixels, each tile and each filter is taken into a 6x6
transform domain by small constant matrices, one batched matrix product per
transform position (36 of them) does the channel mixing, and a last constant
matrix takes each product back to a 4x4 block of output pixels. The channel
mixing costs 36 multiplies per 16 outputs where the direct convolution needs
144, so the multiply count falls 4x; the transforms are cheap additions that
XLA fuses. On this project's 2-core CPU it makes Stable Diffusion's 3x3
convolutions 1.4x to 2.5x faster (see benchmarks/README.md).

The price is rounding: in float32 the result differs from a direct
convolution by about 3e-6 (root mean square, unit-scale inputs) where the
direct one is within 3e-7 of the exact value. `Conv2D` therefore takes the
path only for float32 computation on the CPU, for large inputs where it pays
(`MIN_TILES`, `MIN_CHANNELS`, per backend), and while `ENABLED` is true. Set
`zoo.layers.conv.ENABLED = False` to get the direct convolution everywhere.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from zoo.core.compiled_loop import backend_name, prefers_channels_first, runs_on_cpu

#: take the Winograd path where `Conv2D` allows it (read at call time)
ENABLED = True
#: fewest 4x4 output tiles (batch x tile rows x tile columns) per backend,
#: and fewest input and output channels: below them the transforms and the
#: 4x larger transformed filters cost more than the saved multiplies
#: (measured on the 2-core CPU; other backends and devices are left alone)
MIN_TILES = {"tensorflow": 32, "jax": 64, "torch": 64}
MIN_CHANNELS = {"tensorflow": 128, "jax": 256, "torch": 320}

#: largest output (batch x height x width) for which a stride-1 "same" 3x3
#: convolution runs as one matrix product over the nine shifted copies of
#: its input (im2col), per backend; with few positions and many channels the
#: filters dominate and XLA's convolution on jax reaches a fraction of the
#: matrix-product speed (2.5x faster this way at 8x8x1280). tensorflow's XLA
#: convolution is already as fast there. On torch it is 3x faster for one
#: convolution and in an eager UNet call, but made the benchmarked denoising
#: step slower (10.7 s against 9.4 s), so torch keeps its convolution.
IM2COL_MAX_POSITIONS = {"jax": 512}
#: fewest input and output channels for the im2col path
IM2COL_MIN_CHANNELS = 512

# F(4x4, 3x3) on the interpolation points 0, 1, -1, 2, -2 and infinity.
_BT = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], dtype=np.float64)
_G = np.array([[1 / 4, 0, 0],
               [-1 / 6, -1 / 6, -1 / 6],
               [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6],
               [0, 0, 1]], dtype=np.float64)
_AT = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], dtype=np.float64)
# Both sides of each 2-D transform at once: row-major over the tile's pixels.
_INPUT = np.kron(_BT, _BT).astype(np.float32)    # (36, 36)
_FILTER = np.kron(_G, _G).astype(np.float32)     # (36, 9)
_OUTPUT = np.kron(_AT, _AT).astype(np.float32)   # (16, 36)


def winograd_conv2d(inputs: Any, kernel: Any) -> Any:
    """A stride-1, "same"-padded 3x3 convolution by Winograd F(4x4, 3x3).

    The same result as `keras.ops.conv(inputs, kernel, padding="same")` up to
    float32 rounding (about 1e-5 relative). Heights and widths need not be
    multiples of 4.

    Args:
        inputs: `(batch, height, width, in_channels)` with static shape.
        kernel: `(3, 3, in_channels, out_channels)`.

    Returns:
        `(batch, height, width, out_channels)`, without bias.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1, 9, 7, 4)).astype("float32")
    >>> k = rng.standard_normal((3, 3, 4, 5)).astype("float32")
    >>> out = winograd_conv2d(x, k)
    >>> ref = ops.conv(x, k, padding="same")
    >>> bool(np.allclose(ops.convert_to_numpy(out), ops.convert_to_numpy(ref), atol=1e-4))
    True
    """
    batch, height, width, in_channels = (int(d) for d in inputs.shape)
    if tuple(kernel.shape[:3]) != (3, 3, in_channels):
        raise ValueError(f"winograd_conv2d needs a (3, 3, {in_channels}, out_channels) kernel "
                         f"for inputs with {in_channels} channels; got {tuple(kernel.shape)}.")
    out_channels = int(kernel.shape[3])
    dtype = inputs.dtype
    rows, cols = -(-height // 4), -(-width // 4)
    tiles = batch * rows * cols
    # filters into the transform domain: (36, in, out)
    filters = ops.matmul(ops.convert_to_tensor(_FILTER, dtype=dtype),
                         ops.reshape(ops.cast(kernel, dtype), (9, in_channels * out_channels)))
    filters = ops.reshape(filters, (36, in_channels, out_channels))
    # the 6x6 tiles, stride 4, of the padded image: pixel (a, b) of every tile
    padded = ops.pad(inputs, [[0, 0], [1, 1 + 4 * rows - height], [1, 1 + 4 * cols - width],
                              [0, 0]])
    pixels = ops.stack([padded[:, a:a + 4 * rows:4, b:b + 4 * cols:4]
                        for a in range(6) for b in range(6)], axis=0)
    transformed = ops.matmul(ops.convert_to_tensor(_INPUT, dtype=dtype),
                             ops.reshape(pixels, (36, tiles * in_channels)))
    products = ops.matmul(ops.reshape(transformed, (36, tiles, in_channels)), filters)
    blocks = ops.matmul(ops.convert_to_tensor(_OUTPUT, dtype=dtype),
                        ops.reshape(products, (36, tiles * out_channels)))
    # (4, 4, batch, rows, cols, out) -> (batch, rows, 4, cols, 4, out)
    blocks = ops.transpose(ops.reshape(blocks, (4, 4, batch, rows, cols, out_channels)),
                           (2, 3, 0, 4, 1, 5))
    outputs = ops.reshape(blocks, (batch, 4 * rows, 4 * cols, out_channels))
    if 4 * rows != height or 4 * cols != width:
        outputs = outputs[:, :height, :width]
    return outputs


def im2col_conv2d(inputs: Any, kernel: Any) -> Any:
    """A stride-1, "same"-padded convolution with an odd square kernel as one
    matrix product: the `k * k` shifted copies of the padded input side by
    side, times the kernel read as a `(k * k * in, out)` matrix (no copy of
    the filters). Exact up to the usual float32 rounding.

    Args:
        inputs: `(batch, height, width, in_channels)` with static shape.
        kernel: `(k, k, in_channels, out_channels)`, k odd.

    Returns:
        `(batch, height, width, out_channels)`, without bias.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2, 5, 6, 3)).astype("float32")
    >>> k = rng.standard_normal((3, 3, 3, 4)).astype("float32")
    >>> out = im2col_conv2d(x, k)
    >>> ref = ops.conv(x, k, padding="same")
    >>> bool(np.allclose(ops.convert_to_numpy(out), ops.convert_to_numpy(ref), atol=1e-5))
    True
    """
    batch, height, width, in_channels = (int(d) for d in inputs.shape)
    size = int(kernel.shape[0])
    if (size % 2 == 0 or tuple(kernel.shape[:3]) != (size, size, in_channels)):
        raise ValueError(f"im2col_conv2d needs an odd square (k, k, {in_channels}, "
                         f"out_channels) kernel for inputs with {in_channels} channels; "
                         f"got {tuple(kernel.shape)}.")
    out_channels, pad = int(kernel.shape[3]), size // 2
    padded = ops.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    columns = ops.concatenate([padded[:, a:a + height, b:b + width]
                               for a in range(size) for b in range(size)], axis=-1)
    outputs = ops.matmul(ops.reshape(columns, (batch * height * width, -1)),
                         ops.reshape(ops.cast(kernel, inputs.dtype),
                                     (size * size * in_channels, out_channels)))
    return ops.reshape(outputs, (batch, height, width, out_channels))


def im2col_applies(inputs: Any, kernel_shape: tuple[int, ...]) -> bool:
    """Whether `Conv2D` takes the im2col path (stride 1, "same" padding
    assumed checked): a static 4-D input with at most the backend's
    `IM2COL_MAX_POSITIONS` output positions, an odd square kernel, at least
    `IM2COL_MIN_CHANNELS` input and output channels, on the CPU. Any float
    dtype: the product rounds like the convolution."""
    if len(inputs.shape) != 4 or kernel_shape[0] != kernel_shape[1] or kernel_shape[0] % 2 == 0:
        return False
    if any(d is None for d in inputs.shape[:3]):
        return False
    positions = int(inputs.shape[0]) * int(inputs.shape[1]) * int(inputs.shape[2])
    if positions > IM2COL_MAX_POSITIONS.get(backend_name(), 0):
        return False
    return min(kernel_shape[2], kernel_shape[3]) >= IM2COL_MIN_CHANNELS and runs_on_cpu(inputs)


def winograd_applies(inputs: Any, kernel_shape: tuple[int, ...]) -> bool:
    """Whether `Conv2D` takes the Winograd path for these inputs and this
    kernel (channels-last, stride 1, "same" padding assumed checked).

    True when `ENABLED`, the kernel is 3x3, the computation is float32 on the
    CPU, the spatial shape is static, and the input has at least `MIN_TILES`
    output tiles and both channel counts reach the backend's `MIN_CHANNELS`.
    """
    if not ENABLED or tuple(kernel_shape[:2]) != (3, 3) or len(inputs.shape) != 4:
        return False
    if keras.backend.standardize_dtype(inputs.dtype) != "float32":
        return False
    batch, height, width, _ = inputs.shape
    if batch is None or height is None or width is None:
        return False
    tiles = int(batch) * -(-int(height) // 4) * -(-int(width) // 4)
    backend = backend_name()
    if (tiles < MIN_TILES.get(backend, 0)
            or min(kernel_shape[2], kernel_shape[3]) < MIN_CHANNELS.get(backend, 0)):
        return False
    return runs_on_cpu(inputs)


@keras.saving.register_keras_serializable(package="zoo")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` that picks a faster CPU algorithm where one
    pays: large float32 3x3 convolutions through `winograd_conv2d` (see
    `winograd_applies`), small wide ones through `im2col_conv2d` (see
    `im2col_applies`), every other convolution through `keras.ops.conv`.
    Same arguments, weights and config.

    On PyTorch a channels-last convolution is handed to `keras.ops.conv` as a
    channels-first view of the same memory (torch's channels-last layout),
    which torch's convolution reads and writes in place; Keras' own
    channels-last path copies the input and the output to reorder them (a
    (1, 512, 512, 128) 3x3 convolution: 650 ms with the copies, 385 ms without).

    Example:

    >>> import numpy as np
    >>> layer = Conv2D(4, 3, padding="same")
    >>> tuple(layer(np.zeros((1, 8, 8, 2), "float32")).shape)
    (1, 8, 8, 4)
    """

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        if (self.data_format == "channels_last" and tuple(self.strides) == (1, 1)
                and tuple(self.dilation_rate) == (1, 1) and self.padding == "same"
                and self.groups == 1):
            if winograd_applies(inputs, tuple(kernel.shape)):
                return winograd_conv2d(inputs, kernel)
            if im2col_applies(inputs, tuple(kernel.shape)):
                return im2col_conv2d(inputs, kernel)
        if prefers_channels_first() and self.data_format == "channels_last":
            outputs = ops.conv(ops.transpose(inputs, (0, 3, 1, 2)), kernel,
                               strides=list(self.strides), padding=self.padding,
                               dilation_rate=self.dilation_rate, data_format="channels_first")
            return ops.transpose(outputs, (0, 2, 3, 1))
        return super().convolution_op(inputs, kernel)
