"""zoo.layers.activations.gelu: the exact GELU rounded once in 16 bits.

Computed one bfloat16 operation at a time (TensorFlow's graph kernels), GELU
rounds after every step; that changed whisper_tiny_en's bfloat16 transcript
of fox.wav on TensorFlow. The check: in bfloat16 every output equals the
float32 GELU of the same input rounded to bfloat16, on every backend."""

from __future__ import annotations

import keras
import ml_dtypes
import numpy as np
import pytest
from keras import ops

from zoo.layers import activations


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16])
def test_gelu_in_16_bits_is_the_float32_result_rounded_once(dtype):
    # (torch calls its kernel without casts: this proves it rounds once too)
    x = (np.random.default_rng(0).standard_normal(20000) * 4).astype(dtype)
    exact = ops.convert_to_numpy(keras.activations.gelu(
        ops.convert_to_tensor(x.astype("float32")), approximate=False))
    out = ops.convert_to_numpy(ops.cast(activations.gelu(ops.convert_to_tensor(x)), "float32"))
    assert ops.convert_to_tensor(x).dtype == activations.gelu(ops.convert_to_tensor(x)).dtype
    np.testing.assert_array_equal(out, exact.astype(dtype).astype("float32"))


def test_gelu_in_float32_is_keras_exact_gelu():
    x = np.linspace(-6, 6, 101, dtype="float32")
    np.testing.assert_array_equal(
        ops.convert_to_numpy(activations.gelu(x)),
        ops.convert_to_numpy(keras.activations.gelu(x, approximate=False)))
    assert activations.get("gelu") is activations.gelu
    assert activations.get("relu") is keras.activations.relu
