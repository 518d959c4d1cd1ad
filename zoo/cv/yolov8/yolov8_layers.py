"""YOLOv8's building blocks as functional Keras graph pieces.

Layer names follow the ultralytics module paths (`b{index}_{path}`, e.g.
`b2_m_0_cv1_conv` for `model.2.m.0.cv1.conv`), so the converter maps every
checkpoint tensor to one layer by name.

Every block takes a `Graph` with the settings of the model being built: the
trainable model (channels last, batch norm as its own layer) or the inference
model `YOLOV8Detector` compiles for `predict` (batch norm folded into the
convolutions, and channels first on PyTorch, whose convolutions want that
layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

#: ultralytics' BatchNorm2d settings (eps 1e-3, momentum 0.03 in torch terms)
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.97


@dataclass(frozen=True)
class Graph:
    """How blocks are built: `dtype`, `data_format`, and `fused` (batch norm
    folded into each convolution's bias: inference only)."""

    dtype: Any = None
    data_format: str = "channels_last"
    fused: bool = False

    @property
    def channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def channels(self, x: Any) -> int:
        return int(x.shape[self.channel_axis])

    def split(self, x: Any, at: int) -> list[Any]:
        if self.data_format == "channels_last":
            return [x[..., :at], x[..., at:]]
        return [x[:, :at], x[:, at:]]

    def concat(self, xs: list[Any], name: str) -> Any:
        return keras.layers.Concatenate(axis=self.channel_axis, dtype=self.dtype, name=name)(xs)


def conv_bn_silu(g: Graph, x: Any, filters: int, kernel_size: int, strides: int,
                 name: str) -> Any:
    """Conv (no bias) -> BatchNorm -> SiLU: ultralytics' `Conv` block.

    Padding is `kernel_size // 2` on every side, as torch pads; Keras' "same"
    would pad a stride-2 convolution on the bottom/right only.
    """
    pad = kernel_size // 2
    if pad and strides > 1:
        x = keras.layers.ZeroPadding2D(pad, data_format=g.data_format, dtype=g.dtype,
                                       name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                            use_bias=g.fused, data_format=g.data_format, dtype=g.dtype,
                            name=f"{name}_conv")(x)
    if not g.fused:
        x = keras.layers.BatchNormalization(axis=g.channel_axis, epsilon=BN_EPSILON,
                                            momentum=BN_MOMENTUM, dtype=g.dtype,
                                            name=f"{name}_bn")(x)
    return keras.layers.Activation("silu", dtype=g.dtype, name=f"{name}_act")(x)


def c2f(g: Graph, x: Any, filters: int, depth: int, shortcut: bool, name: str) -> Any:
    """ultralytics' `C2f`: a 1x1 conv split in two halves, `depth` bottlenecks
    chained on the second half, every intermediate concatenated, a 1x1 conv."""
    hidden = filters // 2
    x = conv_bn_silu(g, x, 2 * hidden, 1, 1, f"{name}_cv1")
    parts = g.split(x, hidden)
    for i in range(depth):
        y = conv_bn_silu(g, parts[-1], hidden, 3, 1, f"{name}_m_{i}_cv1")
        y = conv_bn_silu(g, y, hidden, 3, 1, f"{name}_m_{i}_cv2")
        if shortcut:
            y = keras.layers.Add(dtype=g.dtype, name=f"{name}_m_{i}_add")([parts[-1], y])
        parts.append(y)
    return conv_bn_silu(g, g.concat(parts, f"{name}_concat"), filters, 1, 1, f"{name}_cv2")


def sppf(g: Graph, x: Any, filters: int, name: str, pool_size: int = 5) -> Any:
    """ultralytics' `SPPF`: a 1x1 conv, three chained max pools, concat, 1x1 conv."""
    x = conv_bn_silu(g, x, g.channels(x) // 2, 1, 1, f"{name}_cv1")
    pools = [x]
    for i in range(3):
        pools.append(keras.layers.MaxPooling2D(pool_size, strides=1, padding="same",
                                               data_format=g.data_format, dtype=g.dtype,
                                               name=f"{name}_pool_{i}")(pools[-1]))
    return conv_bn_silu(g, g.concat(pools, f"{name}_concat"), filters, 1, 1, f"{name}_cv2")


def upsample(g: Graph, x: Any, name: str) -> Any:
    """Nearest-neighbour 2x upsampling (ultralytics' `nn.Upsample(None, 2, "nearest")`)."""
    return keras.layers.UpSampling2D(2, data_format=g.data_format, dtype=g.dtype, name=name)(x)


def backbone_graph(g: Graph, images: Any, channels: list[int], depths: list[int]
                   ) -> dict[str, Any]:
    """CSPDarknet: stem conv, four (stride-2 conv, C2f) stages, SPPF -> P3, P4, P5."""
    x = conv_bn_silu(g, images, channels[0], 3, 2, "b0")
    features = []
    for stage in range(4):
        index = 1 + 2 * stage  # ultralytics module index of the stage's conv
        x = conv_bn_silu(g, x, channels[stage + 1], 3, 2, f"b{index}")
        x = c2f(g, x, channels[stage + 1], depths[stage], True, f"b{index + 1}")
        features.append(x)
    x = sppf(g, x, channels[4], "b9")
    return {"P3": features[1], "P4": features[2], "P5": x}


def _head_branch(g: Graph, x: Any, hidden: int, outputs: int, name: str, bias: float) -> Any:
    x = conv_bn_silu(g, x, hidden, 3, 1, f"{name}_0")
    x = conv_bn_silu(g, x, hidden, 3, 1, f"{name}_1")
    x = keras.layers.Conv2D(outputs, 1, bias_initializer=keras.initializers.Constant(bias),
                            data_format=g.data_format, dtype=g.dtype, name=f"{name}_2")(x)
    if g.data_format == "channels_first":
        x = keras.layers.Permute((2, 3, 1), dtype=g.dtype, name=f"{name}_to_last")(x)
    return keras.layers.Reshape((-1, outputs), dtype=g.dtype, name=f"{name}_flatten")(x)


def detector_graph(g: Graph, features: dict[str, Any], channels: list[int], neck_depth: int,
                   num_classes: int, reg_max: int, strides: tuple[int, ...]) -> dict[str, Any]:
    """PAN-FPN neck (C2f without shortcuts) and the decoupled head -> raw outputs."""
    import math

    c, d = channels, neck_depth
    p3, p4, p5 = features["P3"], features["P4"], features["P5"]
    n4 = c2f(g, g.concat([upsample(g, p5, "b10_upsample"), p4], "b11_concat"), c[3], d, False,
             "b12")
    out3 = c2f(g, g.concat([upsample(g, n4, "b13_upsample"), p3], "b14_concat"), c[2], d, False,
               "b15")
    x = conv_bn_silu(g, out3, c[2], 3, 2, "b16")
    out4 = c2f(g, g.concat([x, n4], "b17_concat"), c[3], d, False, "b18")
    x = conv_bn_silu(g, out4, c[3], 3, 2, "b19")
    out5 = c2f(g, g.concat([x, p5], "b20_concat"), c[4], d, False, "b21")

    box_hidden = max(16, c[2] // 4, 4 * reg_max)
    class_hidden = max(c[2], min(num_classes, 100))
    boxes, classes = [], []
    for level, (feature, stride) in enumerate(zip((out3, out4, out5), strides)):
        # ultralytics' bias initialisation: boxes 1.0, classes a prior of 5
        # objects per 640x640 image.
        prior = math.log(5 / num_classes / (640 / stride) ** 2)
        boxes.append(_head_branch(g, feature, box_hidden, 4 * reg_max, f"b22_cv2_{level}", 1.0))
        classes.append(_head_branch(g, feature, class_hidden, num_classes, f"b22_cv3_{level}",
                                    prior))
    return {
        "boxes": keras.layers.Concatenate(axis=1, dtype=g.dtype, name="boxes")(boxes),
        "classes": keras.layers.Concatenate(axis=1, dtype=g.dtype, name="classes")(classes),
    }
