"""Compile a step function for the current backend (generate, denoise).

This is the one place where zoo has backend-specific code (see DESIGN.md):
JAX gets `jax.jit` with the model's variables passed in as explicit state,
TensorFlow gets `tf.function(jit_compile=True)`, PyTorch runs eagerly under
`torch.inference_mode`. Compiled functions are cached by input shapes by the
backends themselves, so repeated calls with the same shapes never recompile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras


def compile_step(fn: Callable[..., Any], variables: Sequence[keras.Variable]) -> Callable[..., Any]:
    """Return a compiled version of `fn(*tensors)` that reads `variables`.

    Args:
        fn: a function of tensors only (no Python values that change per call).
        variables: every variable `fn` reads (usually `model.variables`).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def stateless(values: list, *args: Any) -> Any:
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*args)

        jitted = jax.jit(stateless)
        return lambda *args: jitted([v.value for v in variables], *args)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, reduce_retracing=False)
    if backend == "torch":
        import torch

        def eager(*args: Any) -> Any:
            with torch.inference_mode():
                return fn(*args)

        return eager
    raise ValueError(f"Backend {backend!r} is not supported.")
