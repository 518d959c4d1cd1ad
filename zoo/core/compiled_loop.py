"""Compile a step function for the current backend (generate, denoise).

This is the one place where zoo has backend-specific code (see DESIGN.md):
compiled steps (below), `runs_on_cpu`, `update_cache`, `backend_dataset`
(raw-input batches of varying length buckets as TensorFlow's trainer reads
them), and the named capabilities every other module asks instead of the
backend's name (`has_compiled_loops`, `has_dynamic_shapes`, `can_shard`,
`prefers_channels_first`, `has_fused_attention`, `transposed_copy`, ...;
tests/test_layering.py fails on a `keras.backend.backend()` call elsewhere).

- JAX: `jax.jit`, with the model's variables passed in as explicit state
  (a `keras.StatelessScope` maps each variable to its traced value).
- TensorFlow: `tf.function(jit_compile=True)` (or a plain graph with
  `xla=False`, for convolutional networks). NumPy arguments (also inside
  tuples and dicts) become tensors before the call: TensorFlow would otherwise treat a NumPy scalar as a
  compile-time constant and compile the function again for every value.
- PyTorch: `torch.jit.trace` of the function, again with the variables as
  explicit inputs, run under `torch.inference_mode`. Tracing records the torch
  operations once, so a call no longer pays Keras' per-layer Python overhead
  (on OPT-125m a decode step takes about half the time of the eager step;
  `torch.compile` was measured slower here: graph breaks in Keras' layer
  machinery, recompiles, a minute of compile time). A trace is kept per input
  signature (shapes and dtypes). Functions whose Python control flow depends
  on tensor values must not be traced: pass `trace=False`.

Every backend caches by input shapes and dtypes, so repeated calls with the
same shapes never recompile (tests/core/test_compiled_loop.py counts traces).

`runs_on_cpu` tells layers that pick a CPU-only algorithm (Winograd
convolutions, `zoo.layers.conv`) where a tensor's computation runs.

`keep_state_on_error` (with `remember_detached`, both applied to a model
class by `recovers_from_failed_loops`) makes Keras' JAX loops safe to fail:
Keras detaches every variable's value while `fit`, `evaluate` or `predict`
runs, and a loop that raised would otherwise leave the model without weights.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import keras
import numpy as np


class CompiledStep:
    """A compiled `fn(*tensors)`; call it like `fn`.

    Attributes:
        trace_count: how many times `fn` was traced / compiled so far (one per
            distinct input signature; a higher count means a recompile).
    """

    def __init__(self, fn: Callable[..., Any], variables: Sequence[keras.Variable],
                 trace: bool = True, xla: bool = True) -> None:
        self.fn = fn
        self.variables = list(variables)
        self.trace_count = 0
        self._backend = keras.backend.backend()
        self._traces: dict[tuple, Any] = {}
        if self._backend == "jax":
            import jax

            self._compiled = jax.jit(self._stateless)
        elif self._backend == "tensorflow":
            import tensorflow as tf

            xla = xla and xla_suits(str(v.dtype) for v in self.variables)
            self._compiled = tf.function(self._counted, jit_compile=xla,
                                         reduce_retracing=False)
        elif self._backend == "torch":
            self._trace = trace
        else:
            raise ValueError(f"Backend {self._backend!r} is not supported.")

    def _counted(self, *args: Any) -> Any:
        # Runs only while tracing (jax, tensorflow).
        self.trace_count += 1
        return self.fn(*args)

    def _stateless(self, values: Sequence[Any], *args: Any) -> Any:
        with keras.StatelessScope(state_mapping=list(zip(self.variables, values))):
            return self._counted(*args)

    def __call__(self, *args: Any) -> Any:
        if self._backend == "jax":
            return self._compiled([v.value for v in self.variables], *args)
        if self._backend == "tensorflow":
            import tensorflow as tf

            return self._compiled(*keras.tree.map_structure(
                lambda a: tf.convert_to_tensor(a)
                if isinstance(a, (np.ndarray, np.generic)) else a, args))
        return self._torch_call(args)

    def _torch_call(self, args: tuple) -> Any:
        import torch

        args = keras.tree.map_structure(
            lambda a: _torch_tensor(a) if isinstance(a, (np.ndarray, np.generic)) else a,
            tuple(args))
        with torch.inference_mode():
            if not self._trace:
                return self.fn(*args)  # eager: trace_count stays 0
            values = tuple(v.value.detach() for v in self.variables)
        key = tuple((tuple(a.shape), a.dtype) for a in keras.tree.flatten(args))
        traced = self._traces.get(key)
        if traced is None:
            # Tracing warns about every shape read as a Python int; shapes are
            # fixed per trace (the key), and value-dependent behaviour is
            # checked by the parity tests, which decode padded batches.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(self._flat, values + args, check_trace=False,
                                         strict=False)
            self._traces[key] = traced  # (tracing ran _counted once)
        with torch.no_grad():
            return traced(*values, *args)

    def _flat(self, *flat: Any) -> Any:
        n = len(self.variables)
        return self._stateless(flat[:n], *flat[n:])


#: on TensorFlow, compile steps of 16-bit models with XLA anyway (see
#: `xla_suits`); for measuring the difference
XLA_FOR_16_BIT_ON_CPU = False


def xla_suits(dtypes: Iterable[str]) -> bool:
    """Whether TensorFlow should compile with XLA a computation in `dtypes`
    (a step's variables' dtypes, or a model's compute dtype).

    False for bfloat16 or float16 on the CPU: XLA's CPU
    compiler rewrites 16-bit matrix products and convolutions to convert
    their inputs to float32 (`zoo/benchmarks/bench_bf16_ops.py` reads it from the
    optimized HLO), so they run at float32 speed plus the conversions, while
    TensorFlow's own graph kernels (oneDNN) use the CPU's bfloat16 units
    (a 4096x768x3072 product: 74 GFLOP/s under XLA, 408 as a graph; OPT-125m
    generating 32 tokens for 4 prompts: 4.7 s under XLA, 1.4 s as a graph,
    4.1 s in float32).

    >>> xla_suits(["float32", "int32"])
    True
    """
    sixteen_bit = bool(set(dtypes) & {"bfloat16", "float16"})
    return not sixteen_bit or XLA_FOR_16_BIT_ON_CPU or not runs_on_cpu(None)


def choose_keras_jit(model: keras.Model) -> None:
    """On TensorFlow, let Keras' `predict`/`fit`/`evaluate` of a model that
    computes in 16 bits on the CPU run a plain graph instead of XLA (see
    `xla_suits`): `model.supports_jit = False`, which Keras' `jit_compile="auto"`
    reads. Other backends and dtypes are left as they are."""
    if keras.backend.backend() == "tensorflow" and not xla_suits([model.compute_dtype]):
        model.supports_jit = False


def _torch_tensor(array: np.ndarray | np.generic) -> Any:
    """`torch.as_tensor`, also for numpy bfloat16 (ml_dtypes), which torch
    cannot read directly: its bits are reinterpreted, no copy or rounding."""
    import ml_dtypes
    import torch

    if np.asarray(array).dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(array).view(np.uint16)).view(torch.bfloat16)
    return torch.as_tensor(array)


def compile_step(fn: Callable[..., Any], variables: Sequence[keras.Variable],
                 trace: bool = True, xla: bool = True) -> CompiledStep:
    """Return a compiled version of `fn(*tensors)` that reads `variables`.

    Args:
        fn: a function of tensors only (no Python values that change per call).
        variables: every variable `fn` reads (usually `model.variables`).
        trace: on PyTorch, trace `fn` with `torch.jit.trace` (default) or run
            it eagerly; set False when `fn` has data-dependent Python control
            flow (a loop that stops early). Ignored on JAX and TensorFlow.
        xla: on TensorFlow, compile with XLA (default) or run a plain
            `tf.function` graph, whose CPU convolutions are oneDNN's fused
            kernels (faster for convolutional networks: YOLOv8s 151 vs 163 ms).
            Steps of 16-bit models on the CPU always run as a plain graph
            (`xla_computes_in`). Ignored on JAX (always XLA) and PyTorch.
    """
    return CompiledStep(fn, variables, trace=trace, xla=xla)


# -- Named capabilities: what zoo's layers and tasks ask of the backend. ------
# Everything outside this module asks these questions instead of comparing
# backend names (tests/test_layering.py checks it), so supporting another
# backend, or a backend that gains a feature, is a change here only.


def has_compiled_loops() -> bool:
    """Whether a whole loop (`keras.ops.while_loop` over model steps) should
    run as one compiled program: True on JAX and TensorFlow (XLA or a graph);
    False on PyTorch, where `torch.jit.trace` cannot record a loop whose
    length depends on the data, so callers run one traced step per iteration.
    """
    return keras.backend.backend() != "torch"


_STATIC_SHAPES = threading.local()


def has_dynamic_shapes() -> bool:
    """Whether a layer may produce shapes that depend on tensor values
    (packing real tokens, `zoo.layers.packing`): TensorFlow graphs and eager
    PyTorch can; JAX traces fixed shapes; and nothing does inside
    `static_shapes()`."""
    if getattr(_STATIC_SHAPES, "on", False):
        return False
    return keras.backend.backend() in ("tensorflow", "torch")


@contextlib.contextmanager
def static_shapes() -> Iterator[None]:
    """Within the block, layers trace graphs whose shapes follow only the
    inputs' shapes (no packing of real tokens): what exported graphs need,
    since ONNX and LiteRT runtimes plan memory from shapes."""
    with switched_on(_STATIC_SHAPES):
        yield


@contextlib.contextmanager
def switched_on(flag: threading.local) -> Iterator[None]:
    """`flag.on` is True in this thread within the block, as before after it."""
    before = getattr(flag, "on", False)
    flag.on = True
    try:
        yield
    finally:
        flag.on = before


def keras_jit_needs_static_shapes() -> bool:
    """Whether Keras' `jit_compile="auto"` would compile `fit`/`predict` with
    XLA, which cannot compile value-dependent shapes (TensorFlow): a model
    with such layers sets `supports_jit = False` there."""
    return keras.backend.backend() == "tensorflow"


def can_shard() -> bool:
    """Whether Keras' distribution API places variables as shards (JAX only:
    TensorFlow's is a prototype that builds every variable whole, PyTorch has
    none)."""
    return keras.backend.backend() == "jax"


def prefers_channels_first() -> bool:
    """Whether the backend's convolutions work in channels-first layout
    (PyTorch: a channels-last input is copied to reorder it)."""
    return keras.backend.backend() == "torch"


def has_fused_attention() -> bool:
    """Whether `keras.ops.dot_product_attention` runs a fused kernel that
    never holds the full score matrix (PyTorch's scaled_dot_product_attention);
    elsewhere zoo's blocked attention bounds the memory."""
    return keras.backend.backend() == "torch"


def rounds_activations_once() -> bool:
    """Whether the backend's 16-bit activation kernels compute in float32 and
    round once (PyTorch's GELU: bit-equal to a float32 GELU rounded), so
    casting around them only adds two copies of the activations."""
    return keras.backend.backend() == "torch"


def traces_tensorflow_graphs() -> bool:
    """Whether tensors are TensorFlow's, so a model traces into the graph
    every export format is written from (zoo.core.export); other backends
    export through a TensorFlow process."""
    return keras.backend.backend() == "tensorflow"


def backend_name() -> str:
    """The backend's name, for tuning tables keyed by backend (not for branching)."""
    return keras.backend.backend()


def transposed_copy(variable: keras.Variable, dtype: str, cached: tuple | None,
                    row_scale: keras.Variable | None = None,
                    column_scale: keras.Variable | None = None) -> tuple | None:
    """A contiguous transposed copy of a 2-D variable in `dtype`, for a
    product `x @ variableᵀ`, where the backend reads a transposed view
    against its layout (PyTorch: OPT-125m's LM head, 11.5 ms at batch 1 and
    25.6 ms at batch 8 with the view, 6.9 and 19.7 ms with the copy). With
    `row_scale` (a quantized variable's per-row scale) and `column_scale`
    the copy holds the dequantized values, each row and each column divided
    by its scale.

    Returns `(key, copy)`, reusing `cached` (an earlier return) while the
    variables are unchanged (torch's in-place version counter); None on
    backends whose compilers choose layouts themselves (XLA).
    """
    if keras.backend.backend() != "torch":
        return None
    import torch

    value = getattr(variable, "value", variable)  # a variable, or a tensor (int4 unpacked)
    scales = [None if s is None else s.value for s in (row_scale, column_scale)]
    key = (id(value), value._version, dtype,
           *(None if s is None else (id(s), s._version) for s in scales))
    if cached is not None and cached[0] == key:
        return cached
    with torch.no_grad():
        table = value.detach()
        row, column = (None if s is None else s.detach().to(torch.float32) for s in scales)
        if row is not None:
            table = table.to(torch.float32) / row[:, None]
        if column is not None:
            table = table.to(torch.float32) / column[None, :]
        return key, table.to(getattr(torch, dtype)).t().contiguous()


def backend_dataset(batches: keras.utils.PyDataset,
                    element_spec: Callable[[Any], Any]) -> Any:
    """`batches` in the form the current backend's `fit`/`evaluate` read, for
    batches whose shapes vary (each padded to its own length bucket).

    JAX and PyTorch read a `keras.utils.PyDataset` batch by batch at any
    shape, so `batches` comes back unchanged. TensorFlow's trainer reads
    tf.data, and Keras' PyDataset adapter fixes its element spec from the
    first two batches, so a later batch of another length bucket fails
    ("generator yielded an element of shape (8, 128) where an element of
    shape (None, 16) was expected"). There, the batches come back as a
    `tf.data.Dataset` (prefetched, cardinality `len(batches)`) whose spec is
    `element_spec(batches[0])`: dynamic axes stay `None`, so the trainer's
    `tf.function` is traced once for every bucket (XLA compiles once per
    bucket). `batches.on_epoch_end()` runs after each full pass, as Keras
    does, so batches that reshuffle keep doing so.

    Args:
        batches: a PyDataset whose items are already-standardized batches
            (`x`, `(x, y)` or `(x, y, sample_weight)` of numpy arrays).
        element_spec: maps one batch to the same structure of
            `keras.KerasTensor`s, `None` on axes that vary between batches.
    """
    if keras.backend.backend() != "tensorflow":
        return batches
    import tensorflow as tf

    if len(batches) == 0:
        raise ValueError("There is no data: got 0 batches.")
    signature = keras.tree.map_structure(
        lambda spec: tf.TensorSpec(spec.shape, spec.dtype), element_spec(batches[0]))

    def generate() -> Any:
        for index in range(len(batches)):
            yield batches[index]
        batches.on_epoch_end()

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(batches)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def runs_on_cpu(tensor: Any) -> bool:
    """Whether computation on `tensor` runs on the CPU: jax's default backend,
    TensorFlow without a visible GPU, or the torch tensor's device. False for
    other Keras backends.

    Example:

    >>> runs_on_cpu(keras.ops.zeros((2,)))  # this project's machines have no GPU
    True
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() == "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")
    if backend == "torch":
        return getattr(getattr(tensor, "device", None), "type", "cpu") == "cpu"
    return False


def update_cache(cache: Any, start: Sequence[Any], update: Any) -> Any:
    """`keras.ops.slice_update(cache, start, update)` for key/value caches.

    Inside a compiled JAX or TensorFlow loop XLA already updates the cache in
    place. Eager PyTorch (and a `torch.jit.trace` of it) would copy the whole
    cache on every call, so there, when no gradient is being recorded, the
    update is written into `cache` in place and `cache` itself is returned.
    Callers must use the returned cache and not keep the old one (which is
    what the explicit-cache contract asks anyway).

    Args:
        cache: the cache tensor.
        start: start index per axis (ints or int scalar tensors).
        update: the values to write; its shape gives the size per axis.
    """
    if keras.backend.backend() == "torch":
        import torch

        if not torch.is_grad_enabled() and not isinstance(cache, keras.KerasTensor):
            update = torch.as_tensor(update, dtype=cache.dtype)
            view = cache
            for axis, (begin, size) in enumerate(zip(start, update.shape)):
                if isinstance(begin, int) and begin == 0 and size == cache.shape[axis]:
                    continue
                if not isinstance(begin, int):
                    begin = torch.as_tensor(begin, dtype=torch.int64)
                view = view.narrow(axis, begin, size)
            view.copy_(update)
            return cache
    update = keras.ops.cast(update, cache.dtype)
    moved = [axis for axis, begin in enumerate(start) if not (isinstance(begin, int) and
                                                              begin == 0)]
    if getattr(_STATIC_SHAPES, "on", False) and len(moved) == 1:
        # Exported graphs: slices and a concatenation, which ONNX and LiteRT
        # have (TensorFlow's slice_update is an XLA-only operation).
        axis, ops = moved[0], keras.ops
        shape = list(ops.shape(cache))
        begin = ops.cast(start[axis], "int32")
        end = begin + ops.shape(update)[axis]
        head = ops.slice(cache, [0] * len(shape), shape[:axis] + [begin] + shape[axis + 1:])
        tail = ops.slice(cache, [0] * axis + [end] + [0] * (len(shape) - axis - 1),
                         shape[:axis] + [shape[axis] - end] + shape[axis + 1:])
        return ops.concatenate([head, update, tail], axis=axis)
    return keras.ops.slice_update(cache, start, update)


def remember_detached(model: keras.Model, purge: Callable[[], None]) -> None:
    """Run Keras' JAX `_purge_model_variables` (`purge`) on `model`, noting
    which values it detached, so that `keep_state_on_error` can give them
    back. A model overrides `_purge_model_variables` to call this."""
    optimizer = getattr(model, "optimizer", None)
    held = [(v, v._value) for v in (*model.variables, *model.metrics_variables,
                                     *(optimizer.variables if optimizer else ()))]
    purge()
    # (set past Keras' attribute tracking: these are plain references)
    object.__setattr__(model, "_detached_values", [
        (v, value) for v, value in held if value is not None and v._value is None])


@contextlib.contextmanager
def keep_state_on_error(model: keras.Model) -> Iterator[None]:
    """Leave `model`'s variables holding their values when a Keras loop fails.

    On JAX, Keras' `fit`, `evaluate` and `predict` detach every variable's
    value while the loop runs (`_purge_model_variables`, which the model
    overrides with `remember_detached`) and attach the
    new values when it ends. An error in between (a bad batch, inputs that do
    not fit the model) would leave a model without weights; this gives each
    variable back the values of the last completed step, or, when no step
    completed, the values it held before the call. On other backends
    variables are updated in place and this does nothing.
    """
    object.__setattr__(model, "_detached_values", [])
    try:
        yield
    except BaseException:
        if getattr(model, "_jax_state", None) and not getattr(model, "_jax_state_synced", True):
            model.jax_state_sync()
        object.__setattr__(model, "_jax_state", None)
        for variable, value in model._detached_values:
            if variable._value is None:
                variable._value = value
        raise
    finally:
        object.__setattr__(model, "_detached_values", [])


def recovers_from_failed_loops(cls: type) -> type:
    """Class decorator: `cls`'s `fit`, `evaluate` and `predict` leave the
    model usable when they raise (see `keep_state_on_error`), on JAX, where
    Keras detaches the variables' values while a loop runs.

    Example:

    >>> @recovers_from_failed_loops
    ... class Model(keras.Model):
    ...     pass
    >>> Model.predict.__name__
    'predict'
    """
    def purge(self: keras.Model, *args: Any, **kwargs: Any) -> None:
        remember_detached(self, lambda: super(cls, self)._purge_model_variables(*args, **kwargs))

    cls._purge_model_variables = purge
    for name in ("fit", "evaluate", "predict"):
        def guarded(self: keras.Model, *args: Any, _method: Callable = getattr(cls, name),
                    **kwargs: Any) -> Any:
            with keep_state_on_error(self):
                return _method(self, *args, **kwargs)

        setattr(cls, name, functools.wraps(getattr(cls, name))(guarded))
    return cls
