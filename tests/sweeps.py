"""Seeded sweeps of random reference configs, shared by every family.

A family defines a *space*: a function that draws one reference config (a
dict of the reference library's config arguments, plus a few test-only keys)
from a `numpy.random.Generator`. `sweep_params` turns it into pytest
parameters, one per config, each drawn from its own seed `(family, index)`,
so config N is the same on every machine and every run, and a failure names
the config it came from (`bert-07`).

How many configs run:

- `ZOO_SWEEP_FULL=1`: the whole sweep (`FULL_SIZE` configs per family);
- `ZOO_SWEEP=N`: the first N configs (N may exceed `FULL_SIZE`);
- neither (`make test`): a small sample, a different one per backend
  (indices `b, b + 3, b + 6, ...` with `b` the backend's rank), so one
  `make test` over three backends covers three times as many configs.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

#: configs per family in the full sweep
FULL_SIZE = 24
#: configs per family and backend inside `make test`
SAMPLE_SIZE = 2
BACKENDS = ("jax", "tensorflow", "torch")

Space = Callable[[np.random.Generator], dict[str, Any]]


def sweep_indices(full_size: int = FULL_SIZE, sample_size: int = SAMPLE_SIZE) -> list[int]:
    """Indices of the configs this run covers (see the module docstring)."""
    if os.environ.get("ZOO_SWEEP_FULL", "") not in ("", "0"):
        return list(range(full_size))
    if os.environ.get("ZOO_SWEEP"):
        return list(range(int(os.environ["ZOO_SWEEP"])))
    backend = os.environ.get("KERAS_BACKEND", "jax")
    rank = BACKENDS.index(backend) if backend in BACKENDS else 0
    return [i for i in range(rank, full_size, len(BACKENDS))][:sample_size]


def draw(family: str, index: int, space: Space) -> dict[str, Any]:
    """Config `index` of `family`: `space` called with a generator seeded by both."""
    seed = [zlib.crc32(family.encode()), index]
    config = space(np.random.default_rng(seed))
    config["seed"] = index
    return config


def sweep_params(family: str, space: Space, sample_size: int = SAMPLE_SIZE) -> list[Any]:
    """One `pytest.param(config, id="family-NN")` per config of this run;
    `sample_size`: how many run inside `make test` (per backend)."""
    chosen = sweep_indices(sample_size=sample_size)
    return [pytest.param(draw(family, i, space), id=f"{family}-{i:02d}") for i in chosen]


def choice(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    """One of `options`, as a plain Python value (numpy scalars do not serialize to JSON)."""
    value = options[int(rng.integers(len(options)))]
    return value.item() if isinstance(value, np.generic) else value


def odd_int(rng: np.random.Generator, low: int, high: int) -> int:
    """An odd integer in `[low, high]`."""
    return int(rng.integers(low // 2, (high - 1) // 2 + 1)) * 2 + 1


def not_multiple_of_8(rng: np.random.Generator, low: int, high: int) -> int:
    """An integer in `[low, high]` that 8 does not divide (unaligned widths)."""
    while True:
        value = int(rng.integers(low, high + 1))
        if value % 8:
            return value


def perturb_norms_and_biases(model: Any, names: Sequence[str] = ("layernorm", "layer_norm"),
                             scale: float = 0.1) -> None:
    """Add noise to layer-norm parameters and biases in place, as the family
    reference helpers do, so a port that drops or swaps one changes outputs
    (fresh models have unit scales and zero biases)."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            lowered = name.lower()
            if any(n in lowered for n in names) or name.endswith("bias"):
                param.add_(scale * torch.randn_like(param))


def max_abs_diff(ours: Any, expected: Any) -> float:
    """Largest absolute difference (float32), for assertion messages."""
    ours = np.asarray(ours, "float32")
    expected = np.asarray(expected, "float32")
    assert ours.shape == expected.shape, (ours.shape, expected.shape)
    return float(np.abs(ours - expected).max()) if ours.size else 0.0


def assert_close(ours: Any, expected: Any, atol: float, what: str,
                 config: dict[str, Any]) -> None:
    """`max |ours - expected| < atol`, naming the output and the config on failure."""
    diff = max_abs_diff(ours, expected)
    assert np.isfinite(diff) and diff < atol, f"{what}: max abs diff {diff:.3g} >= {atol} " \
                                              f"for config {config}"


def converted_or_refused(load: Callable[[], Any], zoo_home: Any) -> Any:
    """`load()` (a `from_preset` of a raw reference folder), or None when the
    converter refused it with its own clean `ConversionError` (not a wrapped
    crash) and left no weights in the hub."""
    from zoo.core.errors import ConversionError

    try:
        return load()
    except ConversionError as error:
        assert error.__cause__ is None, f"a converter crash, not a clean error: {error}"
        assert not (zoo_home.exists() and any(zoo_home.rglob("model.weights.h5")))
        return None
