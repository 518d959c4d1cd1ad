"""Mixed precision fine-tuning ("mixed_bfloat16": bfloat16 compute, float32
variables) of every family with `fit()`: BERT (classifier, masked LM), OPT
(full and LoRA), Whisper (speech to text) and YOLOv8 (detection).

Each test builds a tiny task in mixed precision, fits a few epochs on one
fixed batch and checks that every loss is finite and the last epoch's loss is
clearly below the first (each margin is one the float32 model meets too, with
room: the float32 ratios measured on jax, tensorflow and torch are in the
comments), that the variables stay float32, and that the train step really
runs the backbone and head in bfloat16 and the loss in float32.

The policy is given to the backbone (`dtype="mixed_bfloat16"`, which task
heads follow), except in two tests that set Keras' global policy
(`keras.config.set_dtype_policy`, restored afterwards): the masked LM is
built in code under it, and the OPT model for full fine-tuning is loaded
from a float32 preset under it (`from_preset` with no `dtype`).
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from tests.audio.whisper.test_whisper_fit import CLIPS, SPEECH, tiny_whisper
from tests.core.test_lora import assert_only_lora_changed, lm_data, lora_paths, snapshot, tiny_lm
from tests.cv.yolov8.synthetic import rectangles
from tests.nlp.bert.test_bert_tasks import LABELS, TEXTS, tiny_backbone, tiny_preprocessor
from zoo.models import (
    BertMaskedLM,
    BertMaskedLMPreprocessor,
    BertTextClassifier,
    OPTCausalLM,
    YOLOV8Backbone,
    YOLOV8Detector,
    YOLOV8ImageConverter,
    YOLOV8ObjectDetectorPreprocessor,
)

MIXED = "mixed_bfloat16"
# two of the espeak-ng clips and their texts: one fixed batch
TWO_CLIPS = dict(list(CLIPS.items())[:2])
# one width throughout: fewer distinct weight shapes, so building it on jax
# compiles fewer random initializers (~7 s less than tests/cv/yolov8's TINY)
YOLO_TINY = {"stackwise_channels": [16] * 5, "stackwise_depth": [1, 1, 1, 1]}


@pytest.fixture
def global_mixed_policy():
    """Keras' global dtype policy set to mixed_bfloat16 for one test, restored after."""
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(MIXED)
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def dtype_of(tensor) -> str:
    return keras.backend.standardize_dtype(tensor.dtype)


@pytest.fixture
def watch_training(monkeypatch):
    """`watch_training(task)` returns a dict that fills, as `fit` runs (or
    traces) its train step, with the dtypes of the backbone's outputs
    (`"backbone"`), of the predictions the loss reads (`"predictions"`) and of
    the loss (`"loss"`): what the real forward pass computes in."""

    def watch(task: keras.Model) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {"backbone": set(), "predictions": set(), "loss": set()}
        backbone_call = task.backbone.call
        compute_loss = type(task).compute_loss

        def watched_backbone_call(*args, **kwargs):
            outputs = backbone_call(*args, **kwargs)
            seen["backbone"].update(dtype_of(t) for t in keras.tree.flatten(outputs))
            return outputs

        def watched_compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                                 training=True):
            loss = compute_loss(self, x, y, y_pred, sample_weight, training)
            if self is task:
                seen["predictions"].update(dtype_of(t) for t in keras.tree.flatten(y_pred))
                seen["loss"].add(dtype_of(loss))
            return loss

        monkeypatch.setattr(task.backbone, "call", watched_backbone_call)
        monkeypatch.setattr(type(task), "compute_loss", watched_compute_loss)
        return seen

    return watch


def check_mixed(task: keras.Model) -> None:
    """The task is set up for the mixed policy: float32 variables, bfloat16
    compute in every layer with weights, bfloat16 outputs of the backbone and
    the task in the functional graph. (The real forward pass is checked in
    the train step, by `watch_training`: an eager call costs seconds on jax.)"""
    assert task.backbone.dtype_policy.name == MIXED
    assert task.trainable_weights
    assert {v.dtype for v in task.weights} == {"float32"}
    symbolic = keras.tree.flatten([task.backbone.output, task.output])
    assert {dtype_of(t) for t in symbolic} == {"bfloat16"}
    for layer in task._flatten_layers(include_self=False):
        if layer.weights and not isinstance(layer, keras.Model):
            assert layer.dtype_policy.name == MIXED, layer.name
            assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"


def check_training(history: keras.callbacks.History, seen: dict[str, set[str]],
                   factor: float) -> list[float]:
    """Every loss finite, the last below `factor` times the first; the train
    step ran the backbone and the head in bfloat16 and the loss in float32."""
    loss = history.history["loss"]
    assert np.isfinite(loss).all(), loss
    assert loss[-1] < factor * loss[0], loss
    assert seen == {"backbone": {"bfloat16"}, "predictions": {"bfloat16"},
                    "loss": {"float32"}}, seen
    return loss


# -- BERT -------------------------------------------------------------------------
def test_bert_classifier_mixed_fit_on_raw_strings(watch_training):
    clf = BertTextClassifier(tiny_backbone(dropout=0.0, dtype=MIXED), num_classes=2,
                             dropout=0.0, preprocessor=tiny_preprocessor())
    check_mixed(clf)
    # Adam(3e-3), 30 full-batch steps: float32 ends at 1-2% of the first loss
    # on every backend (after a plateau of ~10 steps at ln 2).
    clf.compile(optimizer=keras.optimizers.Adam(3e-3), loss=clf.loss, metrics=["accuracy"])
    seen = watch_training(clf)
    history = clf.fit(TEXTS, LABELS, batch_size=8, epochs=30, verbose=0)
    check_training(history, seen, 0.5)
    assert {v.dtype for v in clf.weights} == {"float32"}


def test_bert_masked_lm_mixed_fit_under_the_global_policy(global_mixed_policy, watch_training):
    pre = tiny_preprocessor(BertMaskedLMPreprocessor, mask_selection_length=4, seed=0)
    mlm = BertMaskedLM(tiny_backbone(dropout=0.0), preprocessor=pre)  # the global policy
    x, y, weights = pre(TEXTS)  # one fixed masking
    check_mixed(mlm)
    # Adam(1e-2), 12 steps: float32 ends at 0.44-0.46 of the first loss.
    mlm.compile(optimizer=keras.optimizers.Adam(1e-2), loss=mlm.loss, weighted_metrics=[])
    seen = watch_training(mlm)
    history = mlm.fit(x, y, sample_weight=weights, batch_size=8, epochs=12, verbose=0)
    check_training(history, seen, 0.7)
    assert {v.dtype for v in mlm.weights} == {"float32"}


# -- OPT --------------------------------------------------------------------------
def test_opt_causal_lm_mixed_full_fine_tuning_from_a_preset(global_mixed_policy,
                                                            watch_training, tmp_path):
    # A float32 preset, loaded with no dtype argument: the global policy applies.
    source = tiny_lm(dtype="float32")
    assert source.backbone.dtype_policy.name == "float32"
    source.save_to_preset(tmp_path / "opt")
    lm = OPTCausalLM.from_preset(tmp_path / "opt")
    x, y, weights = lm_data()
    check_mixed(lm)
    # Adam(1e-2), 8 steps: float32 ends at 0.42-0.43 of the first loss.
    lm.compile(optimizer=keras.optimizers.Adam(1e-2), loss=lm.loss, weighted_metrics=[])
    seen = watch_training(lm)
    before = snapshot(lm)
    history = lm.fit(x, y, sample_weight=weights, batch_size=4, epochs=8, verbose=0)
    check_training(history, seen, 0.6)
    after = snapshot(lm)
    assert all(not np.array_equal(before[v.path], after[v.path]) for v in lm.trainable_weights)
    assert {v.dtype for v in lm.weights} == {"float32"}


def test_opt_causal_lm_mixed_lora_trains_only_adapters(watch_training):
    lm = tiny_lm(dtype=MIXED)
    lm.backbone.enable_lora(rank=4)
    x, y, weights = lm_data()
    check_mixed(lm)
    assert [v.path for v in lm.trainable_weights] == lora_paths(2)
    # Adam(5e-2), 12 steps on the adapters only: float32 ends at 0.64-0.68 of
    # the first loss.
    lm.compile(optimizer=keras.optimizers.Adam(5e-2), loss=lm.loss, weighted_metrics=[])
    seen = watch_training(lm)
    before = snapshot(lm)
    history = lm.fit(x, y, sample_weight=weights, batch_size=4, epochs=12, verbose=0)
    check_training(history, seen, 0.85)
    assert_only_lora_changed(before, snapshot(lm), lora_paths(2))
    assert {v.dtype for v in lm.weights} == {"float32"}


# -- Whisper ----------------------------------------------------------------------
def test_whisper_mixed_fit_on_audio_and_transcripts(watch_training):
    model = tiny_whisper(dtype=MIXED)  # compiled again below, with this test's settings
    check_mixed(model)
    # Adam(1e-2), 12 steps: float32 ends at 0.69-0.71 of the first loss.
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[])
    seen = watch_training(model)
    history = model.fit([os.path.join(SPEECH, name) for name in TWO_CLIPS],
                        list(TWO_CLIPS.values()), batch_size=2, epochs=12, verbose=0)
    check_training(history, seen, 0.85)
    assert {v.dtype for v in model.weights} == {"float32"}


# -- YOLOv8 -----------------------------------------------------------------------
def test_yolov8_mixed_fit_on_images_and_boxes(watch_training):
    images, annotations = rectangles(2, seed=1)
    preprocessor = YOLOV8ObjectDetectorPreprocessor(
        YOLOV8ImageConverter(image_size=96), flip_probability=0.0, scale_range=0.0, seed=0)
    detector = YOLOV8Detector(YOLOV8Backbone(**YOLO_TINY, dtype=MIXED), num_classes=2,
                              class_names=["red", "blue"], preprocessor=preprocessor)
    check_mixed(detector)
    # Adam(3e-3), 10 steps: float32 ends at 0.23-0.41 of the first loss (every
    # backend; seeds 0-2 on jax).
    detector.compile(optimizer=keras.optimizers.Adam(3e-3, global_clipnorm=10.0))
    seen = watch_training(detector)
    history = detector.fit(images, annotations, batch_size=2, epochs=10, verbose=0)
    check_training(history, seen, 0.6)
    assert {v.dtype for v in detector.weights} == {"float32"}
