"""zoo.layers.conv: Winograd F(4x4, 3x3) equals torch's float64 conv2d (the
reference) within float32 rounding, and `Conv2D` takes it only where it should."""

import keras
import numpy as np
import pytest
import torch

from zoo.layers import conv as zoo_conv
from zoo.layers.conv import (Conv2D, im2col_applies, im2col_conv2d, winograd_applies,
                             winograd_conv2d)

IM2COL_BACKENDS = ("jax",)


def _reference(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    out = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2).double(),
                                     torch.from_numpy(kernel).permute(3, 2, 0, 1).double(),
                                     padding=kernel.shape[0] // 2)
    return out.permute(0, 2, 3, 1).numpy()


def _inputs(shape: tuple, out_channels: int, seed: int = 0, size: int = 3) -> tuple:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype("float32")
    kernel = (rng.standard_normal((size, size, shape[-1], out_channels))
              / np.sqrt(size * size * shape[-1])).astype("float32")
    return x, kernel


def _count_calls(monkeypatch, name: str) -> list:
    """Records the input shape of each call of `zoo.layers.conv.<name>` by the layer."""
    calls = []
    real = getattr(zoo_conv, name)
    monkeypatch.setattr(zoo_conv, name, lambda x, k: calls.append(tuple(x.shape)) or real(x, k))
    return calls


@pytest.fixture
def im2col_calls(monkeypatch) -> list:
    return _count_calls(monkeypatch, "im2col_conv2d")


@pytest.fixture
def winograd_calls(monkeypatch) -> list:
    return _count_calls(monkeypatch, "winograd_conv2d")


@pytest.mark.parametrize("shape,out_channels", [((2, 9, 7, 4), 5), ((1, 8, 8, 3), 2),
                                                ((1, 5, 13, 6), 6), ((3, 1, 1, 2), 3)])
def test_winograd_matches_torch(shape: tuple, out_channels: int) -> None:
    # sizes that are and are not multiples of the 4x4 output tile, in != out channels
    x, kernel = _inputs(shape, out_channels)
    got = keras.ops.convert_to_numpy(winograd_conv2d(x, kernel))
    assert got.shape == shape[:3] + (out_channels,)
    np.testing.assert_allclose(got, _reference(x, kernel), atol=2e-5)


def test_winograd_rounding_at_stable_diffusion_width() -> None:
    # 320 channels at 32x32: F(4x4, 3x3) rounds about 10x more than a direct
    # float32 convolution (rms ~3e-7) but stays far below bfloat16's
    x, kernel = _inputs((1, 32, 32, 320), 320, seed=1)
    error = keras.ops.convert_to_numpy(winograd_conv2d(x, kernel)) - _reference(x, kernel)
    assert np.sqrt(np.mean(error ** 2)) < 1e-5
    assert np.abs(error).max() < 2e-4


def test_winograd_rejects_a_kernel_of_the_wrong_shape() -> None:
    x, kernel = _inputs((1, 8, 8, 4), 2)
    with pytest.raises(ValueError, match=r"\(3, 3, 4, out_channels\)"):
        winograd_conv2d(x, kernel[:, :, :3])


def test_layer_takes_winograd_for_large_float32_inputs(winograd_calls: list) -> None:
    layer = Conv2D(320, 3, padding="same")
    x, _ = _inputs((1, 32, 32, 320), 1)  # 64 tiles, 320 channels: at torch's thresholds
    fast = keras.ops.convert_to_numpy(layer(x))
    assert winograd_calls == [(1, 32, 32, 320)]
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    bias = keras.ops.convert_to_numpy(layer.bias)
    np.testing.assert_allclose(fast, _reference(x, kernel) + bias, atol=2e-4)


def test_layer_keeps_the_direct_convolution_elsewhere(winograd_calls: list,
                                                      monkeypatch) -> None:
    x, _ = _inputs((1, 20, 20, 256), 1)  # 25 tiles < MIN_TILES
    Conv2D(256, 3, padding="same")(x)
    x, _ = _inputs((1, 32, 32, 256), 1)
    Conv2D(256, 3, strides=2, padding="same")(x)
    Conv2D(256, 3, padding="valid")(x)
    Conv2D(256, 1, padding="same")(x)
    Conv2D(64, 3, padding="same")(x)  # too few output channels
    Conv2D(256, 3, padding="same", dtype="bfloat16")(x)  # rounding: float32 only
    monkeypatch.setattr(zoo_conv, "ENABLED", False)
    Conv2D(256, 3, padding="same")(x)
    assert winograd_calls == []


def test_thresholds_and_a_compiled_step(winograd_calls: list, monkeypatch) -> None:
    from zoo.core.compiled_loop import compile_step

    monkeypatch.setattr(zoo_conv, "MIN_TILES", {})
    monkeypatch.setattr(zoo_conv, "MIN_CHANNELS", {})
    assert winograd_applies(np.zeros((1, 3, 3, 1), "float32"), (3, 3, 1, 1))
    assert not winograd_applies(np.zeros((1, 3, 3, 1), "float32"), (5, 5, 1, 1))
    layer = Conv2D(3, 3, padding="same")
    x, _ = _inputs((2, 7, 10, 5), 1, seed=2)
    layer(x)
    step = compile_step(lambda v: layer(v), layer.variables)
    got = keras.ops.convert_to_numpy(step(x))
    assert len(winograd_calls) == 2
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    np.testing.assert_allclose(got, _reference(x, kernel) + keras.ops.convert_to_numpy(layer.bias),
                               atol=2e-5)
    assert Conv2D.from_config(layer.get_config()).filters == 3


@pytest.mark.parametrize("kwargs", [{"kernel_size": 3, "strides": 2, "padding": "same"},
                                    {"kernel_size": 3, "padding": "valid"},
                                    {"kernel_size": 1, "padding": "same"},
                                    {"kernel_size": 3, "padding": "same", "dilation_rate": 2},
                                    {"kernel_size": 3, "padding": "same", "groups": 2},
                                    {"kernel_size": 4, "strides": 2, "padding": "same"}])
def test_direct_path_equals_keras_conv2d(kwargs: dict) -> None:
    # on torch this is the channels-first view of the channels-last input
    x, _ = _inputs((2, 11, 9, 4), 1, seed=3)
    ours, theirs = Conv2D(6, **kwargs), keras.layers.Conv2D(6, **kwargs)
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    got = keras.ops.convert_to_numpy(ours(x))
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(theirs(x)), atol=1e-5)


@pytest.mark.parametrize("shape,out_channels,size", [((2, 5, 6, 3), 4, 3), ((1, 4, 4, 2), 3, 1),
                                                     ((1, 7, 3, 2), 2, 5)])
def test_im2col_matches_torch(shape: tuple, out_channels: int, size: int) -> None:
    x, kernel = _inputs(shape, out_channels, size=size)
    got = keras.ops.convert_to_numpy(im2col_conv2d(x, kernel))
    np.testing.assert_allclose(got, _reference(x, kernel), atol=1e-5)
    with pytest.raises(ValueError, match="odd square"):
        im2col_conv2d(x, np.zeros((2, 2, shape[-1], 1), "float32"))


def test_layer_takes_im2col_for_small_wide_inputs(im2col_calls: list,
                                                  winograd_calls: list) -> None:
    # 8x8 with 512 channels: 16 tiles, too few for Winograd; 128 positions
    x, _ = _inputs((2, 8, 8, 512), 1, seed=4)
    layer = Conv2D(512, 3, padding="same")
    got = keras.ops.convert_to_numpy(layer(x))
    expected = _reference(x, keras.ops.convert_to_numpy(layer.kernel))
    np.testing.assert_allclose(got, expected + keras.ops.convert_to_numpy(layer.bias), atol=1e-4)
    on = keras.backend.backend() in IM2COL_BACKENDS
    assert im2col_calls == ([(2, 8, 8, 512)] if on else []) and winograd_calls == []
    assert not im2col_applies(np.zeros((2, 8, 8, 256), "float32"), (3, 3, 256, 256))
    assert not im2col_applies(np.zeros((3, 16, 16, 512), "float32"), (3, 3, 512, 512))
    bf16 = Conv2D(512, 3, padding="same", dtype="bfloat16")  # exact rounding: any dtype
    assert keras.backend.standardize_dtype(bf16(x).dtype) == "bfloat16"
    assert len(im2col_calls) == (2 if on else 0)
