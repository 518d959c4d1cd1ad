"""zoo.layers.attention.dot_product_attention: the query-blocked path equals
torch's scaled_dot_product_attention (the reference) on every backend."""

import keras
import numpy as np
import pytest
import torch

from zoo.layers import attention
from zoo.layers.attention import dot_product_attention

BLOCKED_BACKENDS = ("jax", "tensorflow")


def _reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float | None,
               mask: np.ndarray | None = None) -> np.ndarray:
    # torch wants (batch, heads, length, dim)
    t = lambda x: torch.from_numpy(x).transpose(1, 2).double()  # noqa: E731
    out = torch.nn.functional.scaled_dot_product_attention(
        t(q), t(k), t(v), attn_mask=None if mask is None else torch.from_numpy(mask),
        scale=scale)
    return out.transpose(1, 2).numpy()


def _inputs(q_len: int, kv_len: int, value_dim: int = 5, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((2, q_len, 3, 4)).astype("float32")
    k = rng.standard_normal((2, kv_len, 3, 4)).astype("float32")
    v = rng.standard_normal((2, kv_len, 3, value_dim)).astype("float32")
    return q, k, v


@pytest.fixture
def map_calls(monkeypatch) -> list:
    """Counts `keras.ops.map` calls (the blocked path maps over heads)."""
    calls = []
    real = keras.ops.map

    def counting(f, xs):
        calls.append(1)
        return real(f, xs)

    monkeypatch.setattr(attention.ops, "map", counting)
    return calls


@pytest.mark.parametrize("q_len,kv_len,block", [(10, 10, 3), (10, 7, 4), (8, 13, 8), (9, 6, 32)])
def test_blocked_attention_matches_torch(q_len: int, kv_len: int, block: int,
                                         map_calls: list) -> None:
    # partial last blocks, cross-attention lengths, value_dim != head_dim, one block
    q, k, v = _inputs(q_len, kv_len)
    got = keras.ops.convert_to_numpy(
        dot_product_attention(q, k, v, scale=0.3, block_size=block, min_scores=0))
    np.testing.assert_allclose(got, _reference(q, k, v, 0.3), atol=1e-5)
    assert len(map_calls) == (1 if keras.backend.backend() in BLOCKED_BACKENDS else 0)


def test_default_scale_short_inputs_and_masks_use_the_plain_op(map_calls: list) -> None:
    q, k, v = _inputs(6, 6, value_dim=4)
    got = keras.ops.convert_to_numpy(dot_product_attention(q, k, v))  # below min_scores
    np.testing.assert_allclose(got, _reference(q, k, v, None), atol=1e-5)
    mask = np.tril(np.ones((6, 6), bool))
    got = keras.ops.convert_to_numpy(dot_product_attention(q, k, v, mask=mask, min_scores=0))
    np.testing.assert_allclose(got, _reference(q, k, v, None, mask), atol=1e-5)
    assert map_calls == []


def test_blocked_attention_inside_a_compiled_step_and_in_bfloat16(map_calls: list) -> None:
    from zoo.core.compiled_loop import compile_step

    q, k, v = _inputs(12, 12, seed=1)
    step = compile_step(lambda a, b, c: dot_product_attention(a, b, c, block_size=5,
                                                              min_scores=0), [])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(step(q, k, v)),
                               _reference(q, k, v, None), atol=1e-5)
    cast = lambda x: keras.ops.cast(x, "bfloat16")  # noqa: E731
    got = dot_product_attention(cast(q), cast(k), cast(v), block_size=5, min_scores=0)
    assert keras.backend.standardize_dtype(got.dtype) == "bfloat16"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(got, "float32")),
                               _reference(q, k, v, None), atol=5e-2)
    assert len(map_calls) == (2 if keras.backend.backend() in BLOCKED_BACKENDS else 0)
