"""Seeded sweep of random YOLOv8 configs made, saved and run by ultralytics.

Each config (see `yolov8_space`) is an ultralytics `DetectionModel` built
from ultralytics' own `yolov8.yaml` at one of its scales (n/s/m/l/x) or a
custom one (depth multiple, width multiple, max channels), with a class
count crossing the head's `min(nc, 100)` width rule, DFL bins 16, 8 or 1,
seeded trained-like weights, and saved the way ultralytics saves models
(`YOLO.save`, or finalised by `strip_optimizer` like a trained `best.pt`).
ultralytics itself, in a child process (`ultralytics_reference.py`), reloads
the file and runs it in float32 on seeded images; zoo converts the same file
with `Task.from_preset(path)` and is compared on the same images:

- raw head outputs (DFL logits and class logits, spread ~2, up to ~10):
  `RAW_ATOL` 1e-3 (float32 rounding: ultralytics' own float32 run of
  yolov8l is within 1e-5 of its float64 run with these weights);
- decoded boxes (centre/size, input pixels) and class probabilities, through
  the trained graph and through `predict`'s folded one: as
  `test_yolov8_real.py`, 0.05 px and 1e-4.

The weights are calibrated so that the outputs depend on the image (checked:
`MIN_INPUT_EFFECT`) without chaotic amplification (see
`ultralytics_reference.VARIANCE_FLOOR`).

Settings zoo does not convert (an end-to-end one-to-one head, a non-SiLU
activation) must be zoo's own ConversionError, never wrong numbers. Sweep
size: `tests/sweeps.py` (`ZOO_SWEEP_FULL=1` runs all configs).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from tests.sweeps import (
    FULL_SIZE,
    assert_close,
    choice,
    draw,
    sweep_indices,
)
from zoo.core.errors import ConversionError

if importlib.util.find_spec("ultralytics") is None:  # never imported here: it needs cv2
    pytest.skip("ultralytics (the reference) is installed by make test",
                allow_module_level=True)
pytest.importorskip("torch")

#: configs per backend inside make test (jax: ~30 s each, mostly compiling)
SAMPLE_SIZE = 1
RAW_ATOL = 1e-3
BOX_ATOL = 0.05  # input pixels, as test_yolov8_real.py
PROBABILITY_ATOL = 1e-4  # as test_yolov8_real.py
#: least mean |logit difference| between the two test images of a config
MIN_INPUT_EFFECT = 0.01
REFERENCE_SCRIPT = Path(__file__).with_name("ultralytics_reference.py")
REFERENCE_TIMEOUT_S = 1800
CLASS_NAMES = ("person", "Fall", "car", "dog", "traffic light", "x", "Ünïcode", "2")


def yolov8_space(rng: np.random.Generator) -> dict[str, Any]:
    """One random YOLOv8 config: ultralytics' scales or a custom one, class
    counts around the head's 100-class rule, DFL bins, both save formats,
    and now and then a setting zoo must refuse."""
    scale = choice(rng, ("n", "s", "m", "l", "x", "custom", "custom", "custom"))
    config: dict[str, Any] = {"scale": scale}
    if scale == "custom":
        config.update(depth=choice(rng, (0.2, 0.33, 0.5, 0.67, 1.0)),
                      width=choice(rng, (0.0625, 0.125, 0.25, 0.375, 0.5)),
                      max_channels=choice(rng, (256, 512, 768, 1024)))
    nc = choice(rng, (1, 2, 3, 7, 20, 80, 99, 100, 101, 150, int(rng.integers(1, 300))))
    config.update(
        num_classes=nc,
        reg_max=choice(rng, (16, 16, 16, 16, 8, 1)),
        save=choice(rng, ("save", "strip_optimizer")),
        names=([choice(rng, CLASS_NAMES) + f"_{i}" for i in range(nc)]
               if rng.random() < 0.5 else None),
        image_size=[choice(rng, (64, 96, 128, 160)), choice(rng, (64, 96, 128, 160))],
        end2end=bool(rng.random() < 0.08),
        activation=choice(rng, (None,) * 10 + ("nn.SiLU()", "nn.ReLU()", "nn.LeakyReLU(0.1)")),
    )
    return config


def refused(config: dict[str, Any]) -> str | None:
    """What makes zoo refuse the config (a pattern of its error), or None."""
    if config["end2end"]:
        return "one2one"
    if config["activation"] not in (None, "nn.SiLU()"):
        return "ReLU"
    return None


def cheap(config: dict[str, Any]) -> bool:
    """Small enough for `make test`'s sample (yolov8n's width or less)."""
    return config["scale"] == "n" or config["scale"] == "custom" and config["width"] <= 0.25


def run_indices() -> list[int]:
    """`tests/sweeps.py`'s indices, except that `make test`'s small sample is
    drawn from the cheap configs (yolov8l/x take a minute each per backend)."""
    everything = sweep_indices(FULL_SIZE, sample_size=0)  # empty: make test's sample
    if everything:
        return everything
    small = [i for i in range(FULL_SIZE) if cheap(draw("yolov8", i, yolov8_space))]
    return [small[p] for p in sweep_indices(len(small), SAMPLE_SIZE)]


CONFIGS = [pytest.param(draw("yolov8", i, yolov8_space), id=f"yolov8-{i:02d}")
           for i in run_indices()]


def _name(config: dict[str, Any]) -> str:
    return f"yolov8-{config['seed']:02d}"


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> Path:
    """Every config of this run made by ultralytics, in one child process."""
    root = tmp_path_factory.mktemp("ultralytics")
    configs = [{**param.values[0], "name": _name(param.values[0])} for param in CONFIGS]
    spec = root / "spec.json"
    spec.write_text(json.dumps({"out": str(root), "configs": configs}))
    env = {**os.environ, "YOLO_CONFIG_DIR": str(root / "settings"), "YOLO_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(REFERENCE_SCRIPT), str(spec)], env=env,
                          capture_output=True, text=True, timeout=REFERENCE_TIMEOUT_S)
    assert done.returncode == 0, f"ultralytics failed:\n{done.stderr[-3000:]}"
    return root


def ultralytics_layout(boxes: Any, probabilities: Any) -> np.ndarray:
    """zoo's decoded `xyxy` boxes and probabilities -> ultralytics' output
    `(batch, 4 + classes, anchors)` (boxes as centre x, centre y, w, h)."""
    from zoo.cv.box_ops import xyxy_to_xywh

    xywh = xyxy_to_xywh(keras.ops.convert_to_tensor(boxes))
    merged = keras.ops.concatenate([xywh, keras.ops.convert_to_tensor(probabilities)], -1)
    return np.transpose(keras.ops.convert_to_numpy(keras.ops.stop_gradient(merged)), (0, 2, 1))


def _raw(channels_first: np.ndarray) -> np.ndarray:
    """ultralytics' `(batch, channels, anchors)` -> zoo's `(batch, anchors, channels)`."""
    return np.transpose(channels_first, (0, 2, 1))


@pytest.mark.parametrize("config", CONFIGS)
def test_random_config_matches_ultralytics(config, references, zoo_home):
    from zoo.models import Task, YOLOV8Detector

    folder = references / _name(config)
    error = (folder / "error.txt").read_text() if (folder / "error.txt").is_file() else None
    assert error is None, f"ultralytics could not build {config}:\n{error}"
    pattern = refused(config)
    if pattern is not None:
        with pytest.raises(ConversionError, match=pattern) as info:
            Task.from_preset(str(folder / "model.pt"))
        assert info.value.__cause__ is None, f"a converter crash, not a clean error: {info.value}"
        assert not any(zoo_home.rglob("*.h5")) if zoo_home.exists() else True
        return
    reference = np.load(folder / "reference.npz")
    detector = Task.from_preset(str(folder / "model.pt"))
    assert isinstance(detector, YOLOV8Detector)
    assert detector.num_classes == config["num_classes"]
    assert detector.reg_max == config["reg_max"]
    assert detector.class_names == [str(n) for n in reference["names"]]
    images = reference["images"]
    # the test's strength: the outputs depend on the image (weights not degenerate)
    assert np.abs(np.diff(reference["scores"], axis=0)).mean() > MIN_INPUT_EFFECT
    raw = {k: keras.ops.convert_to_numpy(keras.ops.stop_gradient(v))
           for k, v in detector(images, training=False).items()}
    assert_close(raw["boxes"], _raw(reference["boxes"]), RAW_ATOL, "box logits", config)
    assert_close(raw["classes"], _raw(reference["scores"]), RAW_ATOL, "class logits", config)
    boxes, probabilities = detector.decode(raw, *images.shape[1:3])
    decoded, expected = ultralytics_layout(boxes, probabilities), reference["decoded"]
    assert_close(decoded[:, :4], expected[:, :4], BOX_ATOL, "boxes (px)", config)
    assert_close(decoded[:, 4:], expected[:, 4:], PROBABILITY_ATOL, "probabilities", config)
    # predict's graph: batch norm folded, channels first on torch
    folded = ultralytics_layout(*detector.decoded_outputs(images))
    assert_close(folded[:, :4], expected[:, :4], BOX_ATOL, "folded boxes (px)", config)
    assert_close(folded[:, 4:], expected[:, 4:], PROBABILITY_ATOL, "folded probabilities",
                 config)
