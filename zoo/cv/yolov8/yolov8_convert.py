"""ultralytics YOLOv8 `.pt` checkpoints -> zoo, without ultralytics and without
running code from the file.

A `.pt` written by ultralytics pickles the whole `DetectionModel` (module
objects, their settings and tensors). zoo's restricted unpickler records each
allow-listed module class as data (`PickledObject`), so the module tree is
walked as plain dicts: the architecture is read from the weights' shapes and
checked against YOLOv8's layout, then every tensor is ported by name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from zoo.core.errors import ConversionError
from zoo.core.preset_io import write_preset
from zoo.presets.checkpoint_io import WeightReader, port_weight, storage_dtype
from zoo.presets.formats import SourceFormat
from zoo.utils.progress import progress

#: the checkpoints this module converts, and how each is checked (zoo.families)
SOURCE_FORMATS = {
    "torch_file": SourceFormat("convert_ultralytics", "compare_with_onnxruntime",
                               "onnxruntime",
                               "max abs difference vs onnxruntime (pixels, probabilities)",
                               tolerance=1e-2),
}

#: torch.nn modules a DetectionModel pickles (recorded as data, never run)
_TORCH_MODULES = {
    "torch.nn.modules.activation": {"SiLU"},
    "torch.nn.modules.batchnorm": {"BatchNorm2d"},
    "torch.nn.modules.container": {"ModuleList", "Sequential"},
    "torch.nn.modules.conv": {"Conv2d"},
    "torch.nn.modules.linear": {"Identity"},
    "torch.nn.modules.pooling": {"MaxPool2d"},
    "torch.nn.modules.upsampling": {"Upsample"},
}
#: ultralytics classes, under any of the module paths its versions used
#: (`ultralytics.nn.modules.Conv` in early 8.0, `...modules.conv.Conv` later)
_ULTRALYTICS_CLASSES = {
    "DetectionModel", "SegmentationModel", "PoseModel", "ClassificationModel", "OBBModel",
    "WorldModel", "RTDETRDetectionModel", "Conv", "C2f", "Bottleneck", "SPPF", "Concat",
    "Detect", "DFL", "Segment", "Pose", "OBB", "Classify", "Proto", "DWConv", "C3k2", "C3k",
    "C2PSA", "PSABlock", "Attention", "IterableSimpleNamespace",
}
_TASK_MODELS = {"SegmentationModel": "instance segmentation", "PoseModel": "pose estimation",
                "ClassificationModel": "classification", "OBBModel": "oriented boxes",
                "WorldModel": "YOLO-World", "RTDETRDetectionModel": "RT-DETR"}
#: ultralytics' YOLOv8 detection layout: module index -> class name
_V8_LAYOUT = ["Conv", "Conv", "C2f", "Conv", "C2f", "Conv", "C2f", "Conv", "C2f", "SPPF",
              "Upsample", "Concat", "C2f", "Upsample", "Concat", "C2f", "Conv", "Concat", "C2f",
              "Conv", "Concat", "C2f", "Detect"]


class _Allowed(dict):
    """allowed_globals that records ultralytics and torch.nn modules as data."""

    def __init__(self) -> None:
        from zoo.utils.torch_pickle import record_as_data

        super().__init__()
        for module, names in _TORCH_MODULES.items():
            for name in names:
                self[(module, name)] = record_as_data(module, name)
        self._record = record_as_data

    def __contains__(self, key: object) -> bool:
        if super().__contains__(key):
            return True
        module, name = key  # type: ignore[misc]
        return module.startswith("ultralytics.") and name in _ULTRALYTICS_CLASSES

    def __getitem__(self, key: tuple[str, str]) -> Any:
        if super().__contains__(key):
            return super().__getitem__(key)
        if key in self:
            return self._record(*key)
        raise KeyError(key)


def _walk(module: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    state = module.state if isinstance(module.state, dict) else {}
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if isinstance(value, np.ndarray):
                out[f"{prefix}{name}"] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _walk(child, f"{prefix}{name}.", out)


def read_ultralytics_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an ultralytics detection checkpoint as data.

    Returns:
        `{"weights": {"model.0.conv.weight": array, ...}, "names": [...],
        "layout": [class name per module], "modules": [recorded modules],
        "version": str | None}`.

    Raises:
        ConversionError: the file is not an ultralytics YOLOv8 DetectionModel.
    """
    from zoo.utils.torch_pickle import PickledObject, UnsafeCheckpointError, load_torch_checkpoint

    path = Path(path)
    try:
        checkpoint = load_torch_checkpoint(path, allowed_globals=_Allowed())
    except UnsafeCheckpointError as e:
        raise ConversionError(
            f"{e}. It is not an ultralytics YOLOv8 checkpoint zoo can read.") from None
    except (ValueError, FileNotFoundError) as e:
        raise ConversionError(str(e)) from None
    model = None
    if isinstance(checkpoint, dict):
        model = checkpoint.get("ema") or checkpoint.get("model")
    if not isinstance(model, PickledObject):
        keys = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint)
        raise ConversionError(
            f"{path} is not an ultralytics model checkpoint (no pickled 'model'; found "
            f"{keys}). Fix: pass a .pt written by ultralytics (e.g. yolov8s.pt or a "
            "trained best.pt).")
    if model.name != "DetectionModel":
        task = _TASK_MODELS.get(model.name, model.name)
        raise ConversionError(
            f"{path} holds an ultralytics {model.name} ({task}), not a YOLOv8 DetectionModel; "
            "zoo converts detection checkpoints only.")
    state = model.state if isinstance(model.state, dict) else {}
    sequence = (state.get("_modules") or {}).get("model")
    modules = list(((sequence.state or {}).get("_modules") or {}).values()) if isinstance(
        sequence, PickledObject) else []
    layout = [m.name for m in modules]
    if layout != _V8_LAYOUT:
        raise ConversionError(
            f"{path} is an ultralytics DetectionModel but not YOLOv8's layout (modules "
            f"{layout[:12]}...; YOLOv8 has {_V8_LAYOUT[:12]}...). Other YOLO versions "
            "(YOLOv5u, YOLO11, ...) are not supported.")
    weights: dict[str, np.ndarray] = {}
    for index, module in enumerate(modules):
        _walk(module, f"model.{index}.", weights)
    names = state.get("names") or {}
    if isinstance(names, dict):
        names = [str(names[k]) for k in sorted(names)]
    return {"weights": weights, "names": list(names), "layout": layout, "modules": modules,
            "version": checkpoint.get("version")}


def _count(weights: dict[str, np.ndarray], pattern: str) -> int:
    found = {int(m.group(1)) for k in weights if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def convert_backbone_config(weights: dict[str, np.ndarray]) -> dict[str, Any]:
    """`YOLOV8Backbone` arguments and detector settings read from the tensor shapes."""
    try:
        channels = [int(weights[f"model.{i}.conv.weight"].shape[0]) for i in (0, 1, 3, 5, 7)]
        depths = [_count(weights, rf"model\.{i}\.m\.(\d+)\.") for i in (2, 4, 6, 8)]
        neck_depth = _count(weights, r"model\.12\.m\.(\d+)\.")
        reg_max = int(weights["model.22.cv2.0.2.weight"].shape[0]) // 4
        num_classes = int(weights["model.22.cv3.0.2.weight"].shape[0])
    except KeyError as e:
        raise ConversionError(f"The checkpoint lacks {e.args[0]!r}, which every YOLOv8 "
                              "DetectionModel has (is it fused or pruned?).") from None
    return {"backbone": {"stackwise_channels": channels, "stackwise_depth": depths},
            "neck_depth": neck_depth, "reg_max": reg_max, "num_classes": num_classes}


def _layer_prefix(layer_name: str) -> str:
    """Keras layer name `b2_m_0_cv1` -> ultralytics path `model.2.m.0.cv1`."""
    return "model." + layer_name[1:].replace("_", ".")


def port_detector(detector: Any, weights: WeightReader) -> None:
    """Copy every ultralytics tensor into the detector (layers matched by name)."""
    import keras

    layers = [layer for layer in detector._flatten_layers(include_self=False)
              if isinstance(layer, (keras.layers.Conv2D, keras.layers.BatchNormalization))]
    for layer in progress(layers, desc="Converting YOLOv8", total=len(layers)):
        name = layer.name
        if isinstance(layer, keras.layers.BatchNormalization):
            prefix = _layer_prefix(name[: -len("_bn")]) + ".bn"
            port_weight(layer.gamma, weights.take(f"{prefix}.weight"), name=prefix)
            port_weight(layer.beta, weights.take(f"{prefix}.bias"), name=prefix)
            port_weight(layer.moving_mean, weights.take(f"{prefix}.running_mean"), name=prefix)
            port_weight(layer.moving_variance, weights.take(f"{prefix}.running_var"),
                        name=prefix)
            if f"{prefix}.num_batches_tracked" in weights:
                weights.take(f"{prefix}.num_batches_tracked")
            continue
        prefix = (_layer_prefix(name[: -len("_conv")]) + ".conv" if name.endswith("_conv")
                  else _layer_prefix(name))
        # torch Conv2d stores (out, in, kh, kw); Keras Conv2D (kh, kw, in, out).
        kernel = np.transpose(weights.take(f"{prefix}.weight"), (2, 3, 1, 0))
        port_weight(layer.kernel, kernel, name=prefix)
        if layer.use_bias:
            port_weight(layer.bias, weights.take(f"{prefix}.bias"), name=prefix)
    dfl = weights.take("model.22.dfl.conv.weight") if "model.22.dfl.conv.weight" in weights \
        else None
    if dfl is not None and not np.allclose(
            np.ravel(dfl).astype("float64"), np.arange(dfl.size), atol=1e-3):
        raise ConversionError("The checkpoint's DFL weights are not 0..reg_max-1, as YOLOv8's "
                              "are; this head is not supported.")


def build_detector(source: Path, data: dict[str, Any] | None = None,
                   dtype: str = "float32") -> Any:
    """Read `source` (an ultralytics `.pt`; `data`: what `read_ultralytics_checkpoint`
    gave for it, when read already) and return a `YOLOV8Detector` with its
    weights, built in `dtype` (converters: the storage dtype)."""
    from zoo.cv.yolov8.yolov8_backbone import YOLOV8Backbone
    from zoo.cv.yolov8.yolov8_detector import YOLOV8Detector

    from zoo.core import deferred

    data = read_ultralytics_checkpoint(source) if data is None else data
    config = convert_backbone_config(data["weights"])
    names = data["names"] if len(data["names"]) == config["num_classes"] else None
    # Built without random initial values: every variable gets the checkpoint's.
    detector, created = deferred.abstract_build(lambda: YOLOV8Detector(
        YOLOV8Backbone(**config["backbone"], dtype=dtype), num_classes=config["num_classes"],
        class_names=names, neck_depth=config["neck_depth"], reg_max=config["reg_max"]))
    weights = WeightReader({k: np.asarray(v, "float32") if v.dtype.kind == "f" else v
                            for k, v in data["weights"].items()}, str(source))
    port_detector(detector, weights)
    deferred.initialize_rest(created)
    unused = weights.unused()
    if unused:
        raise ConversionError(f"{source} has weights the converted model would drop: "
                              f"{unused[:5]}.")
    return detector


def convert_ultralytics(source: Path, output: Path, handle: str, dtype: str = "source") -> None:
    """Convert an ultralytics YOLOv8 detection `.pt` into a zoo preset at `output`,
    its weights stored in `dtype` (`zoo.presets.checkpoint_io.storage_dtype`;
    ultralytics saves float16)."""
    data = read_ultralytics_checkpoint(Path(source))
    storage = storage_dtype(data["weights"].values(), dtype)
    write_preset(output, task=build_detector(Path(source), data, storage), source=handle,
                 storage_dtype=storage, config_dtype="float32")


def reference_onnx(source: Path) -> Path | None:
    """An ONNX export shipped next to `source`: `<stem>.onnx`, `<stem>_fp16.onnx`
    or the only `.onnx` file in its folder."""
    source = Path(source)
    for name in (f"{source.stem}.onnx", f"{source.stem}_fp16.onnx"):
        if (source.parent / name).is_file():
            return source.parent / name
    found = sorted(source.parent.glob("*.onnx"))
    return found[0] if len(found) == 1 else None


def onnx_outputs(onnx_path: Path, images: np.ndarray, threads: int = 2) -> np.ndarray:
    """ultralytics' exported output `(batch, 4 + classes, anchors)` (boxes as
    centre x, centre y, width, height in input pixels, then class
    probabilities) from onnxruntime, for channels-last `images` in [0, 1]."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(onnx_path), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)), "float32")
    return np.concatenate([session.run(None, {name: batch[i:i + 1]})[0]
                           for i in range(len(batch))])


def zoo_outputs(detector: Any, images: np.ndarray) -> np.ndarray:
    """The detector's decoded outputs in the ONNX export's layout (see `onnx_outputs`)."""
    from keras import ops

    from zoo.cv.box_ops import xyxy_to_xywh

    boxes, scores = detector.decode(detector(images, training=False), *images.shape[1:3])
    merged = ops.concatenate([xyxy_to_xywh(boxes), scores], axis=-1)
    return np.transpose(ops.convert_to_numpy(ops.stop_gradient(merged)), (0, 2, 1))


def compare_with_onnxruntime(preset_dir: Path, source: Path) -> float | None:
    """Max abs difference between the converted detector and onnxruntime on
    the ONNX export shipped next to the `.pt` (None when there is none), on
    two fixed pseudo-random 640x640 images: boxes in input pixels and class
    probabilities together. The export computes in float32 from the same
    (float16-stored) weights with batch norm folded into the convolutions,
    so the two differ by rounding only (about 1e-3 px on boxes, 3e-7 on
    probabilities for yolov8s_fall); the default tolerance 1e-2 is a tenth of
    a pixel's tenth. Needs `onnxruntime`.
    """
    from zoo.cv.yolov8.yolov8_detector import YOLOV8Detector

    onnx_path = reference_onnx(Path(source))
    if onnx_path is None:
        return None
    detector = YOLOV8Detector.from_preset(preset_dir)
    images = np.random.default_rng(0).uniform(0, 1, (2, 640, 640, 3)).astype("float32")
    return float(np.abs(zoo_outputs(detector, images) - onnx_outputs(onnx_path, images)).max())
