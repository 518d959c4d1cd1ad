"""Quantization through Keras' own API, and how a preset records it.

`Backbone.quantize(mode)` (and `Task.quantize`, which quantizes its
backbone) run `keras.Model.quantize`: Keras replaces each supported layer's
float weights (Dense, EinsumDense, Embedding) by quantized ones plus scales
and computes with them. zoo adds what a model zoo needs around it:

- a preset records which layers are quantized, as Keras does for its own
  models: the backbone config's `dtype` becomes a `keras.dtype_policies.
  DTypePolicyMap` from layer paths to quantized policies (`"int8_from_float32"`),
  so `from_preset` builds those layers quantized directly (int8 variables, no
  float copy first) and loads the stored int8 weights and scales;
- `from_preset(dtype=...)` on a quantized preset keeps the quantization and
  changes the compute dtype (`"int8_from_bfloat16"`);
- a clear error for a mode Keras does not have.

Example:

>>> from zoo.models import BertBackbone
>>> backbone = BertBackbone(vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16,
...                         intermediate_dim=32, max_sequence_length=16)
>>> backbone.quantize("int8")
>>> sorted({v.dtype for v in backbone.weights if v.path.endswith("/kernel")})
['int8']
"""

from __future__ import annotations

import contextlib
import functools
import gc
import warnings
from collections.abc import Iterator
from typing import Any

import keras

from zoo.core.errors import InputError
from zoo.utils.dtypes import numpy_dtype

#: the modes Keras quantizes without calibration data
MODES = ("int8", "int4", "float8")

#: during `quantize`, at most one garbage collection per this many bytes of
#: float weights replaced (`fewer_collections`)
COLLECT_EVERY_BYTES = 256 * 2**20
#: the layer types Keras replaces weights of
QUANTIZABLE = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding)


def check_mode(mode: Any) -> None:
    """Raise an `InputError` unless `mode` is one of `MODES`."""
    if mode not in MODES:
        raise InputError(f"Unknown quantization mode {mode!r}. Fix: use one of {list(MODES)} "
                         "(Keras' modes that need no calibration data).")


def check_first(layer: keras.Layer) -> None:
    """Make `layer.quantize` check its mode with `check_mode` first.

    Keras wraps every layer's `quantize` when the layer is made (to resolve a
    config and unlock the layer's state), and that wrapper raises its own
    error for an unknown mode before zoo's method runs; this puts zoo's check
    in front of it."""
    keras_quantize = layer.__dict__.get("quantize")
    if keras_quantize is None:
        return

    @functools.wraps(type(layer).quantize)
    def quantize(mode: Any = None, activations: bool = False, config: Any = None,
                 **kwargs: Any) -> Any:
        check_mode(mode)
        # (Keras' wrapper would replace a missing config by its default)
        return keras_quantize(mode, activations=activations,
                              config=int8_config(mode, activations, config), **kwargs)

    object.__setattr__(layer, "quantize", quantize)


def int8_config(mode: str, activations: bool, config: Any) -> Any:
    """`config`, or for `"int8"` without one, Keras' int8 config that rounds
    the activations only when `activations`."""
    if mode != "int8" or config is not None:
        return config
    return keras.quantizers.Int8QuantizationConfig(
        activation_quantizer="default" if activations else None)


def quantize(model: keras.Model, mode: str, activations: bool = False,
             parts: tuple[str, ...] = (), **kwargs: Any) -> None:
    """`model.quantize(mode)` through `keras.Model.quantize`, checked.

    In `"int8"` mode the weights are int8 and, by default, the activations
    stay in the compute dtype (`activations=False`: Keras'
    `Int8QuantizationConfig(activation_quantizer=None)`): Keras' default also
    rounds each layer's inputs to int8 per token, which on all_minilm_l6_v2
    brings a 4-token sentence's embedding to cosine 0.988 of float32 (weights
    only: 0.998; tests/nlp/bert/test_bert_precision_gates.py). `activations=True`
    asks for Keras' default. The layers quantized are Keras' `filters`, or
    by default `quantized_by_default` under the path prefixes `parts`.

    Raises:
        InputError: `mode` is not one of `MODES`, the model is not built, or
            it has no layer Keras quantizes (YOLOv8: only convolutions).
    """
    check_mode(mode)
    if not model.built:
        raise InputError("quantize() needs a built model. Fix: call the model once, or load "
                         "it with from_preset().")
    kwargs["config"] = int8_config(mode, activations, kwargs.get("config"))
    if kwargs.get("filters") is None:  # Keras' filters, else zoo's default
        kwargs["filters"] = functools.partial(quantized_by_default, parts=parts)
    with warnings.catch_warnings(), fewer_collections(kwargs["filters"]) as filters:
        # Keras warns once for every layer it has no quantized form of (layer
        # norms, dropout, positions): those stay as they are, by design.
        warnings.filterwarnings("ignore", message=".*does not have a `quantize` method.*")
        keras.Model.quantize(model, mode, **{**kwargs, "filters": filters})
    if not quantized_layers(model):
        # (nothing was changed)
        raise InputError(
            f"{type(model).__name__} has no layer that Keras quantizes in {mode!r} mode: Keras "
            f"{keras.__version__} quantizes Dense, EinsumDense and Embedding layers, not "
            "convolutions. Fix: run it in float32 or bfloat16 (from_preset(..., "
            "dtype='bfloat16')).")


@contextlib.contextmanager
def fewer_collections(filters: Any) -> Iterator[Any]:
    """`filters`, counting the bytes of the layers it picks, while Keras'
    per-variable `gc.collect()` runs only once `COLLECT_EVERY_BYTES` of them
    have been replaced (and once at the end).

    Keras' `Layer.__delattr__` runs a full garbage collection for every float
    variable a quantized layer drops, so that its buffer is freed at once: 65
    collections of about 0.2 s each made up 14.6 of the 16.3 s that
    whisper_tiny_en's `quantize("int8")` took on tensorflow. Collecting per
    256 MiB keeps the memory held back bounded and the time negligible.
    Filters that are not callables (Keras' regex forms) are left to Keras'
    own behaviour. `gc.collect` is the process's: another thread collecting
    during `quantize` is throttled the same way.
    """
    if not callable(filters):
        yield filters
        return
    pending = [0]
    collect = gc.collect

    def counting(layer: keras.Layer) -> bool:
        chosen = bool(filters(layer))
        if chosen and isinstance(layer, QUANTIZABLE):  # (not the blocks holding them)
            pending[0] += sum(_bytes(v) for v in layer.weights)
        return chosen

    def throttled(*args: Any, **kwargs: Any) -> int:
        if pending[0] < COLLECT_EVERY_BYTES:
            return 0
        pending[0] = 0
        return collect(*args, **kwargs)

    gc.collect = throttled
    try:
        yield counting
    finally:
        gc.collect = collect
        collect()


def _bytes(variable: Any) -> int:
    """The bytes `variable` holds, from its shape and dtype."""
    count = 1
    for dim in variable.shape:
        count *= int(dim)
    return count * numpy_dtype(keras.backend.standardize_dtype(variable.dtype)).itemsize


def quantized_by_default(layer: keras.Layer, parts: tuple[str, ...] = ()) -> bool:
    """Whether `Backbone.quantize` quantizes `layer` unless told otherwise:
    a layer under one of the path prefixes `parts` (all when empty), and not
    a plain `keras.layers.Embedding`: zoo's token tables are
    `zoo.layers.embeddings.TokenEmbedding`, the plain ones are position and
    segment tables, small and added to every token, which stay float (as in
    CTranslate2's int8 models)."""
    if type(layer) is keras.layers.Embedding:
        return False
    return not parts or (layer.path or "").startswith(parts)


def quantized_layers(model: keras.Layer) -> dict[str, Any]:
    """`{layer path: its quantized dtype policy}` for every quantized layer."""
    return {layer.path: layer.dtype_policy for layer in model._flatten_layers()
            if layer is not model and getattr(layer, "quantization_mode", None)}


def quantizes_activations(model: keras.Layer) -> bool:
    """Whether any quantized layer of `model` rounds its inputs too."""
    return any(getattr(layer, "inputs_quantizer", None) is not None
               for layer in model._flatten_layers()
               if layer is not model and getattr(layer, "quantization_mode", None))


def keep_activations(model: keras.Layer) -> None:
    """Make `model`'s quantized layers (built from a preset's policies, which
    do not say) compute on unrounded inputs: weight-only quantization."""
    for layer in model._flatten_layers():
        if layer is not model and getattr(layer, "inputs_quantizer", None) is not None:
            object.__setattr__(layer, "inputs_quantizer", None)


def config_entries(model: keras.Layer, policy: Any) -> dict[str, Any]:
    """The config entries that record `model`'s dtype: `"dtype"` (serialized
    `config_policy`), and for a quantized model `"quantized_activations"`."""
    entries = {"dtype": keras.dtype_policies.serialize(config_policy(model, policy))}
    if quantized_layers(model):
        entries["quantized_activations"] = quantizes_activations(model)
    return entries


def config_policy(model: keras.Layer, policy: Any) -> Any:
    """The dtype to record in `model`'s config: `policy`, or, when some of
    its layers are quantized, a `DTypePolicyMap` (default `policy`) that
    names them."""
    layers = quantized_layers(model)
    if not layers:
        return policy
    policy_map = keras.dtype_policies.DTypePolicyMap(default_policy=policy)
    for path, layer_policy in layers.items():
        policy_map[path] = layer_policy
    return policy_map


def base_policy(dtype: Any) -> Any:
    """The plain policy of a dtype that may be a `DTypePolicyMap` (its default)."""
    policy = keras.dtype_policies.get(dtype)
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
        return policy.default_policy
    return policy


def with_compute_dtype(recorded: Any, dtype: Any) -> Any:
    """The recorded config dtype with its compute dtype changed to `dtype`,
    keeping any quantized layers quantized (`int8_from_float32` becomes
    `int8_from_bfloat16`). A plain recorded policy is simply replaced."""
    if isinstance(recorded, dict):
        recorded = keras.dtype_policies.deserialize(recorded)
    if not isinstance(recorded, keras.dtype_policies.DTypePolicyMap):
        return dtype
    name = keras.dtype_policies.get(dtype).name
    policy_map = keras.dtype_policies.DTypePolicyMap(default_policy=name)
    for path in recorded:
        mode = recorded[path].quantization_mode
        policy_map[path] = f"{mode}_from_{name}" if mode else name
    return policy_map
