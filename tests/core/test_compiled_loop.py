"""The compiled generation loop: no recompiles, the same ids on every path,
in-place cache updates equal to `slice_update`, LoRA picked up after use."""

import keras
import numpy as np
import pytest
from keras import ops

from zoo.core.compiled_loop import compile_step, update_cache
from zoo.models import OPTBackbone, OPTCausalLM

TINY = dict(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=64, dropout=0.0)


def prompts(lengths, vocab=64):
    rng = np.random.default_rng(0)
    width = max(lengths)
    ids = np.ones((len(lengths), width), "int32")
    mask = np.zeros((len(lengths), width), "int32")
    for row, n in enumerate(lengths):
        ids[row, width - n:] = rng.integers(3, vocab, n)
        mask[row, width - n:] = 1
    return {"token_ids": ids, "padding_mask": mask}


@pytest.fixture
def lm():
    return OPTCausalLM(OPTBackbone(**TINY))


def trace_counts(model):
    return {name: step.trace_count for name, step in model.generator.compiled_steps().items()}


def test_repeated_calls_do_not_recompile(lm):
    lm.generate(prompts([5, 3]), max_new_tokens=6, stop_token_ids=())
    lm.generate(prompts([5, 3]), max_new_tokens=6, stop_token_ids=(), stream=lambda t: None)
    first = trace_counts(lm)
    assert first and all(count == 1 for count in first.values()), first
    # Same shapes, other values; a shorter prompt that falls in the same bucket.
    lm.generate(prompts([4, 4]), max_new_tokens=6, stop_token_ids=())
    lm.generate(prompts([2, 3]), max_new_tokens=6, stop_token_ids=(), stream=lambda t: None)
    assert trace_counts(lm) == first
    # A new number of tokens to generate is a new shape: one more trace each.
    lm.generate(prompts([5, 3]), max_new_tokens=7, stop_token_ids=(), stream=lambda t: None)
    assert all(count == 2 for name, count in trace_counts(lm).items()
               if not name.endswith("loop"))


def test_compiled_loop_equals_per_step_decoding(lm):
    batch = prompts([6, 2, 4])
    looped = lm.generate(batch, max_new_tokens=10, stop_token_ids=())
    stepped = lm.generate(batch, max_new_tokens=10, stop_token_ids=(), stream=lambda t: None)
    np.testing.assert_array_equal(looped, stepped)
    sampled = [lm.generate(batch, max_new_tokens=10, stop_token_ids=(), sampler="top_k", seed=7,
                           stream=stream) for stream in (None, lambda t: None)]
    np.testing.assert_array_equal(sampled[0], sampled[1])


def test_tensorflow_numpy_scalars_do_not_retrace():
    # A step called with a new NumPy scalar each time compiles once.
    variable = keras.Variable(np.ones((3,), "float32"))
    step = compile_step(lambda i: variable * ops.cast(i, "float32"), [variable])
    for i in range(5):
        np.testing.assert_allclose(ops.convert_to_numpy(step(np.int32(i))), [i] * 3)
    assert step.trace_count == 1


@pytest.mark.parametrize("start", [0, 3])
def test_update_cache_equals_slice_update(start):
    rng = np.random.default_rng(1)
    cache = rng.normal(size=(2, 3, 8, 4)).astype("float32")
    update = rng.normal(size=(2, 3, 2, 4)).astype("float32")
    expected = np.asarray(ops.convert_to_numpy(
        ops.slice_update(ops.convert_to_tensor(cache), (0, 0, start, 0), update)))
    index = ops.convert_to_tensor(start, "int32")
    if keras.backend.backend() == "torch":
        import torch

        with torch.no_grad():  # the in-place path
            out = update_cache(ops.convert_to_tensor(cache), (0, 0, index, 0), update)
    else:
        out = update_cache(ops.convert_to_tensor(cache), (0, 0, index, 0), update)
    np.testing.assert_array_equal(np.asarray(ops.convert_to_numpy(out)), expected)


def test_generate_picks_up_lora_adapters_added_after_use(lm):
    batch = prompts([4, 4])
    before = lm.generate(batch, max_new_tokens=8, stop_token_ids=())
    lm.backbone.enable_lora(rank=2)
    for variable in lm.backbone.variables:
        if "lora_kernel_b" in variable.path:
            variable.assign(np.full(variable.shape, 3.0, "float32"))
    after = lm.generate(batch, max_new_tokens=8, stop_token_ids=())
    assert not np.array_equal(before, after)
    # Equal to a fresh model built with the same weights and adapters.
    fresh = OPTCausalLM(OPTBackbone(**TINY))
    fresh.backbone.enable_lora(rank=2)
    fresh.set_weights(lm.get_weights())
    np.testing.assert_array_equal(fresh.generate(batch, max_new_tokens=8, stop_token_ids=()),
                                  after)
