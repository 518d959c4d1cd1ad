"""Sharded OPT, BERT and Whisper on 8 devices equal the unsharded models.

Needs 8 jax devices; `test_sharded_subprocess.py` runs this file in a child
process with XLA_FLAGS=--xla_force_host_platform_device_count=8 (CPU).
"""

import os

import keras
import numpy as np
import pytest

import zoo.layout
from zoo.audio.whisper.whisper_decoding import DecodingOptions, SpecialTokens, WhisperDecoder
from zoo.models import (
    BertBackbone,
    OPTBackbone,
    OPTCausalLM,
    WhisperAudioToText,
    WhisperBackbone,
)


def _device_count() -> int:
    if keras.backend.backend() != "jax":
        return 0
    import jax

    return jax.device_count()


pytestmark = pytest.mark.skipif(_device_count() < 8, reason="needs 8 jax devices")

MESHES = [(2, 4), (1, 8)]
# make test: the (1, 8) mesh (model axis only) on BERT and the cache; OPT and
# Whisper on (2, 4), both with ZOO_SWEEP_FULL=1 (20 s more)
FULL = os.environ.get("ZOO_SWEEP_FULL", "") not in ("", "0")
SAMPLE_MESHES = MESHES if FULL else MESHES[:1]
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


@pytest.mark.parametrize("shape", SAMPLE_MESHES)
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


def per_device_bytes(arrays) -> dict:
    """Bytes the shards of `arrays` take on each device (jax's CPU devices
    keep no memory statistics: counted from the arrays' own shards)."""
    out: dict = {}
    for array in arrays:
        for shard in array.addressable_shards:
            out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
    return out


@pytest.mark.parametrize("shape, spec", [((2, 4), ("batch", "model", None, None)),
                                         ((1, 8), (None, "model", None, None))])
def test_generation_cache_is_sharded_by_heads_and_rows(opt_reference, shape, spec):
    """Issue 24: the key/value cache is split by heads along the model axis and
    by rows along the batch axis when it is made and after every step, so each
    of the 8 devices holds 1/8 of it (the README's per-device cache column)."""
    layout_map = OPTBackbone.get_layout_map(zoo.layout.make_mesh(shape))
    with zoo.layout.model_parallel(layout_map).scope():
        backbone = OPTBackbone.from_preset(opt_reference["dir"])
        cache = backbone.init_cache(2, 16)
        _, stepped = backbone.call_with_cache(INPUTS["token_ids"], np.ones((2, 16), "int32"),
                                              cache, 0)
    for state in (cache, stepped):
        arrays = [a for pair in state for a in pair]
        for array in arrays:
            assert tuple(array.sharding.spec) + (None,) * (4 - len(array.sharding.spec)) == spec
        total = sum(a.nbytes for a in arrays)
        assert set(per_device_bytes(arrays).values()) == {total // 8}, per_device_bytes(arrays)


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


WHISPER = dict(vocabulary_size=64, num_encoder_layers=2, num_decoder_layers=2, num_heads=8,
               hidden_dim=32, intermediate_dim=64, num_mels=4, max_encoder_sequence_length=10,
               max_decoder_sequence_length=16, dropout=0.0)
WHISPER_INPUTS = {
    "encoder_features": np.random.default_rng(0).normal(size=(2, 4, 20)).astype("float32"),
    "decoder_token_ids": np.array([[1, 5, 9, 13, 17, 21], [0, 0, 1, 7, 11, 15]], "int32"),
    "decoder_padding_mask": np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], "int32"),
}
WHISPER_TARGETS = np.array([[5, 9, 13, 17, 21, 25], [0, 0, 7, 11, 15, 19]], "int32")
WHISPER_SPECIAL = SpecialTokens(eot=2, no_timestamps=63, timestamp_begin=64, no_speech=3,
                                vocabulary_size=64, suppress=(), suppress_begin=())
WHISPER_PROMPTS = [[1, 5], [1, 7]]
WHISPER_DECODING = DecodingOptions(timestamps=False, suppress_blank=False, max_new_tokens=6)
WHISPER_OUTPUTS = ("encoder_sequence_output", "decoder_sequence_output")
# What the Whisper map names for some variables (the rest: assert_shardings_follow_the_map).
WHISPER_SHARDINGS = {
    "encoder_layer_0/self_attention/query/kernel": (None, "model"),
    "encoder_layer_1/self_attention/query/bias": ("model",),
    "encoder_layer_1/output_dense/kernel": ("model", None),
    "decoder_layer_1/self_attention/key/kernel": (None, "model"),
    "decoder_layer_0/cross_attention/key/kernel": (None, "model"),
    "decoder_layer_1/cross_attention/value/bias": ("model",),
    "decoder_layer_1/cross_attention/output/kernel": ("model", None),
    "decoder_layer_0/cross_attention/output/bias": (None,),
    "decoder_layer_0/intermediate_dense/kernel": (None, "model"),
    "token_embedding/embeddings": ("model", None),
    "decoder_position_embedding/embeddings": (None, "model"),
    "encoder_position_embedding/embeddings": (None, "model"),
    "encoder_conv1/kernel": (None, None, None),
    "decoder_layer_norm/gamma": (None,),
}


def whisper_task(directory):
    task = WhisperAudioToText(WhisperBackbone.from_preset(directory))
    task.compile(optimizer=keras.optimizers.SGD(0.1),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                 weighted_metrics=[])
    return task


def whisper_run(task):
    """Both backbone outputs, greedy ids, and the losses of two `fit` steps."""
    # One compiled forward (eager jax dispatch of every op costs ~3 s more here).
    outputs = task.backbone.predict_on_batch(WHISPER_INPUTS)
    decoder = WhisperDecoder(task, WHISPER_SPECIAL)
    ids = decoder.decode(decoder.encode(WHISPER_INPUTS["encoder_features"]), WHISPER_PROMPTS,
                         sot_index=0, options=WHISPER_DECODING).tokens
    history = task.fit(WHISPER_INPUTS, WHISPER_TARGETS,
                       sample_weight=WHISPER_INPUTS["decoder_padding_mask"], batch_size=2,
                       epochs=2, shuffle=False, verbose=0)
    return outputs, ids, history.history["loss"]


@pytest.fixture(scope="module")
def whisper_reference(tmp_path_factory):
    directory = tmp_path_factory.mktemp("whisper") / "tiny"
    keras.utils.set_random_seed(0)
    WhisperBackbone(**WHISPER).save_to_preset(directory)
    outputs, ids, losses = whisper_run(whisper_task(directory))
    assert len(ids) == 2 and all(len(row) == 6 for row in ids)  # no early end: 6 steps ran
    return {"dir": directory, "outputs": outputs, "ids": ids, "losses": losses}


@pytest.mark.parametrize("shape", SAMPLE_MESHES)
def test_whisper_model_parallel_equals_unsharded(whisper_reference, shape):
    layout_map = WhisperBackbone.get_layout_map(zoo.layout.make_mesh(shape))
    with zoo.layout.model_parallel(layout_map).scope():
        task = whisper_task(whisper_reference["dir"])
        assert_shardings_follow_the_map(task.backbone, layout_map)
        specs = {v.path: tuple(v.value.sharding.spec) for v in task.backbone.weights}
        for path, axes in WHISPER_SHARDINGS.items():
            assert specs[path] + (None,) * (len(axes) - len(specs[path])) == axes, path
        outputs, ids, losses = whisper_run(task)
        assert_shardings_follow_the_map(task.backbone, layout_map)  # still sharded after fit
    for name in WHISPER_OUTPUTS:
        np.testing.assert_allclose(outputs[name], whisper_reference["outputs"][name], atol=1e-5,
                                   err_msg=name)
    assert ids == whisper_reference["ids"]
    np.testing.assert_allclose(losses, whisper_reference["losses"], atol=1e-5)


def test_raw_checkpoint_converts_unsharded_then_loads_sharded(tmp_path, zoo_home):
    """A transformers folder opened under a layout map is converted (and
    verified) without the distribution, then checked and loaded sharded: a
    vocabulary the model axis does not divide is the validator's LayoutError,
    not a failure inside the conversion."""
    from tests.nlp.opt.reference import make_hf_opt

    good = make_hf_opt(tmp_path / "good", vocab_size=64, num_attention_heads=8)
    bad = make_hf_opt(tmp_path / "bad", vocab_size=300, num_attention_heads=8)
    layout_map = OPTBackbone.get_layout_map(zoo.layout.make_mesh((1, 8)))
    with zoo.layout.model_parallel(layout_map).scope():
        with pytest.raises(zoo.layout.LayoutError, match="300"):
            OPTCausalLM.from_preset(bad)
        backbone = OPTBackbone.from_preset(good)
        assert_shardings_follow_the_map(backbone, layout_map)
        got = numpy(backbone(INPUTS))
        assert keras.distribution.distribution() is not None  # the scope is back
    expected = numpy(OPTBackbone.from_preset(good)(INPUTS))  # the converted copy, unsharded
    np.testing.assert_allclose(got, expected, atol=1e-5)
