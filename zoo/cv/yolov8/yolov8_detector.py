"""YOLOv8 detector: PAN-FPN neck, decoupled anchor-free head, DFL box decoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from zoo.core.compiled_loop import backend_name, compile_step, prefers_channels_first
from zoo.core.export import ExportGraph
from zoo.core.object_detector import ObjectDetector
from zoo.presets.checkpoint_io import port_weight
from zoo.cv.yolov8.yolov8_backbone import YOLOV8Backbone
from zoo.cv.yolov8.yolov8_decode import STRIDES, decode_boxes, make_anchors
from zoo.cv.yolov8.yolov8_layers import Graph, backbone_graph, detector_graph
from zoo.cv.yolov8.yolov8_object_detector_preprocessor import YOLOV8ObjectDetectorPreprocessor

#: most images per forward call, per backend (others: the whole batch). At
#: 640x640 a larger batch is slower per image on jax (yolov8s, 2-core CPU: 202
#: ms an image alone, 214 in twos, 234 in fours, 266 in sixteens: XLA's
#: convolutions stream activations that no longer fit in cache) and on torch
#: past two (175 alone, 155 in twos, 173 in sixteens); tensorflow's oneDNN
#: convolutions gain with the batch (148 alone, 127 in sixteens).
FORWARD_BATCH = {"jax": 1, "torch": 2}


@keras.saving.register_keras_serializable(package="zoo")
class YOLOV8Detector(ObjectDetector):
    """YOLOv8 object detection (ultralytics), equal to ultralytics' DetectionModel.

    The neck upsamples P5 into P4 and P3 and downsamples back (PAN-FPN, C2f
    blocks without shortcuts); the head predicts, per cell of the P3/P4/P5
    maps, four distance distributions of `reg_max` bins (DFL) and class
    logits. `call` returns the raw head outputs (see `yolov8_decode`);
    `predict(images)` returns boxes after non-max suppression in original
    pixels; `fit(images, annotations)` trains with ultralytics' loss
    (task-aligned assigner, CIoU, DFL, BCE).

    Args:
        backbone: a `YOLOV8Backbone`.
        num_classes: number of object classes.
        class_names: a name per class (default `"class_<i>"`).
        preprocessor: a `YOLOV8ObjectDetectorPreprocessor` (images and boxes
            to model inputs); `None` builds the default 640x640 one.
        neck_depth: bottlenecks per neck C2f block (default: the backbone's
            last stage depth, as in every ultralytics scale).
        reg_max: DFL bins per box side (16; 1: the head predicts the four
            distances directly, without DFL, as ultralytics does then).
        score_threshold: minimum class probability kept by `predict` (0.25).
        iou_threshold: non-max suppression IoU (0.7).
        max_detections: most boxes per image (300).

    Example:

    >>> import numpy as np
    >>> from zoo.models import YOLOV8Backbone, YOLOV8Detector
    >>> backbone = YOLOV8Backbone(stackwise_channels=[8, 16, 16, 32, 32],
    ...                           stackwise_depth=[1, 1, 1, 1])
    >>> detector = YOLOV8Detector(backbone, num_classes=2, class_names=["cat", "dog"])
    >>> raw = detector(np.zeros((1, 64, 64, 3), "float32"))
    >>> tuple(raw["boxes"].shape), tuple(raw["classes"].shape)
    ((1, 84, 64), (1, 84, 2))
    >>> found = detector.predict(np.zeros((40, 90, 3), "uint8"))
    >>> sorted(found[0])
    ['boxes', 'class_names', 'classes', 'scores']
    """

    backbone_cls = YOLOV8Backbone
    preprocessor_cls = YOLOV8ObjectDetectorPreprocessor

    def __init__(
        self,
        backbone: YOLOV8Backbone,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        preprocessor: YOLOV8ObjectDetectorPreprocessor | None = None,
        neck_depth: int | None = None,
        reg_max: int = 16,
        score_threshold: float = 0.25,
        iou_threshold: float = 0.7,
        max_detections: int = 300,
        **kwargs: Any,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
        names = [f"class_{i}" for i in range(num_classes)] if class_names is None else [
            str(n) for n in class_names]
        if len(names) != num_classes:
            raise ValueError(f"Got {len(names)} class_names for num_classes={num_classes}. "
                             "Fix: pass one name per class.")
        dtype = backbone.dtype_policy
        depth = int(neck_depth or backbone.stackwise_depth[-1])
        inputs = backbone.input
        outputs = detector_graph(Graph(dtype), backbone(inputs), backbone.stackwise_channels,
                                 depth, num_classes, int(reg_max), STRIDES)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor if preprocessor is not None else (
            YOLOV8ObjectDetectorPreprocessor())
        self.num_classes = num_classes
        self.class_names = names
        self.neck_depth = depth
        self.reg_max = int(reg_max)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self._compiled_forward: Any = None
        self._nms_steps: dict[tuple[float, float], Any] = {}
        object.__setattr__(self, "_inference_model", None)
        self._folded_at: int | None = None  # optimizer step of the last fold (-1: no optimizer)
        self._loss_fn = None

    def fit(self, *args: Any, **kwargs: Any) -> keras.callbacks.History:
        """`ObjectDetector.fit`; compiles with Adam (1e-3, gradients clipped to
        norm 10 as ultralytics does) first unless `compile()` was called."""
        if not self.compiled:
            self.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=10.0))
        return super().fit(*args, **kwargs)

    # -- training ---------------------------------------------------------------
    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None,
                     sample_weight: Any = None, training: bool = True) -> Any:
        """ultralytics' YOLOv8 loss (per image) of raw outputs `y_pred` against
        `y = {"boxes": (b, m, 4) xyxy input pixels, "classes": (b, m), -1 padding}`."""
        from zoo.cv.yolov8.yolov8_loss import YOLOV8Loss

        if self._loss_fn is None:
            self._loss_fn = YOLOV8Loss(self.num_classes, reg_max=self.reg_max)
        images = x["images"] if isinstance(x, dict) else x
        points, strides = make_anchors(int(images.shape[1]), int(images.shape[2]))
        total, _ = self._loss_fn(y, y_pred, points, strides)
        return total

    # -- inference --------------------------------------------------------------
    def decode(self, outputs: dict[str, Any], height: int, width: int) -> tuple[Any, Any]:
        """Raw head outputs -> (`xyxy` boxes in input pixels `(b, anchors, 4)`,
        class probabilities `(b, anchors, num_classes)`)."""
        points, strides = make_anchors(height, width)
        boxes = decode_boxes(ops.cast(outputs["boxes"], "float32"), points, strides,
                             self.reg_max)
        return boxes, ops.sigmoid(ops.cast(outputs["classes"], "float32"))

    def inference_model(self) -> keras.Model:
        """The model `predict` runs: the same network with every batch norm
        folded into its convolution (scale into the kernel, shift into a
        bias), channels first on PyTorch (its convolutions' layout), channels
        last elsewhere. Its weights are refreshed from this model's on each
        `detect_batch` call, so it always computes what `call` computes."""
        if self._inference_model is None:
            # Not tracked as a sublayer: its variables are derived, never saved or trained.
            object.__setattr__(self, "_inference_model", self._build_inference_model())
        return self._inference_model

    def _inference_graph(self) -> keras.Model:
        fmt = "channels_first" if prefers_channels_first() else "channels_last"
        graph = Graph(self.backbone.dtype_policy, fmt, fused=True)
        images = keras.Input(shape=(None, None, self.backbone.image_channels))
        x = images
        if fmt == "channels_first":
            x = keras.layers.Permute((3, 1, 2), dtype=graph.dtype)(images)
        features = backbone_graph(graph, x, self.backbone.stackwise_channels,
                                  self.backbone.stackwise_depth)
        outputs = detector_graph(graph, features, self.backbone.stackwise_channels,
                                 self.neck_depth, self.num_classes, self.reg_max, STRIDES)
        return keras.Model(images, outputs, name=f"{self.name}_inference")

    def _build_inference_model(self) -> keras.Model:
        from zoo.core import deferred

        # Built without random initial values: _fold_weights gives every one.
        model, _ = deferred.abstract_build(self._inference_graph)
        return model

    def _steps_taken(self) -> int:
        optimizer = getattr(self, "optimizer", None)
        return -1 if optimizer is None else int(ops.convert_to_numpy(optimizer.iterations))

    def refresh_inference_model(self) -> None:
        """Fold the current weights into the inference model `predict` runs.

        `predict` does this by itself after training steps and after
        `load_weights` / `set_weights`; call it after assigning variables
        directly.
        """
        self._fold_weights()
        self._folded_at = self._steps_taken()

    def load_weights(self, *args: Any, **kwargs: Any) -> None:
        super().load_weights(*args, **kwargs)
        self._folded_at = None

    def set_weights(self, *args: Any, **kwargs: Any) -> None:
        super().set_weights(*args, **kwargs)
        self._folded_at = None

    def _fold_weights(self) -> None:
        """Copy this model's weights into the inference model, batch norms folded."""
        model = self.inference_model()
        layers = {layer.name: layer for layer in self._flatten_layers(include_self=False)}
        for target in model.layers:
            if not isinstance(target, keras.layers.Conv2D):
                continue
            conv = layers[target.name]
            kernel = ops.convert_to_numpy(ops.cast(conv.kernel, "float32"))
            bn = layers.get(target.name[: -len("_conv")] + "_bn") if target.name.endswith(
                "_conv") else None
            if bn is None:
                bias = ops.convert_to_numpy(ops.cast(conv.bias, "float32"))
            else:
                gamma, beta, mean, var = (ops.convert_to_numpy(ops.cast(v, "float32")) for v in (
                    bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
                scale = gamma / np.sqrt(var + bn.epsilon)
                kernel, bias = kernel * scale, beta - mean * scale
            port_weight(target.kernel, kernel, name=target.name)
            port_weight(target.bias, bias, name=target.name)

    def _forward(self, images: Any) -> tuple[Any, Any]:
        outputs = self.inference_model()(images, training=False)
        return self.decode(outputs, int(images.shape[1]), int(images.shape[2]))

    def decoded_outputs(self, batch: Any) -> tuple[np.ndarray, np.ndarray]:
        """Boxes `(b, anchors, 4)` (xyxy, input pixels) and class probabilities
        `(b, anchors, num_classes)` for a preprocessed batch `(b, h, w, 3)` in
        [0, 1], before non-max suppression; computed by the compiled inference
        model (batch norm folded), which is what `predict` runs."""
        if self._folded_at is None or self._folded_at != self._steps_taken():
            self.refresh_inference_model()
        if self._compiled_forward is None:
            # TensorFlow: a plain graph, whose oneDNN convolutions beat XLA's here.
            self._compiled_forward = compile_step(self._forward,
                                                  self.inference_model().variables, xla=False)
        batch = np.asarray(batch, "float32")
        step = FORWARD_BATCH.get(backend_name(), len(batch)) or 1
        parts = [[ops.convert_to_numpy(t) for t in self._compiled_forward(batch[i:i + step])]
                 for i in range(0, len(batch), step)]
        return np.concatenate([b for b, _ in parts]), np.concatenate([s for _, s in parts])

    def detect_batch(self, batch: Any, score_threshold: float | None = None,
                     iou_threshold: float | None = None) -> dict[str, np.ndarray]:
        """Detections for a preprocessed batch `(b, h, w, 3)` in [0, 1]:
        `boxes` `(b, max_detections, 4)` (xyxy, input pixels), `scores`,
        `classes` (-1 on padding rows) and `num_detections` `(b,)`."""
        from zoo.cv.nms import non_max_suppression

        score = self.score_threshold if score_threshold is None else float(score_threshold)
        iou = self.iou_threshold if iou_threshold is None else float(iou_threshold)
        if (score, iou) not in self._nms_steps:
            def nms(boxes: Any, scores: Any) -> Any:
                return non_max_suppression(boxes, scores, iou_threshold=iou,
                                           score_threshold=score,
                                           max_detections=self.max_detections)

            self._nms_steps[(score, iou)] = compile_step(nms, [], trace=False)
        out = self._nms_steps[(score, iou)](*self.decoded_outputs(batch))
        return {k: np.asarray(ops.convert_to_numpy(v)) for k, v in out.items()}

    def export_graphs(self) -> list[ExportGraph]:
        """One graph, `detector`: preprocessed images `(batch, height, width, 3)`
        in [0, 1] at the preprocessor's `image_size` -> `boxes` `(batch,
        anchors, 4)` (xyxy, input pixels) and `scores` `(batch, anchors,
        classes)` (probabilities), batch norms folded: what `decoded_outputs`
        computes. Non-max suppression is the runtime's (as in ultralytics'
        exports)."""
        height, width = self.preprocessor.image_converter.image_size
        self.refresh_inference_model()

        def run(images: Any) -> dict[str, Any]:
            boxes, scores = self._forward(images)
            return {"boxes": boxes, "scores": scores}

        description = (
            "Letterboxed RGB images scaled to [0, 1] -> boxes (xyxy, input pixels) and class "
            "probabilities per anchor, before non-max suppression. Keep a box's best class "
            f"when its probability is >= {self.score_threshold}, then suppress boxes of the "
            f"same class overlapping by IoU > {self.iou_threshold}, at most "
            f"{self.max_detections} per image (zoo.cv.nms.non_max_suppression).")
        return [ExportGraph("detector", {"images": ((None, height, width, 3), "float32")}, run,
                            description)]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "neck_depth": self.neck_depth,
            "reg_max": self.reg_max,
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "max_detections": self.max_detections,
        }
