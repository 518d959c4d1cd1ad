"""Layout maps from sharding rules, and their validation against a model.

Keras' `LayoutMap` quietly replicates a variable that no key matches, so a
renamed layer silently turns a sharded 66B model into 8 full copies. zoo's
layout maps are checked against the model's real variables before any
weight is placed (`from_preset` builds the model abstractly first):

- every rule must match at least one variable (rules marked optional, for
  layers only some configurations have, excepted);
- every split dimension, and every split attention's head count, must be
  divisible by the size of the mesh axis it is split over;
- large variables no rule matches are reported (a warning), since they will
  be replicated on every device.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

import keras

from zoo.core.compiled_loop import backend_name, can_shard
from zoo.core.errors import ZooError
from zoo.core.processes import process_count
from zoo.layout.rules import MODEL, ShardRule

#: unmatched variables at least this big (and >= 1% of the model) are reported
REPORT_MIN_BYTES = 1 << 20


class LayoutError(ZooError, ValueError):
    """A layout map or device mesh does not fit the model."""


class ZooLayoutMap(keras.distribution.LayoutMap):
    """A Keras `LayoutMap` built from zoo's sharding rules.

    Use it like any `LayoutMap` (`keras.distribution.ModelParallel(
    layout_map=...)`); it also remembers the rules, the owner's class name
    and the mesh axis names, which zoo uses for its checks and messages.

    Attributes:
        owner: the class the rules belong to (e.g. `"OPTBackbone"`).
        rules: the `ShardRule`s the map was built from.
        model_dim: mesh axis weights are split over.
        batch_dim: mesh axis the batch is split over.
    """

    def __init__(self, device_mesh: keras.distribution.DeviceMesh, rules: Sequence[ShardRule],
                 model_dim: str, batch_dim: str, owner: str) -> None:
        super().__init__(device_mesh)
        self.owner = owner
        self.rules = list(rules)
        self.model_dim = model_dim
        self.batch_dim = batch_dim
        self.optional_keys: set[str] = set()
        for rule in self.rules:
            self[rule.weight_key()] = self._axes(rule.weight_axes)
            if rule.optional:
                self.optional_keys.add(rule.weight_key())
            if rule.bias_axes is not None:
                self[rule.bias_key()] = self._axes(rule.bias_axes)
                self.optional_keys.add(rule.bias_key())  # a layer may have no bias

    def _axes(self, axes: tuple[str | None, ...]) -> keras.distribution.TensorLayout:
        names = tuple(self.model_dim if a == MODEL else a for a in axes)
        return keras.distribution.TensorLayout(names, self.device_mesh)

    def heads_keys(self) -> list[str]:
        """Keys whose split runs over attention heads."""
        return [r.weight_key() for r in self.rules if r.splits_heads]


def require_jax(what: str) -> None:
    """Raise a clear error unless the backend is jax."""
    if not can_shard():
        raise LayoutError(
            f"{what} runs on the jax backend only; this is {backend_name()!r}, where Keras' "
            "distribution API is missing (torch) or a prototype that builds every "
            "variable unsharded (tensorflow), and zoo never runs a model unsharded "
            "when sharding was asked for. Fix: set KERAS_BACKEND=jax before "
            "importing keras."
        )


def build_layout_map(owner: str, rules: Sequence[ShardRule],
                     device_mesh: keras.distribution.DeviceMesh, model_dim: str = "model",
                     batch_dim: str = "batch") -> ZooLayoutMap:
    """A `ZooLayoutMap` for `rules` on `device_mesh` (checks the axis names)."""
    require_jax(f"{owner}.get_layout_map")
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise LayoutError(
            f"device_mesh must be a keras.distribution.DeviceMesh, got "
            f"{type(device_mesh).__name__}. Fix: zoo.layout.make_mesh((1, 8)) or "
            "keras.distribution.DeviceMesh(shape, axis_names, devices)."
        )
    names = list(device_mesh.axis_names)
    for label, name in (("model_dim", model_dim), ("batch_dim", batch_dim)):
        if name not in names:
            raise LayoutError(
                f"{label}={name!r} is not an axis of the device mesh {names}. Fix: pass "
                f"{label}= one of {names}, or name the mesh axes accordingly."
            )
    if model_dim == batch_dim:
        raise LayoutError(f"model_dim and batch_dim are both {model_dim!r}; they must "
                          "name different mesh axes.")
    return ZooLayoutMap(device_mesh, rules, model_dim, batch_dim, owner)


def make_mesh(shape: tuple[int, ...] = (1, -1),
              axis_names: tuple[str, ...] = ("batch", "model")) -> keras.distribution.DeviceMesh:
    """A `DeviceMesh` over all local devices (one `-1` entry takes the rest).

    Example:

    >>> import keras, zoo.layout
    >>> if keras.backend.backend() == "jax":
    ...     mesh = zoo.layout.make_mesh((1, -1))
    ...     assert mesh.axis_names == ["batch", "model"]
    """
    require_jax("zoo.layout.make_mesh")
    devices = keras.distribution.list_devices()
    shape = tuple(shape)
    if len(shape) != len(axis_names):
        raise LayoutError(f"The mesh shape {shape} and axis names {axis_names} differ in length.")
    if shape.count(-1) > 1:
        raise LayoutError(f"At most one mesh dimension may be -1, got {shape}.")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if known < 1 or len(devices) % known:
            raise LayoutError(f"Cannot fill the mesh {shape} with {len(devices)} devices.")
        shape = tuple(len(devices) // known if s == -1 else s for s in shape)
    if math.prod(shape) != len(devices):
        jobs = process_count()
        seen = f"the job's {jobs} processes have" if jobs > 1 else "this process sees"
        raise LayoutError(
            f"A mesh of shape {shape} needs {math.prod(shape)} devices; {seen} "
            f"{len(devices)} ({devices[:2]}...). Fix: choose a shape whose product "
            "is the device count (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
            "simulates N devices per process)."
        )
    return keras.distribution.DeviceMesh(shape, list(axis_names), devices)


def _matches(key: str, path: str) -> bool:
    return re.fullmatch(key, path) is not None


def _axis_size(mesh: keras.distribution.DeviceMesh, name: str) -> int:
    return int(mesh.shape[list(mesh.axis_names).index(name)])


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def validate(layout_map: keras.distribution.LayoutMap, variables: Sequence[Any],
             attention_layers: Sequence[Any] = (), owner: str | None = None) -> list[str]:
    """Check `layout_map` against a model's variables; return the report.

    Args:
        layout_map: a `ZooLayoutMap` or any Keras `LayoutMap`.
        variables: the model's variables (built or deferred).
        attention_layers: the model's attention layers (with `num_heads` and
            a `query_dense` sublayer), to check that heads divide the axis.
        owner: class name used in messages.

    Returns:
        Descriptions of large variables no key matches (replicated); also
        issued as a warning.

    Raises:
        LayoutError: a key matches no variable, or a split does not divide.
    """
    owner = owner or getattr(layout_map, "owner", "the model")
    mesh = layout_map.device_mesh
    optional = getattr(layout_map, "optional_keys", set())
    paths = [v.path for v in variables]
    for key in list(layout_map):
        if key in optional or any(_matches(key, p) for p in paths):
            continue
        sample = ", ".join(repr(p) for p in paths[:4])
        raise LayoutError(
            f"The {owner} layout rule {key!r} matches no variable of the model, so the "
            f"weights it was written for would be silently replicated (layer names "
            f"drifted?). The model's variable paths look like {sample}. Fix: update the "
            "rule to the model's layer names (or remove it)."
        )
    for variable in variables:
        layout = layout_map[variable.path]
        if layout is None:
            continue
        for dim, (size, axis) in enumerate(zip(variable.shape, layout.axes)):
            if axis is None:
                continue
            n = _axis_size(mesh, axis)
            if size % n:
                raise LayoutError(
                    f"{owner}: variable {variable.path!r} has shape {tuple(variable.shape)}; "
                    f"its dimension {dim} ({size}) is split over mesh axis {axis!r} of size "
                    f"{n}, which does not divide it. Fix: a mesh whose {axis!r} axis size "
                    f"divides {size} (one of {_divisors(size)[:12]})."
                )
    heads_keys = layout_map.heads_keys() if isinstance(layout_map, ZooLayoutMap) else []
    for attention in attention_layers:
        kernel_path = attention.query_dense.kernel.path
        if not any(_matches(k, kernel_path) for k in heads_keys):
            continue
        axis = layout_map[kernel_path].axes[1]
        n = _axis_size(mesh, axis)
        if attention.num_heads % n:
            name = kernel_path.rsplit("/query/", 1)[0]
            raise LayoutError(
                f"{owner}: attention {name!r} has {attention.num_heads} heads, and the "
                f"mesh axis {axis!r} of size {n} does not divide them (each device must "
                f"hold whole heads). Fix: a {axis!r} axis size that divides "
                f"{attention.num_heads} (one of {_divisors(attention.num_heads)})."
            )
    return _report_replicated(layout_map, variables, owner)


def _report_replicated(layout_map: keras.distribution.LayoutMap, variables: Sequence[Any],
                       owner: str) -> list[str]:
    def nbytes(v: Any) -> int:
        return math.prod(v.shape) * _itemsize(v.dtype)

    total = sum(nbytes(v) for v in variables) or 1
    limit = max(REPORT_MIN_BYTES, total // 100)
    report = [f"{v.path} {tuple(v.shape)} ({nbytes(v) / 2**20:.1f} MiB)"
              for v in variables if layout_map[v.path] is None and nbytes(v) >= limit]
    if report:
        warnings.warn(
            f"{owner}: no layout rule matches these large variables, so every device "
            f"holds a full copy: {'; '.join(report)}. Add a rule if they should be split.",
            stacklevel=3,
        )
    return report


def _itemsize(dtype: Any) -> int:
    import numpy as np

    from zoo.utils.dtypes import numpy_dtype

    return int(np.dtype(numpy_dtype(keras.backend.standardize_dtype(dtype))).itemsize)
