"""Training YOLOV8Detector on raw images and boxes: the loss goes down, and a
handful of images is learnt to mAP@0.5 >= 0.9 (evaluated as COCO does)."""

import keras
import numpy as np

from tests.cv.yolov8.synthetic import rectangles
from zoo.models import (
    YOLOV8Backbone,
    YOLOV8Detector,
    YOLOV8ImageConverter,
    YOLOV8ObjectDetectorPreprocessor,
)

TINY = {"stackwise_channels": [8, 16, 32, 32, 64], "stackwise_depth": [1, 1, 1, 1]}


def _detector(augment):
    preprocessor = YOLOV8ObjectDetectorPreprocessor(
        YOLOV8ImageConverter(image_size=128), flip_probability=0.5 if augment else 0.0,
        scale_range=0.5 if augment else 0.0, seed=0)
    return YOLOV8Detector(YOLOV8Backbone(**TINY), num_classes=2, class_names=["red", "blue"],
                          preprocessor=preprocessor)


def test_twenty_augmented_steps_lower_the_loss():
    images, annotations = rectangles(8, seed=1)
    detector = _detector(augment=True)
    detector.compile(optimizer=keras.optimizers.Adam(0.005, global_clipnorm=10.0))
    held_out, held_out_annotations = rectangles(2, seed=2)
    # Raw validation data is preprocessed like x (without augmentation).
    history = detector.fit(images, annotations, batch_size=4, epochs=10, verbose=0,
                           validation_data=(held_out, held_out_annotations), validation_freq=5)
    losses = history.history["loss"]
    assert len(losses) == 10 and np.isfinite(losses).all()
    val_losses = history.history["val_loss"]
    assert len(val_losses) == 2 and np.isfinite(val_losses).all()
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses  # measured 0.49-0.58


def test_overfitting_a_handful_of_images_reaches_map50_0_9():
    images, annotations = rectangles(4, seed=0)
    detector = _detector(augment=False)
    before = detector.evaluate_coco(images, annotations)
    # Full batches (all 4 images every step): the batch-norm statistics a step
    # trains with are the ones evaluation's moving averages converge to, and
    # the gradient has no sampling noise. 200 steps: the moving statistics
    # (momentum 0.97, ultralytics' 0.03) need that many to forget their initial
    # variance of 1 (0.97^150 still leaves 1%, too much for small variances).
    # Batches of 2 for 300 steps failed once in CI (tensorflow, mAP@0.5 0.86)
    # though 12 seeds here on jax and tensorflow all reached 1.0; full batches
    # reach a lower loss (0.80-0.88 against 0.88-1.09 over 8 seeds).
    schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=200)
    detector.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=10.0))
    detector.fit(images, annotations, batch_size=4, epochs=200, verbose=0)
    after = detector.evaluate_coco(images, annotations)
    assert before["map50"] < 0.1
    assert after["map50"] >= 0.9, after  # measured 1.0 on every backend and seed tried
    found = detector.predict(images[0])[0]
    assert set(found["class_names"]) <= {"red", "blue"} and len(found["boxes"]) >= 1
