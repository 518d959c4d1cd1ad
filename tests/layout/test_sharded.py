"""Sharded OPT and BERT on 8 devices equal the unsharded models.

Needs 8 jax devices; `test_sharded_subprocess.py` runs this file in a child
process with XLA_FLAGS=--xla_force_host_platform_device_count=8 (CPU).
"""

import keras
import numpy as np
import pytest

import zoo.layout
from zoo.models import BertBackbone, OPTBackbone, OPTCausalLM


def _device_count() -> int:
    if keras.backend.backend() != "jax":
        return 0
    import jax

    return jax.device_count()


pytestmark = pytest.mark.skipif(_device_count() < 8, reason="needs 8 jax devices")

MESHES = [(2, 4), (1, 8)]
OPT_VARIANTS = {
    "pre_norm": dict(vocabulary_size=64, num_layers=2, num_heads=8, hidden_dim=32,
                     intermediate_dim=64, max_sequence_length=32, dropout=0.0),
    "post_norm_projected": dict(vocabulary_size=64, num_layers=2, num_heads=8, hidden_dim=32,
                                intermediate_dim=64, max_sequence_length=32, dropout=0.0,
                                embedding_dim=16, normalize_first=False,
                                final_layer_norm=False),
}
BERT = dict(vocabulary_size=30, num_layers=2, num_heads=8, hidden_dim=32, intermediate_dim=64,
            max_sequence_length=16, dropout=0.0)
INPUTS = {"token_ids": np.array([[1, 2, 3, 4, 5], [0, 0, 6, 7, 8]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], "int32")}
TARGETS = np.array([[2, 3, 4, 5, 6], [0, 0, 7, 8, 9]], "int32")


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def assert_shardings_follow_the_map(model, layout_map):
    mesh_axes = list(layout_map.device_mesh.axis_names)
    checked = 0
    for variable in model.weights:
        layout = layout_map[variable.path]
        spec = tuple(variable.value.sharding.spec)
        spec = spec + (None,) * (len(variable.shape) - len(spec))
        want = tuple(layout.axes) if layout is not None else (None,) * len(variable.shape)
        assert spec == want, (variable.path, spec, want)
        assert all(a is None or a in mesh_axes for a in spec)
        checked += layout is not None
    assert checked >= 10


def causal_lm(directory):
    lm = OPTCausalLM(OPTBackbone.from_preset(directory))
    lm.compile(optimizer=keras.optimizers.SGD(0.1),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               weighted_metrics=[])
    return lm


def train_losses(lm, steps=2):
    return [float(np.ravel(lm.train_on_batch(INPUTS, TARGETS,
                                             sample_weight=INPUTS["padding_mask"]))[0])
            for _ in range(steps)]


@pytest.fixture(scope="module", params=sorted(OPT_VARIANTS))
def opt_reference(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp("opt") / request.param
    keras.utils.set_random_seed(0)
    OPTBackbone(**OPT_VARIANTS[request.param]).save_to_preset(directory)
    lm = causal_lm(directory)
    return {"dir": directory, "logits": numpy(lm(INPUTS)),
            "ids": lm.generate(INPUTS, max_new_tokens=8), "losses": train_losses(lm)}


@pytest.mark.parametrize("shape", MESHES)
def test_opt_model_parallel_equals_unsharded(opt_reference, shape):
    layout_map = OPTBackbone.get_layout_map(zoo.layout.make_mesh(shape))
    with zoo.layout.model_parallel(layout_map).scope():
        lm = causal_lm(opt_reference["dir"])
        assert_shardings_follow_the_map(lm.backbone, layout_map)
        np.testing.assert_allclose(numpy(lm(INPUTS)), opt_reference["logits"], atol=1e-5)
        np.testing.assert_array_equal(lm.generate(INPUTS, max_new_tokens=8),
                                      opt_reference["ids"])
        np.testing.assert_allclose(train_losses(lm), opt_reference["losses"], atol=1e-5)
        assert_shardings_follow_the_map(lm.backbone, layout_map)  # still sharded after fit


def test_opt_data_parallel_equals_unsharded(opt_reference):
    with keras.distribution.DataParallel().scope():
        lm = causal_lm(opt_reference["dir"])
        np.testing.assert_allclose(numpy(lm(INPUTS)), opt_reference["logits"], atol=1e-5)
        np.testing.assert_array_equal(lm.generate(INPUTS, max_new_tokens=8),
                                      opt_reference["ids"])
        # 8 replicas need a batch of 8: the 2 rows four times, same mean loss
        x = {k: np.concatenate([v] * 4) for k, v in INPUTS.items()}
        loss = lm.train_on_batch(x, np.concatenate([TARGETS] * 4),
                                 sample_weight=x["padding_mask"])
        np.testing.assert_allclose(float(np.ravel(loss)[0]), opt_reference["losses"][0],
                                   atol=1e-5)


@pytest.mark.parametrize("shape", MESHES)
def test_bert_model_parallel_equals_unsharded(tmp_path, shape):
    BertBackbone(**BERT).save_to_preset(tmp_path / "bert")
    inputs = {**INPUTS, "segment_ids": np.zeros_like(INPUTS["token_ids"])}
    expected = numpy(BertBackbone.from_preset(tmp_path / "bert")(inputs)["sequence_output"])
    layout_map = BertBackbone.get_layout_map(zoo.layout.make_mesh(shape))
    with zoo.layout.model_parallel(layout_map).scope():
        backbone = BertBackbone.from_preset(tmp_path / "bert")
        assert_shardings_follow_the_map(backbone, layout_map)
        got = numpy(backbone(inputs)["sequence_output"])
    np.testing.assert_allclose(got, expected, atol=1e-5)
