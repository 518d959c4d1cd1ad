"""The processes of one multi-process job (jax's distributed runtime).

Keras' distribution API spans several processes on jax: every process runs
the same script after `keras.distribution.initialize()`, holds the shards of
its own devices, and must take part in every collective. zoo uses this
module wherever a process needs a whole value (writing a preset) or where
only one process may act (writing files). With one process, every function
here is the single-process behaviour.

Example:

>>> import numpy as np
>>> process_count(), is_writer()
(1, True)
>>> host_value(np.arange(3))
array([0, 1, 2])
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from zoo.core.compiled_loop import can_shard
from zoo.core.errors import ZooError


class DistributionError(ZooError, RuntimeError):
    """A multi-process job that is set up wrongly."""


def _jax() -> Any:
    import jax

    return jax


_alone = threading.local()


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Inside, this process acts by itself: a single process (it writes its
    own files, gathers nothing). For work that each process does on its own
    turn, such as converting a checkpoint into its hub. Python's random state
    is put back afterwards: Keras draws the seeds of new layers from it, and
    the processes' models must keep drawing the same ones."""
    previous, state = getattr(_alone, "on", False), random.getstate()
    _alone.on = True
    try:
        yield
    finally:
        _alone.on = previous
        random.setstate(state)


def process_count() -> int:
    """How many processes the job has (1 unless jax's distributed runtime
    runs, or inside `alone()`)."""
    if not can_shard() or getattr(_alone, "on", False):
        return 1
    return int(_jax().process_count())


def process_index() -> int:
    """This process's id in the job (0 .. process_count() - 1; 0 inside `alone()`)."""
    if not can_shard() or getattr(_alone, "on", False):
        return 0
    return int(_jax().process_index())


def is_writer() -> bool:
    """Whether this process writes files the job shares (process 0)."""
    return process_index() == 0


def host_value(value: Any) -> np.ndarray:
    """The whole value of a tensor or variable as numpy, on every process.

    An array whose shards live on other processes' devices is gathered
    (a collective: every process must call this for the same arrays in the
    same order); anything else is read locally.
    """
    value = getattr(value, "value", value)
    if can_shard():
        jax = _jax()
        if isinstance(value, jax.Array) and not value.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return np.asarray(keras.ops.convert_to_numpy(value))


def place(array: np.ndarray, layout: Any) -> Any:
    """`array` (the same on every process) put into the shards `layout` gives
    it, each process filling only the shards on its own devices.

    `keras.distribution.distribute_tensor` (`jax.device_put`) would also do
    that, but for a sharding that spans other processes' devices it first
    checks across processes that every one passed the same value: loading an
    OPT-350m-size preset in 2 processes x 4 devices that way took 18.0 s and
    peaked at 1.23x the shards a process holds plus one tensor; filling the
    shards directly, 6.9 s and 0.97x
    (`zoo.benchmarks.bench_sharded_load --modes sharded_2_processes`).
    """
    sharding = getattr(layout, "backend_layout", layout)
    if getattr(sharding, "is_fully_addressable", True):
        return keras.distribution.distribute_tensor(array, layout)
    return _jax().make_array_from_callback(array.shape, sharding, lambda index: array[index])


def follow_gathers(values: Any) -> None:
    """Take part, on a process that does not write, in the gathers `host_value`
    makes on the writer for the same `values` (in the same order)."""
    if not can_shard() or process_count() == 1:
        return
    jax = _jax()
    for value in values:
        value = getattr(value, "value", value)
        if isinstance(value, jax.Array) and not value.is_fully_addressable:
            host_value(value)


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier called `name`."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(ok: bool, what: str) -> None:
    """Process 0 tells every process whether it can go on with `what`.

    Followers raise `DistributionError` when process 0 could not (its own
    error says why), instead of waiting for it in a collective for ever.
    """
    if process_count() == 1:
        return
    from jax.experimental import multihost_utils

    flag = multihost_utils.broadcast_one_to_all(np.int32(1 if ok else 0))
    if not int(flag):
        raise DistributionError(f"process 0 could not {what} (its error says why); "
                                f"process {process_index()} stops too.")


def check_initialized() -> None:
    """Raise if the environment names a multi-process job this process is not part of.

    `zoo launch` and cluster launchers set `KERAS_DISTRIBUTION_NUM_PROCESSES`;
    a script that builds a model without calling
    `keras.distribution.initialize()` first would silently run alone.
    """
    wanted = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "").strip()
    if not wanted or not can_shard():
        return
    try:
        expected = int(wanted)
    except ValueError:
        raise DistributionError(
            f"KERAS_DISTRIBUTION_NUM_PROCESSES={wanted!r} is not a number. Fix: set it to the "
            "number of processes of the job, or unset it.") from None
    running = int(_jax().process_count())  # (the job's, even inside `alone()`)
    if expected > 1 and running == 1:
        raise DistributionError(
            f"KERAS_DISTRIBUTION_NUM_PROCESSES={expected} but this process is not part of a "
            "multi-process job. Fix: call keras.distribution.initialize() at the start of the "
            "script, before any model is built or any jax array is made.")
    if expected != running:
        raise DistributionError(
            f"KERAS_DISTRIBUTION_NUM_PROCESSES={expected} but the job has {running} processes. "
            "Fix: start as many processes as the variable says (zoo launch --processes N).")


def local_rows(batch: int) -> slice:
    """The rows of a global batch of `batch` rows that this process feeds.

    Under a `keras.distribution` in a multi-process job, Keras assembles
    each global batch from the processes' parts: the rows the batch axis
    gives the process's own devices (half of them each for `DataParallel`
    on two processes; all of them when the mesh's batch axis is 1). One
    process, or no distribution: every row.

    Raises:
        DistributionError: `batch` does not split evenly over the batch axis.
    """
    distribution = keras.distribution.distribution()
    if distribution is None or process_count() == 1:
        return slice(0, batch)
    mesh = distribution.device_mesh
    axis = getattr(distribution, "batch_dim_name", None) or mesh.axis_names[0]
    parts = mesh.shape[list(mesh.axis_names).index(axis)]
    if batch % parts:
        raise DistributionError(
            f"A batch of {batch} rows cannot be split evenly over the {parts} devices of the "
            f"mesh's {axis!r} axis. Fix: use a batch_size, and a number of examples, that "
            f"are multiples of {parts}.")
    sharding = distribution.get_data_layout((batch,)).backend_layout
    spans = [index[0] for index in sharding.addressable_devices_indices_map((batch,)).values()]
    return slice(min(s.start or 0 for s in spans), max(batch if s.stop is None else s.stop
                                                       for s in spans))


def local_part(batch: Any) -> Any:
    """This process's rows (`local_rows`) of every array in a preprocessed
    batch `(x, y, sample_weight)`, for a loop that feeds each process its part.
    """
    sizes = {len(a) for a in keras.tree.flatten(batch) if isinstance(a, np.ndarray) and a.ndim}
    if process_count() == 1 or len(sizes) != 1:
        return batch
    rows = local_rows(sizes.pop())
    return keras.tree.map_structure(
        lambda a: a[rows] if isinstance(a, np.ndarray) and a.ndim else a, batch)


def same_seed(seed: int | None) -> int | None:
    """`seed`, or in a multi-process job where it is None, one random seed
    drawn by process 0 and shared, so every process shuffles alike."""
    if seed is not None or process_count() == 1:
        return seed
    from jax.experimental import multihost_utils

    drawn = np.int64(random.randrange(2**31))
    return int(multihost_utils.broadcast_one_to_all(drawn))


@contextlib.contextmanager
def presharded_data() -> Iterator[None]:
    """Inside, Keras takes each process's batches as its part of the global
    batch (`auto_shard_dataset` off), as `local_part` made them."""
    distribution = keras.distribution.distribution()
    if distribution is None or process_count() == 1 or not hasattr(
            distribution, "auto_shard_dataset"):
        yield
        return
    previous = distribution.auto_shard_dataset
    distribution.auto_shard_dataset = False
    try:
        yield
    finally:
        distribution.auto_shard_dataset = previous
