"""LoRA on every backbone: `Backbone.enable_lora`, presets with adapters,
adapter-only files. Runs on a tiny OPT causal LM and a tiny BERT."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

from tests.harness import assert_trees_close, to_numpy
from tests.nlp.bert.reference import random_batch as bert_batch
from tests.nlp.bert.test_bert_tasks import LABELS, TEXTS, tiny_preprocessor
from tests.nlp.opt.reference import random_batch as opt_batch
from tests.nlp.opt.test_opt_backbone import TINY as OPT_TINY
from tests.nlp.opt.test_opt_causal_lm import TEXT, hf_folder  # noqa: F401  (fixture)
from zoo.core.errors import PresetError
from zoo.models import (
    Backbone,
    BertBackbone,
    BertTextClassifier,
    OPTBackbone,
    OPTCausalLM,
    Task,
)

OPT = {**OPT_TINY, "dropout": 0.0}
BERT = dict(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=32, dropout=0.0)


def lora_paths(num_layers: int, targets=("query", "value")) -> list[str]:
    return [f"transformer_layer_{i}/self_attention/{t}/lora_kernel_{ab}"
            for i in range(num_layers) for t in targets for ab in "ab"]


def snapshot(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: np.array(keras.ops.convert_to_numpy(v)) for v in model.weights}


def lm_data(seed: int = 1) -> tuple[dict, np.ndarray, np.ndarray]:
    x = opt_batch(4, 10, OPT["vocabulary_size"], seed=seed)
    y = np.roll(x["token_ids"], -1, axis=1)
    return x, y, x["padding_mask"].astype("float32")


def tiny_lm(**kwargs) -> OPTCausalLM:
    lm = OPTCausalLM(OPTBackbone(**{**OPT, **kwargs}))
    # Larger token embeddings than the 0.02 init, as in a trained model: the
    # head is tied to them, so the frozen embeddings must let logits move.
    table = lm.backbone.token_embedding.embeddings
    table.assign(np.random.default_rng(0).normal(0, 0.5, table.shape).astype("float32"))
    return lm


def assert_only_lora_changed(before: dict, after: dict, lora: list[str]) -> None:
    changed = sorted(p for p in before if not np.array_equal(before[p], after[p]))
    assert changed == sorted(lora), changed


# -- enabling -----------------------------------------------------------------
@pytest.mark.parametrize("family", ["opt", "bert"])
def test_enable_lora_freezes_all_but_adapters_and_keeps_outputs(family):
    backbone = OPTBackbone(**OPT) if family == "opt" else BertBackbone(**BERT)
    inputs = (opt_batch(2, 7, 50, seed=0) if family == "opt"
              else bert_batch(2, 7, 64, seed=0))
    reference = backbone(inputs)
    n_before = len(backbone.weights)
    backbone.enable_lora(rank=3)

    expected = lora_paths(2)
    assert [v.path for v in backbone.trainable_weights] == expected
    assert [v.path for v in backbone.lora_weights] == expected
    assert len(backbone.weights) == n_before + len(expected)
    assert len(backbone.non_trainable_weights) == n_before
    assert all(v.dtype == "float32" for v in backbone.lora_weights)
    assert backbone.lora_rank == 3 and backbone.lora_target_names == ("query", "value")
    # B starts at zero: the adapters do not change outputs until trained.
    assert_trees_close(backbone(inputs), reference, atol=0.0)

    config = backbone.get_config()
    assert config["lora_rank"] == 3 and config["lora_target_names"] == ["query", "value"]
    rebuilt = type(backbone).from_config(config)
    assert rebuilt.get_config() == config
    assert [v.path for v in rebuilt.trainable_weights] == expected
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(backbone))
    assert type(restored) is type(backbone) and restored.get_config() == config


def test_custom_targets_and_config_without_lora_is_unchanged():
    plain = OPTBackbone(**OPT, name="opt")
    assert "lora_rank" not in plain.get_config() and plain.lora_rank is None
    assert plain.lora_weights == []
    backbone = OPTBackbone(**OPT, name="opt")
    backbone.enable_lora(2, target_names=["query", "key", "value", "output"])
    assert [v.path for v in backbone.trainable_weights] == lora_paths(
        2, ("query", "key", "value", "output"))
    assert backbone.get_config() == {
        **plain.get_config(), "lora_rank": 2,
        "lora_target_names": ["query", "key", "value", "output"]}
    single = OPTBackbone(**OPT)
    single.enable_lora(1, target_names="value")  # one name as a plain string
    assert [v.path for v in single.trainable_weights] == lora_paths(2, ("value",))


# -- training -----------------------------------------------------------------
def fit_adapters_lowers_loss(lm: OPTCausalLM) -> None:
    """10 epochs on `lm_data`: only the adapters change, the loss falls 15%."""
    lm.compile(optimizer=keras.optimizers.Adam(5e-2), loss=lm.loss, weighted_metrics=[])
    x, y, w = lm_data()
    before_loss = lm.evaluate(x, y, sample_weight=w, verbose=0)
    before = snapshot(lm)
    lm.fit(x, y, sample_weight=w, batch_size=4, epochs=10, verbose=0)
    assert_only_lora_changed(before, snapshot(lm), lora_paths(2))
    after_loss = lm.evaluate(x, y, sample_weight=w, verbose=0)
    assert after_loss < 0.85 * before_loss, (before_loss, after_loss)


def test_opt_fit_trains_only_adapters_and_lowers_loss():
    keras.utils.set_random_seed(0)
    lm = tiny_lm()
    lm.backbone.enable_lora(rank=4)
    # The task was compiled in its constructor; its optimizer is built on the
    # first fit, so it sees the new trainable set without recompiling.
    assert [v.path for v in lm.trainable_weights] == lora_paths(2)
    fit_adapters_lowers_loss(lm)


def test_qlora_adapters_train_on_an_int8_backbone_and_round_trip(tmp_path):
    """QLoRA-style: Keras' int8 kernels stay frozen and int8 while float LoRA
    adapters on them train; the preset keeps both."""
    keras.utils.set_random_seed(0)
    lm = tiny_lm()
    lm.quantize("int8")
    lm.backbone.enable_lora(rank=4)
    assert [v.path for v in lm.trainable_weights] == lora_paths(2)
    kernels = [v for v in lm.backbone.weights if v.path.endswith("query/kernel")]
    assert kernels and all(v.dtype == "int8" for v in kernels)
    fit_adapters_lowers_loss(lm)
    lm.save_to_preset(tmp_path / "qlora")
    back = OPTCausalLM.from_preset(tmp_path / "qlora")
    assert back.backbone.lora_rank == 4
    assert all(v.dtype == "int8" for v in back.backbone.weights if v.path.endswith("/kernel")
               and "self_attention" in v.path)
    x = lm_data()[0]
    np.testing.assert_array_equal(back.predict(x, verbose=0), lm.predict(x, verbose=0))


def test_bert_classifier_fit_trains_adapters_and_head_only():
    keras.utils.set_random_seed(0)
    backbone = BertBackbone(**BERT)
    backbone.enable_lora(rank=4)
    clf = BertTextClassifier(backbone, num_classes=2, preprocessor=tiny_preprocessor(),
                             dropout=0.0)
    head = ["classifier/kernel", "classifier/bias"]
    assert [v.path for v in clf.trainable_weights] == lora_paths(2) + head
    assert [v.path for v in backbone.trainable_weights] == lora_paths(2)
    clf.compile(optimizer=keras.optimizers.Adam(1e-2), loss=clf.loss)
    before = snapshot(clf)
    clf.fit(TEXTS, LABELS, batch_size=4, epochs=6, verbose=0)
    # Only adapters and head move. No loss assertion here: with this tiny
    # frozen BERT the pooled features barely differ between texts, so the
    # loss moves by ~1e-4 either way (flaky); the loss decrease under LoRA is
    # asserted on OPT in test_opt_fit_trains_only_adapters_and_lowers_loss.
    assert_only_lora_changed(before, snapshot(clf), lora_paths(2) + head)


def test_enabling_after_training_needs_a_recompile():
    """A task trained before enable_lora holds an optimizer built for the old
    variables: compiling again (new optimizer) makes fit train the adapters."""
    lm = tiny_lm()
    x, y, w = lm_data()
    lm.fit(x, y, sample_weight=w, batch_size=4, epochs=1, verbose=0)
    lm.backbone.enable_lora(rank=2)
    lm.compile(optimizer=keras.optimizers.Adam(1e-2), loss=lm.loss, weighted_metrics=[])
    before = snapshot(lm)
    lm.fit(x, y, sample_weight=w, batch_size=4, epochs=3, verbose=0)
    assert_only_lora_changed(before, snapshot(lm), lora_paths(2))


def test_generate_uses_adapters_after_recompile():
    keras.utils.set_random_seed(0)
    lm = OPTCausalLM(OPTBackbone(**OPT))
    x = opt_batch(2, 6, 50, seed=3)
    kwargs = dict(max_new_tokens=4)
    plain = lm.generate(x, **kwargs)
    lm.backbone.enable_lora(rank=2)
    for v in lm.backbone.lora_weights:
        v.assign(np.random.default_rng(1).normal(0, 1.0, v.shape).astype("float32"))
    lm.compile(optimizer=keras.optimizers.Adam(1e-3), loss=lm.loss)  # resets compiled steps
    adapted = lm.generate(x, **kwargs)
    assert not np.array_equal(plain, adapted)


def test_mixed_bfloat16_fit_with_lora():
    lm = tiny_lm(dtype="mixed_bfloat16")
    lm.backbone.enable_lora(rank=2)
    assert all(v.dtype == "float32" for v in lm.backbone.lora_weights)
    lm.compile(optimizer=keras.optimizers.Adam(1e-2), loss=lm.loss, weighted_metrics=[])
    x, y, w = lm_data()
    before = snapshot(lm)
    history = lm.fit(x, y, sample_weight=w, batch_size=2, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert_only_lora_changed(before, snapshot(lm), lora_paths(2))
    assert lm.backbone.dtype_policy.name == "mixed_bfloat16"
    assert lm.backbone.get_config()["dtype"]["config"]["name"] == "mixed_bfloat16"


# -- presets ------------------------------------------------------------------
def test_opt_preset_with_adapters_round_trips(hf_folder, zoo_home, tmp_path):  # noqa: F811
    lm = OPTCausalLM.from_preset(hf_folder)
    lm.backbone.enable_lora(rank=4)
    lm.compile(optimizer=keras.optimizers.Adam(1e-2), loss=lm.loss, weighted_metrics=[])
    lm.fit(TEXT * 2, batch_size=2, epochs=1, verbose=0)
    num_layers = lm.backbone.num_layers
    assert not all(np.all(to_numpy(v) == 0) for v in lm.backbone.lora_weights)
    inputs = lm.preprocessor.generate_preprocess(["the cat sat", "a dog ran in the park"])
    reference = lm(inputs)
    hidden = lm.backbone(inputs)
    preset = tmp_path / "lora_preset"
    lm.save_to_preset(preset)
    with h5py.File(preset / "model.weights.h5", "r") as f:
        assert f"{lora_paths(num_layers)[0]}" in f

    for loader in (Task, OPTCausalLM):
        loaded = loader.from_preset(preset)
        assert type(loaded) is OPTCausalLM
        assert loaded.backbone.lora_rank == 4
        assert [v.path for v in loaded.trainable_weights] == lora_paths(num_layers)
        assert_trees_close(loaded(inputs), reference, atol=0.0)
    assert loaded.generate("the cat sat", max_new_tokens=5, stop_token_ids=()) == \
        lm.generate("the cat sat", max_new_tokens=5, stop_token_ids=())
    for loader in (Backbone, type(lm.backbone)):
        backbone = loader.from_preset(preset)
        assert backbone.get_config() == lm.backbone.get_config()
        assert_trees_close(backbone(inputs), hidden, atol=0.0)


def test_bert_preset_with_adapters_round_trips(tmp_path):
    backbone = BertBackbone(**BERT)
    backbone.enable_lora(rank=2, target_names=("query", "key", "value"))
    for v in backbone.lora_weights:  # trained-looking adapters
        v.assign(np.random.default_rng(len(v.path)).normal(0, 0.1, v.shape).astype("float32"))
    inputs = bert_batch(2, 9, 64, seed=4)
    reference = backbone(inputs)
    backbone.save_to_preset(tmp_path / "p")
    for loader in (Backbone, BertBackbone):
        loaded = loader.from_preset(tmp_path / "p")
        assert loaded.lora_target_names == ("query", "key", "value")
        assert [v.path for v in loaded.trainable_weights] == lora_paths(
            2, ("query", "key", "value"))
        assert_trees_close(loaded(inputs), reference, atol=0.0)
    low = BertBackbone.from_preset(tmp_path / "p", dtype="bfloat16")
    assert low.dtype_policy.name == "bfloat16" and low.lora_rank == 2
    assert {v.dtype for v in low.lora_weights} == {"float32"}  # Keras keeps adapters in f32
    assert {v.dtype for v in low.non_trainable_weights} == {"bfloat16"}
    for a, b in zip(low.lora_weights, backbone.lora_weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


# -- adapter-only files -------------------------------------------------------
def test_lora_weights_file_into_fresh_model(tmp_path):
    keras.utils.set_random_seed(1)
    base = tiny_lm()
    base.save_to_preset(tmp_path / "base")  # the frozen weights, before LoRA
    base.backbone.enable_lora(rank=4)
    base.compile(optimizer=keras.optimizers.Adam(1e-2), loss=base.loss, weighted_metrics=[])
    x, y, w = lm_data()
    base.fit(x, y, sample_weight=w, batch_size=4, epochs=4, verbose=0)
    path = base.backbone.save_lora_weights(tmp_path / "adapters" / "lm.lora.h5")
    assert path == tmp_path / "adapters" / "lm.lora.h5"
    assert [p.name for p in path.parent.iterdir()] == ["lm.lora.h5"]  # no temp left
    with h5py.File(path, "r") as f:
        stored = []
        f.visititems(lambda name, item: stored.append(name)
                     if isinstance(item, h5py.Dataset) else None)
        assert sorted(stored) == sorted(lora_paths(2)) and f.attrs["lora_rank"] == 4
    assert path.stat().st_size < (tmp_path / "base" / "model.weights.h5").stat().st_size

    fresh = OPTCausalLM.from_preset(tmp_path / "base")
    assert fresh.backbone.lora_rank is None
    fresh.backbone.enable_lora(rank=4)
    fresh.backbone.load_lora_weights(path)
    assert_trees_close(fresh(x), base(x), atol=0.0)
    # Saving again over the file replaces it.
    fresh.backbone.save_lora_weights(path)
    assert [p.name for p in path.parent.iterdir()] == ["lm.lora.h5"]


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    backbone = OPTBackbone(**OPT)
    backbone.enable_lora(rank=2)
    path = backbone.save_lora_weights(tmp_path / "a.lora.h5")
    content = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(keras.ops, "convert_to_numpy", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        backbone.save_lora_weights(path)
    monkeypatch.undo()
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["a.lora.h5"]


# -- errors -------------------------------------------------------------------
@pytest.mark.parametrize("rank", [0, -1, 2.5, True, "4", None])
def test_rank_must_be_positive_int(rank):
    backbone = OPTBackbone(**OPT)
    with pytest.raises(ValueError, match="rank must be a positive int"):
        backbone.enable_lora(rank)
    assert backbone.lora_rank is None and backbone.lora_weights == []


def test_unknown_targets_name_available_layers():
    backbone = OPTBackbone(**OPT)
    n_trainable = len(backbone.trainable_weights)
    with pytest.raises(ValueError, match=r"'attn_q'.*available: \[.*'key'.*'query'"):
        backbone.enable_lora(2, target_names=("attn_q",))
    with pytest.raises(ValueError, match=r"named 'vlaue' \(targets: \['query', 'vlaue'\]\)"):
        backbone.enable_lora(2, target_names=("query", "vlaue"))
    with pytest.raises(ValueError, match="non-empty sequence"):
        backbone.enable_lora(2, target_names=())
    # Nothing was changed by the failed calls.
    assert backbone.lora_weights == [] and len(backbone.trainable_weights) == n_trainable
    assert "lora_rank" not in backbone.get_config()


def test_enable_twice_is_an_error():
    backbone = OPTBackbone(**OPT)
    backbone.enable_lora(2)
    with pytest.raises(ValueError, match="already enabled.*rank 2"):
        backbone.enable_lora(2)
    with pytest.raises(ValueError, match="already enabled"):
        backbone.enable_lora(4, target_names=("key",))


def test_lora_file_errors(tmp_path):
    trained = OPTBackbone(**OPT)
    trained.enable_lora(rank=2)
    path = trained.save_lora_weights(tmp_path / "a.lora.h5")

    with pytest.raises(ValueError, match="needs LoRA enabled"):
        OPTBackbone(**OPT).save_lora_weights(tmp_path / "b.lora.h5")
    with pytest.raises(ValueError, match=r"enable_lora\(rank=2, target_names=\['query', "):
        OPTBackbone(**OPT).load_lora_weights(path)

    other_rank = OPTBackbone(**OPT)
    other_rank.enable_lora(rank=4)
    with pytest.raises(PresetError, match="have rank 2.*has LoRA rank 4"):
        other_rank.load_lora_weights(path)

    other_targets = OPTBackbone(**OPT)
    other_targets.enable_lora(rank=2, target_names=("query", "key", "value"))
    before = snapshot(other_targets)
    with pytest.raises(PresetError, match="missing.*key/lora_kernel_a"):
        other_targets.load_lora_weights(path)
    assert all(np.array_equal(before[k], v) for k, v in snapshot(other_targets).items())

    deeper = OPTBackbone(**{**OPT, "num_layers": 3})
    deeper.enable_lora(rank=2)
    with pytest.raises(PresetError, match="missing.*transformer_layer_2"):
        deeper.load_lora_weights(path)

    wider = OPTBackbone(**{**OPT, "hidden_dim": 8, "intermediate_dim": 16})
    wider.enable_lora(rank=2)
    with pytest.raises(PresetError, match="has shape"):
        wider.load_lora_weights(path)

    trained.save_to_preset(tmp_path / "preset")
    with pytest.raises(PresetError, match="not a zoo LoRA file"):
        trained.load_lora_weights(tmp_path / "preset" / "model.weights.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(PresetError, match="Cannot read LoRA weight file"):
        trained.load_lora_weights(tmp_path / "junk.h5")
    with pytest.raises(FileNotFoundError, match="No LoRA weight file"):
        trained.load_lora_weights(tmp_path / "missing.h5")

    # a hostile file: a tiny file whose adapter declares a huge shape (HDF5
    # fill value, no data stored) or a huge string element type is refused
    # before anything is read
    import h5py

    name = sorted(v.path for v in trained.lora_weights)[0]
    for hostile, make in {
        "huge.lora.h5": lambda f: f.create_dataset(name, shape=(200_000, 200_000),
                                                   dtype="float32", chunks=(1, 1)),
        "strings.lora.h5": lambda f: f.create_dataset(name, shape=(1,), dtype="S1000000000"),
    }.items():
        copy = tmp_path / hostile
        copy.write_bytes(path.read_bytes())
        with h5py.File(copy, "r+") as f:
            del f[name]
            make(f)
        assert copy.stat().st_size < 10 * path.stat().st_size
        with pytest.raises(PresetError, match="has shape|not a number"):
            trained.load_lora_weights(copy)
