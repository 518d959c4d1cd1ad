"""Distribution misuse is a clear error before any weight moves (jax, one device).

The multi-process cases that need a real job are in test_multiprocess.py;
the mesh-size errors in test_layout_rules.py."""

from __future__ import annotations

import keras
import pytest

import zoo.layout
from zoo.models import BertBackbone, OPTBackbone, OPTCausalLM

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="Keras' distribution runs on jax")

OPT = dict(vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
           max_sequence_length=16, dropout=0.0)


@pytest.fixture(scope="module")
def opt_preset(tmp_path_factory):
    directory = tmp_path_factory.mktemp("opt") / "opt"
    OPTBackbone(**OPT).save_to_preset(directory)
    return directory


@pytest.mark.parametrize("value, says", [
    ("2", "call keras.distribution.initialize()"),
    ("two", "is not a number"),
])
def test_a_job_this_process_did_not_join(monkeypatch, opt_preset, value, says):
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", value)
    for build in (lambda: OPTBackbone(**OPT), lambda: OPTCausalLM.from_preset(opt_preset)):
        with pytest.raises(zoo.layout.DistributionError, match=says):
            build()
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")  # a job of one: fine
    OPTBackbone(**OPT)


def test_a_layout_map_for_another_model(opt_preset):
    layout_map = BertBackbone.get_layout_map(zoo.layout.make_mesh((1, 1)))
    with zoo.layout.model_parallel(layout_map).scope():
        with pytest.raises(zoo.layout.LayoutError,
                           match=r"made for BertBackbone.*OPTBackbone.get_layout_map"):
            OPTCausalLM.from_preset(opt_preset)
    # the right map builds
    with zoo.layout.model_parallel(
            OPTBackbone.get_layout_map(zoo.layout.make_mesh((1, 1)))).scope():
        OPTCausalLM.from_preset(opt_preset)
