"""The shared test harness every family's tests reuse.

`check_backbone` runs the contract every Backbone keeps: config round trip,
Keras serialization, forward shapes, variable sequence length, preset
save/load with identical outputs, base-class loading, and a bfloat16 load.
`check_task` does the same for a Task on raw inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.models import Backbone, Task


def to_numpy(tree: Any) -> Any:
    """Convert backend tensors (or dicts of them) to float32 numpy."""
    if isinstance(tree, dict):
        return {k: to_numpy(v) for k, v in tree.items()}
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(tree, "float32")))


def assert_trees_close(a: Any, b: Any, atol: float, rtol: float = 0.0) -> None:
    a, b = to_numpy(a), to_numpy(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=rtol, err_msg=k)
    else:
        np.testing.assert_allclose(a, b, atol=atol, rtol=rtol)


def as_dict(out: Any) -> dict:
    """Backbones return a dict of outputs or a single tensor (named "output")."""
    return out if isinstance(out, dict) else {"output": out}


def check_backbone(
    cls: type[Backbone],
    init_kwargs: dict,
    make_inputs: Callable[[int, int], dict],
    expected_shapes: Callable[[int, int], dict],
    tmp_path: Path,
    bfloat16_tolerance: float = 0.1,
) -> Backbone:
    """Run the backbone contract; `make_inputs(batch, length)` builds inputs and
    `expected_shapes(batch, length)` gives the output shapes by name (a
    single-tensor output is named "output")."""
    backbone = cls(**init_kwargs)

    # Config round trip: from_config(get_config()) rebuilds the same config.
    config = backbone.get_config()
    assert cls.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backbone))
    assert type(restored) is cls and restored.get_config() == config

    # Forward pass at several sequence lengths (variable length).
    for batch, length in ((2, 7), (1, 12), (3, 5)):
        out = as_dict(backbone.predict_on_batch(make_inputs(batch, length)))
        shapes = {k: tuple(v.shape) for k, v in out.items()}
        assert shapes == expected_shapes(batch, length), (batch, length, shapes)

    # Save to a preset and load back: identical weights and outputs, through
    # the subclass and through the base class. Outputs are compared with
    # eager calls: a compiled function retraced for several shapes may fuse
    # ops differently from a fresh one (1-ulp differences on TensorFlow).
    inputs = make_inputs(2, 9)
    reference = backbone(inputs)
    preset = tmp_path / "backbone_preset"
    backbone.save_to_preset(preset)
    for loader in (cls, Backbone):
        loaded = loader.from_preset(preset)
        assert type(loaded) is cls
        assert loaded.get_config() == config
        for a, b in zip(loaded.weights, backbone.weights):
            assert a.path == b.path
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
        assert_trees_close(loaded(inputs), reference, atol=0.0)

    # bfloat16 load: every variable is bfloat16 and outputs stay close.
    low = cls.from_preset(preset, dtype="bfloat16")
    assert all(v.dtype == "bfloat16" for v in low.weights)
    out = to_numpy(as_dict(low(inputs)))
    ref = to_numpy(as_dict(reference))
    for key in ref:
        scale = np.abs(ref[key]).max() + 1e-6
        assert np.abs(out[key] - ref[key]).max() / scale < bfloat16_tolerance, key
    return backbone


def check_task(task: Task, raw_inputs: Any, tmp_path: Path) -> Task:
    """Task contract: predict on raw inputs, preset round trip, base-class load."""
    reference = task.predict(raw_inputs)
    preset = tmp_path / "task_preset"
    task.save_to_preset(preset)
    for loader in (type(task), Task):
        loaded = loader.from_preset(preset)
        assert type(loaded) is type(task)
        assert_trees_close(loaded.predict(raw_inputs), reference, atol=0.0)
    return task
