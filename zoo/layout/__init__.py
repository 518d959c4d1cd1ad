"""Shard large models over a device mesh (Keras' distribution API, jax backend).

Example (8 devices; on CPU simulate them with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`):

    import keras, zoo.layout
    from zoo.models import OPTBackbone, OPTCausalLM

    mesh = zoo.layout.make_mesh((1, 8))                # axes ("batch", "model")
    layout_map = OPTBackbone.get_layout_map(mesh)      # checked against the model on load
    with zoo.layout.model_parallel(layout_map).scope():
        lm = OPTCausalLM.from_preset("opt_6.7b_en")    # each weight goes straight to its shards
        lm.generate("The sky is")
"""

from __future__ import annotations

from typing import Any

import keras

from zoo.core.processes import DistributionError, check_initialized
from zoo.layout.layout_map import (
    LayoutError,
    ZooLayoutMap,
    build_layout_map,
    make_mesh,
    require_jax,
    validate,
)
from zoo.layout.rules import (
    MODEL,
    ShardRule,
    column_parallel,
    embedding,
    row_parallel,
    transformer_block_rules,
)

__all__ = [
    "LayoutError", "DistributionError", "ZooLayoutMap", "build_layout_map", "make_mesh", "validate",
    "model_parallel", "check_distribution", "ShardRule", "MODEL", "column_parallel",
    "row_parallel", "embedding", "transformer_block_rules",
]


def model_parallel(layout_map: keras.distribution.LayoutMap) -> keras.distribution.ModelParallel:
    """`keras.distribution.ModelParallel` for a zoo layout map (batch axis included)."""
    require_jax("zoo.layout.model_parallel")
    batch_dim = getattr(layout_map, "batch_dim", None)
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name=batch_dim)


def check_distribution(model: Any) -> list[str]:
    """Check a just-built model against the active `keras.distribution`.

    First, whatever the distribution: `DistributionError` when the environment
    names a multi-process job (`KERAS_DISTRIBUTION_NUM_PROCESSES`) that this
    process did not join with `keras.distribution.initialize()`.
    No distribution: nothing to do. A distribution on a backend other than
    jax: `LayoutError` (Keras would build the model unsharded there). A
    layout map made for another class: `LayoutError`. A
    `ModelParallel` layout map: `validate`d against the model's variables
    and attention layers. Returns the report of large replicated variables.
    """
    check_initialized()  # a job the environment names but this process did not join
    distribution = keras.distribution.distribution()
    if distribution is None:
        return []
    owner = type(model).__name__
    require_jax(f"Building {owner} under a keras.distribution "
                f"{type(distribution).__name__}")
    layout_map = getattr(distribution, "_layout_map", None)
    if layout_map is None:  # DataParallel: every variable replicated by design
        return []
    mapped = getattr(layout_map, "owner", None)
    if mapped is not None and mapped not in {c.__name__ for c in type(model).__mro__}:
        raise LayoutError(
            f"The layout map was made for {mapped}, and {owner} is being built under it: its "
            f"rules name another model's layers. Fix: {owner}.get_layout_map(mesh) (a task "
            "uses its backbone's map).")
    attention = [layer for layer in model._flatten_layers()
                 if hasattr(layer, "num_heads") and hasattr(layer, "query_dense")]
    return validate(layout_map, model.weights, attention, getattr(layout_map, "owner", owner))
