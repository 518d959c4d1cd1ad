"""Build models without allocating their weights; give each weight its value once.

Loading a preset the plain way builds the model (every variable gets a random
initial value: a full copy of the weights, plus the initializers' scratch
memory), then overwrites each variable with the stored array. For
OPT-350m-size that peaks at about 1.4x the weight bytes before the file is
even opened, and the random numbers are wasted time.

`abstract_build()` builds inside a `keras.StatelessScope` that leaves new
variables *deferred* (shape and dtype known, no value), and `materialize()`
gives a deferred variable its first value straight from the file's array.
Under a `keras.distribution` scope that value goes directly into the
variable's shards (`keras.distribution.distribute_tensor`), so no device
ever holds the whole model. The same abstract build lets zoo check a layout
map against the model's real variable paths before anything is placed.

Converting a checkpoint goes one step further (`streamed_values()`): the
converter records for each deferred variable how to compute its value from
the (memory-mapped) source, and the preset writer computes, casts and writes
one weight at a time, so the converted model never exists in memory.

Keras has no public API for "create this variable from this value later":
this module is the only place that reaches into Keras' variable internals
(pinned Keras version; `tests/core/test_deferred.py` covers every backend).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import threading
from typing import Any, TypeVar

import keras
from keras.src.backend.common import global_state

from zoo.core.compiled_loop import can_shard, switched_on

T = TypeVar("T")

_PENDING = "uninitialized_variables"


_streaming = threading.local()
_LATER = "_zoo_value_later"


@contextlib.contextmanager
def streamed_values() -> Iterator[None]:
    """Inside, converters' `port_weight` does not give a deferred variable
    its value: it records how to compute it (`value_later`), and
    `zoo.core.weights_io.save_weights` computes each one as it writes it.
    The model can be written but not run: its weights stay deferred, and
    assigning one afterwards does not reach the preset (on torch and
    tensorflow the assignment goes to a placeholder): change the array before
    `port_weight` instead."""
    with switched_on(_streaming):
        yield


def streaming() -> bool:
    """Whether a `streamed_values()` block is active in this thread."""
    return getattr(_streaming, "on", False)


def value_later(variable: keras.Variable, compute: Callable[[], Any]) -> None:
    """Record `compute` (no arguments, returns the variable's array) as the
    value of the deferred `variable`, computed when the preset is written."""
    object.__setattr__(variable, _LATER, compute)


def has_later_value(variable: keras.Variable) -> bool:
    """Whether `value_later` recorded a value for `variable`."""
    return getattr(variable, _LATER, None) is not None


def later_value(variable: keras.Variable) -> Any:
    """The array recorded by `value_later` for `variable`, computed now; None
    when nothing was recorded."""
    compute = getattr(variable, _LATER, None)
    return None if compute is None else compute()


def is_deferred(variable: keras.Variable) -> bool:
    """Whether `variable` was created by `abstract_build` and has no value yet."""
    return getattr(variable, "_value", True) is None and getattr(
        variable, "_initializer", None) is not None


@contextlib.contextmanager
def _deferred_scope() -> Iterator[list]:
    before = list(global_state.get_global_attribute(_PENDING, []) or [])
    global_state.set_global_attribute(_PENDING, [])
    created: list = []
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield created
    finally:
        created.extend(global_state.get_global_attribute(_PENDING, []) or [])
        # Keras would initialize these with their random initializers when the
        # next stateless scope closes; zoo gives them their values instead.
        global_state.set_global_attribute(_PENDING, before)


def abstract_build(build: Callable[[], T]) -> tuple[T, list[keras.Variable]]:
    """Run `build()` with variable allocation deferred.

    Returns what `build` returned and the variables it created, none of
    which holds a value yet: give each one a value with `materialize` (or
    `initialize_rest` for random initial values) before using the model.
    """
    with _deferred_scope() as created:
        result = build()
    return result, created


def materialize(variable: keras.Variable, array: Any) -> None:
    """Give a deferred variable its first value (sharded when a distribution
    with a layout for it is active)."""
    distribution = keras.distribution.distribution()
    layout = distribution.get_variable_layout(variable) if distribution is not None else None
    if layout is not None and can_shard():
        from zoo.core import processes

        value = processes.place(array, layout)
    else:
        value = variable._convert_to_tensor(array, dtype=variable.dtype)
    variable._initialize(value)
    variable._initializer = None


def initialize_rest(variables: list[keras.Variable]) -> None:
    """Initialize, with their own initializers, the variables still deferred."""
    for variable in variables:
        if is_deferred(variable) and not has_later_value(variable):
            variable._deferred_initialize()



def require_values(model: Any, variables: list[keras.Variable], source: str) -> None:
    """After a conversion ported a checkpoint into `model` (built by
    `abstract_build`, which returned `variables`): raise a `ConversionError`
    naming the weights left without a value, then initialize the state that
    is not a weight (dropout seed generators)."""
    from zoo.core.errors import ConversionError

    weights = {id(v) for v in model.weights}
    left = [v.path for v in variables
            if id(v) in weights and is_deferred(v) and not has_later_value(v)]
    if left:
        raise ConversionError(
            f"{source} gave no value to {left[:5]}{' ...' if len(left) > 5 else ''}. "
            "Fix: convert the complete checkpoint (every weight file of the folder).")
    initialize_rest(variables)
