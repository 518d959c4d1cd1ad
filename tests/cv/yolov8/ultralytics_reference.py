"""Reference YOLOv8 checkpoints and outputs made by ultralytics itself.

Run as a script in a child process (never imported by a test process):

    python tests/cv/yolov8/ultralytics_reference.py SPEC.json

`SPEC.json` is `{"out": folder, "configs": [config, ...]}` (see
`test_yolov8_sweep.py` for a config's keys). For each config, ultralytics
builds a `DetectionModel` from its own `yolov8.yaml` with the config's scale
(depth multiple, width multiple, max channels), class count and DFL bins,
its batch norm statistics and weights are perturbed with seeded noise, and
it is saved the way ultralytics saves models (`YOLO.save`, optionally
finalised by `strip_optimizer` as a trained `best.pt` is). The saved file is
then loaded back with ultralytics' loader and run in float32 on seeded
images; `<out>/<name>/reference.npz` holds the images (NHWC, [0, 1]), the
decoded output `(batch, 4 + nc, anchors)` and the raw head outputs.

ultralytics is installed without its dependencies (`make install`): the
modules it imports at start-up but never uses to build and run a model
(OpenCV, torchvision, psutil, polars) are stubbed here when absent. That is
why this runs in its own process: the stubs never reach the test process.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import json
import sys
import traceback
from pathlib import Path
from typing import Any
from unittest import mock

#: standard deviation of the perturbed heads' logits on the calibration images
HEAD_SPREAD = 2.0
#: least batch norm running variance. Random deep nets either lose the input
#: (larger floors: outputs nearly constant) or amplify it chaotically (0.1:
#: yolov8l's float32 outputs 5e-5 off float64, in ultralytics itself); 0.15
#: keeps the outputs input-dependent and float32 within ~1e-5 of float64.
VARIANCE_FLOOR = 0.15
#: modules ultralytics imports at start-up that `make install` leaves out
_STUBBED = ("cv2", "torchvision", "torchvision.ops", "torchvision.transforms", "psutil",
            "polars")


def ultralytics_installed() -> bool:
    """Whether ultralytics is importable in principle (found, not imported)."""
    return importlib.util.find_spec("ultralytics") is not None


def _stub_missing_modules() -> None:
    """Stand-ins for the modules ultralytics needs only outside model building."""
    stubbed = set()
    for name in _STUBBED:
        if importlib.util.find_spec(name.split(".")[0]) is None:
            module = mock.MagicMock(name=name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            module.__version__ = "0.0.0"
            sys.modules[name] = module
            stubbed.add(name.split(".")[0])
    real_version = importlib.metadata.version

    def version(distribution: str) -> str:
        if distribution in stubbed or distribution in {"opencv-python"} and "cv2" in stubbed:
            return "0.0.0"
        return real_version(distribution)

    importlib.metadata.version = version


def _perturb(model: Any, seed: int, images: Any) -> None:
    """Seeded, trained-like weights: batch norm statistics measured on
    `images` (so activations keep about a unit scale at any depth), then
    random gains and shifts, and the head's last convolutions scaled to
    logits of standard deviation `HEAD_SPREAD` with random biases (as a
    trained head's: DFL distributions neither flat nor one-hot). DFL's fixed
    0..reg_max-1 convolution is left as ultralytics made it."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    rand = lambda t: torch.rand(t.shape, generator=generator)  # noqa: E731
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the calibration batch
        model.train()
        calibration = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        model(calibration)
        model.eval()
        for norm in norms:
            norm.momentum = 0.03
            norm.running_var.clamp_(min=VARIANCE_FLOOR)
            norm.weight.copy_(0.5 + rand(norm.weight))
            norm.bias.copy_(0.4 * (rand(norm.bias) - 0.5))
        heads = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)
                 and m.bias is not None and not name.endswith("dfl.conv")]
        spread: dict[Any, float] = {}
        hooks = [m.register_forward_hook(
            lambda m, _, out: spread.__setitem__(m, float((out - m.bias[:, None, None]).std())))
            for m in heads]
        model(calibration)
        for hook in hooks:
            hook.remove()
        for module in heads:  # the head's last convolutions: logits of spread ~2
            module.weight.mul_(HEAD_SPREAD / max(spread[module], 1e-6))
            module.bias.copy_(2.0 * (rand(module.bias) - 0.5))


def _model_yaml(config: dict[str, Any], folder: Path) -> Path:
    """ultralytics' own yolov8.yaml with the config's scale, classes and head.

    The file is named `yolov8<scale>.yaml`, from which ultralytics picks the
    scale; a custom scale is written into the copy as scale `n`.
    """
    from ultralytics.utils import ROOT, YAML

    spec = YAML.load(ROOT / "cfg" / "models" / "v8" / "yolov8.yaml")
    scale = config["scale"]
    if scale == "custom":
        scale = "n"
        spec["scales"] = {"n": [config["depth"], config["width"], config["max_channels"]]}
    spec["nc"] = config["num_classes"]
    spec["reg_max"] = config.get("reg_max", 16)
    if config.get("end2end"):
        spec["end2end"] = True
    if config.get("activation"):
        spec["activation"] = config["activation"]
    path = folder / f"yolov8{scale}.yaml"
    YAML.save(path, spec)
    return path


def _images(config: dict[str, Any]) -> "Any":
    """Seeded test images `(2, h, w, 3)` in [0, 1]: colour gradients plus noise."""
    import numpy as np

    rng = np.random.default_rng(config["seed"])
    h, w = config["image_size"]
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([x, y, 1 - x * y], -1)
    images = [np.clip(base * rng.uniform(0.2, 1.0, 3) + rng.normal(0, 0.1, base.shape), 0, 1)
              for _ in range(2)]
    return np.stack(images).astype("float32")


def make_reference(config: dict[str, Any], out: Path) -> None:
    """Build, save, reload and run one config; write `model.pt` and `reference.npz`."""
    import numpy as np
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import load_checkpoint
    from ultralytics.utils.torch_utils import strip_optimizer

    folder = out / config["name"]
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config["seed"])
    model = YOLO(str(_model_yaml(config, folder)), task="detect")
    if config.get("names"):
        model.model.names = dict(enumerate(config["names"]))
    images = _images(config)
    _perturb(model.model, config["seed"], _images({**config, "seed": config["seed"] + 1}))
    weights = folder / "model.pt"
    model.save(str(weights))
    if config.get("save") == "strip_optimizer":
        strip_optimizer(str(weights))
    reference, _ = load_checkpoint(str(weights))  # float32, eval mode, not fused
    with torch.no_grad():
        decoded, raw = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    if "boxes" not in raw:  # an end-to-end (one-to-one) head: nothing zoo would compare
        return
    names = [str(reference.names[i]) for i in range(len(reference.names))]
    np.savez(folder / "reference.npz", images=images, decoded=decoded.numpy(),
             boxes=raw["boxes"].numpy(), scores=raw["scores"].numpy(), names=np.array(names))


def main(spec_path: str) -> None:
    _stub_missing_modules()
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    for config in spec["configs"]:
        try:
            make_reference(config, out)
        except Exception:  # reported by that config's test, the others go on
            (out / config["name"]).mkdir(parents=True, exist_ok=True)
            (out / config["name"] / "error.txt").write_text(traceback.format_exc())


if __name__ == "__main__":
    main(sys.argv[1])
