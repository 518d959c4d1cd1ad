"""Activations and caches placed explicitly on the active distribution's mesh.

A layout map places weights; what a model computes from them is left to
XLA's sharding propagation unless told otherwise. `shard_activation` tells
it: sharded generation keeps each key/value cache `(batch, heads, length,
head_dim)` split by heads along the `model` axis and by rows along the
`batch` axis from the moment it is made, and the hidden states by rows.

Example:

>>> import numpy as np
>>> from zoo.layout.activations import shard_activation
>>> x = np.zeros((2, 4, 3, 8), "float32")
>>> shard_activation(x, ("batch", "model", None, None)) is x  # no distribution: unchanged
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from zoo.core import processes
from zoo.core.compiled_loop import can_shard

#: a key/value cache `(batch, heads, length, head_dim)`
CACHE_AXES = ("batch", "model", None, None)
#: hidden states `(batch, length, hidden)`
HIDDEN_AXES = ("batch", None, None)


def activation_layout(shape: Sequence[Any], axes: Sequence[str | None]) -> Any:
    """The `keras.distribution.TensorLayout` of a tensor of `shape` with its
    dimensions along the mesh axes `axes` (None: replicated), on the active
    distribution's mesh; None without a distribution or off jax. A dimension
    its axis does not divide (one row over a batch axis of 2), or an axis the
    mesh lacks or has only once, is replicated instead."""
    distribution = keras.distribution.distribution()
    if distribution is None or not can_shard():
        return None
    mesh = distribution.device_mesh
    sizes = dict(zip(mesh.axis_names, mesh.shape))
    kept = []
    for dim, axis in zip(shape, axes):
        size = sizes.get(axis, 1)
        kept.append(axis if size > 1 and dim is not None and int(dim) % size == 0 else None)
    return keras.distribution.TensorLayout(kept, mesh)


def shard_activation(x: Any, axes: Sequence[str | None]) -> Any:
    """`x` placed (eagerly) or constrained (inside a traced function) to
    `activation_layout(x.shape, axes)`; `x` itself without a distribution."""
    layout = activation_layout(tuple(x.shape), axes)
    if layout is None:
        return x
    import jax

    sharding = layout.backend_layout
    local = isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) and \
        x.is_fully_addressable
    if local and not sharding.is_fully_addressable:
        # eager, in a multi-process job: this process fills its own shards
        # (device_put would first compare the value across processes)
        return processes.place(np.asarray(x), layout)
    return keras.distribution.distribute_tensor(x, layout)
