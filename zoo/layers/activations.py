"""Activations that keep their precision in 16 bits.

`keras.activations.gelu` on a bfloat16 tensor computes `0.5 * x * (1 +
erf(x / sqrt(2)))` one bfloat16 operation at a time on TensorFlow's graph
kernels, rounding after each: about 1.2x the error of rounding the exact
result once. That was enough to turn whisper_tiny_en's "The quick brown fox
jump" into "The quick roundfark stump" in bfloat16 on TensorFlow (torch
computes GELU in float32 inside its kernel, and XLA fuses the chain in
float32). `gelu` here computes in float32 and rounds once; on torch it
calls the kernel directly (the casts cost BERT-base 9% of its bfloat16
forward pass and change no bit).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from zoo.core.compiled_loop import rounds_activations_once


@keras.saving.register_keras_serializable(package="zoo")
def gelu(x: Any) -> Any:
    """The exact (erf) GELU, computed in float32 and returned in `x`'s dtype.

    Example:

    >>> import numpy as np
    >>> float(ops.convert_to_numpy(gelu(np.float32(1.0))))  # doctest: +ELLIPSIS
    0.841...
    """
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in ("bfloat16", "float16") and not rounds_activations_once():
        return ops.cast(keras.activations.gelu(ops.cast(x, "float32"), approximate=False), dtype)
    return keras.activations.gelu(x, approximate=False)


def get(activation: Any) -> Any:
    """`keras.activations.get`, except `"gelu"` (the exact GELU) is `gelu` above."""
    return gelu if activation == "gelu" else keras.activations.get(activation)
