"""Deferred building: no allocation until each weight gets its stored value."""

import keras
import numpy as np

from tests.nlp.opt.test_opt_backbone import TINY
from zoo.core import deferred
from zoo.models import OPTBackbone


def test_abstract_build_allocates_nothing_and_stays_deferred():
    backbone, created = deferred.abstract_build(lambda: OPTBackbone(**TINY))
    assert created and all(deferred.is_deferred(v) for v in backbone.weights)
    with keras.StatelessScope():  # closing a scope must not random-initialize them
        pass
    assert all(deferred.is_deferred(v) for v in backbone.weights)
    for variable in backbone.weights:
        deferred.materialize(variable, np.full(variable.shape, 0.5, variable.dtype))
    deferred.initialize_rest(created)
    assert not any(deferred.is_deferred(v) for v in created)
    out = backbone({"token_ids": np.array([[1, 2, 3]], "int32"),
                    "padding_mask": np.ones((1, 3), "int32")})
    assert np.isfinite(keras.ops.convert_to_numpy(out)).all()
    assert all(np.all(keras.ops.convert_to_numpy(v) == 0.5) for v in backbone.weights)


def test_from_preset_equals_the_saved_model(tmp_path):
    original = OPTBackbone(**TINY)
    original.save_to_preset(tmp_path / "p")
    loaded = OPTBackbone.from_preset(tmp_path / "p")
    assert not any(deferred.is_deferred(v) for v in loaded.variables)
    for a, b in zip(original.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    inputs = {"token_ids": np.array([[5, 6, 7, 8]], "int32"),
              "padding_mask": np.ones((1, 4), "int32")}
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(original(inputs)),
                                  keras.ops.convert_to_numpy(loaded(inputs)))
