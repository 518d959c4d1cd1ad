"""On TensorFlow, 16-bit models run as plain graphs on the CPU
(`zoo.core.compiled_loop.xla_suits`): XLA's CPU compiler converts 16-bit
matrix products and convolutions to float32, TensorFlow's own kernels use the
CPU's bfloat16 units. Checked: the choice for compiled steps and for Keras'
predict/fit, and that a bfloat16 step computes the same as under XLA."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from zoo.core import compiled_loop
from zoo.models import BertBackbone

TINY = dict(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
            max_sequence_length=16)


def test_xla_suits_float32_everywhere_and_16_bit_off_the_cpu_only():
    assert compiled_loop.xla_suits(["float32", "int32"])
    assert not compiled_loop.xla_suits(["bfloat16", "float32"])  # this machine has no GPU
    assert not compiled_loop.xla_suits(["float16"])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's choice")
def test_tensorflow_compiles_16_bit_steps_as_graphs():
    full, half = BertBackbone(**TINY), BertBackbone(**TINY, dtype="bfloat16")
    assert full.supports_jit and not half.supports_jit  # Keras' jit_compile="auto" reads it
    inputs = {"token_ids": np.arange(8, dtype="int32")[None],
              "segment_ids": np.zeros((1, 8), "int32"), "padding_mask": np.ones((1, 8), "int32")}
    outputs = {}
    for name, model in (("float32", full), ("bfloat16", half)):
        step = compiled_loop.compile_step(lambda x, m=model: m(x), model.variables)
        assert step._compiled._jit_compile is (name == "float32")
        outputs[name] = step(inputs)
    compiled_loop.XLA_FOR_16_BIT_ON_CPU = True
    try:
        step = compiled_loop.compile_step(lambda x: half(x), half.variables)
        assert step._compiled._jit_compile is True
        under_xla = step(inputs)
    finally:
        compiled_loop.XLA_FOR_16_BIT_ON_CPU = False
    graph = ops.convert_to_numpy(ops.cast(outputs["bfloat16"]["sequence_output"], "float32"))
    xla = ops.convert_to_numpy(ops.cast(under_xla["sequence_output"], "float32"))
    np.testing.assert_allclose(graph, xla, atol=0.05)  # bfloat16 rounds at 2**-8 relative
