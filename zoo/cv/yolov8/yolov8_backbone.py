"""YOLOv8's backbone: CSPDarknet with C2f stages and SPPF (channels last)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras

from zoo.core.backbone import Backbone
from zoo.cv.yolov8.yolov8_layers import Graph, backbone_graph

#: ultralytics' yolov8.yaml scales: (depth multiple, width multiple, max channels)
SCALES: dict[str, tuple[float, float, int]] = {
    "n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024), "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512), "x": (1.00, 1.25, 512),
}
_BASE_CHANNELS = (64, 128, 256, 512, 1024)  # stem, then the four stages
_BASE_DEPTHS = (3, 6, 6, 3)


def _divisible(value: float, divisor: int = 8) -> int:
    return int(math.ceil(value / divisor) * divisor)


def scale_config(depth_multiple: float, width_multiple: float, max_channels: int = 1024
                 ) -> dict[str, list[int]]:
    """`YOLOV8Backbone` arguments for ultralytics' depth/width multiples.

    Example:

    >>> scale_config(*SCALES["s"])
    {'stackwise_channels': [32, 64, 128, 256, 512], 'stackwise_depth': [1, 2, 2, 1]}
    """
    channels = [_divisible(min(c, max_channels) * width_multiple) for c in _BASE_CHANNELS]
    depths = [max(round(d * depth_multiple), 1) for d in _BASE_DEPTHS]
    return {"stackwise_channels": channels, "stackwise_depth": depths}


@keras.saving.register_keras_serializable(package="zoo")
class YOLOV8Backbone(Backbone):
    """YOLOv8's CSPDarknet backbone (Jocher et al., ultralytics 2023).

    A stride-2 stem convolution, then four stages of a stride-2 convolution
    and a C2f block (the last followed by SPPF). Outputs the stride 8, 16
    and 32 maps the detector's neck reads, as a dict `{"P3", "P4", "P5"}`.

    Inputs: `images` `(batch, height, width, 3)` in [0, 1] (what
    `YOLOV8ImageConverter` returns); height and width multiples of 32.

    Args:
        stackwise_channels: output channels of the stem and of each of the
            four stages (yolov8s: `[32, 64, 128, 256, 512]`).
        stackwise_depth: bottlenecks in each stage's C2f block
            (yolov8s: `[1, 2, 2, 1]`).
        image_channels: input channels (3).
        dtype: dtype or dtype policy.

    Example:

    >>> import numpy as np
    >>> from zoo.models import YOLOV8Backbone
    >>> backbone = YOLOV8Backbone(stackwise_channels=[8, 16, 16, 32, 32],
    ...                           stackwise_depth=[1, 1, 1, 1])
    >>> out = backbone(np.zeros((1, 64, 96, 3), "float32"))
    >>> {k: tuple(v.shape) for k, v in out.items()}
    {'P3': (1, 8, 12, 16), 'P4': (1, 4, 6, 32), 'P5': (1, 2, 3, 32)}
    """

    def __init__(
        self,
        stackwise_channels: Sequence[int],
        stackwise_depth: Sequence[int],
        image_channels: int = 3,
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        channels, depths = [int(c) for c in stackwise_channels], [int(d) for d in stackwise_depth]
        if len(channels) != 5 or len(depths) != 4 or min(channels + depths) < 1:
            raise ValueError(
                "YOLOV8Backbone needs 5 positive stackwise_channels (stem + 4 stages) and 4 "
                f"positive stackwise_depth values, got {stackwise_channels!r} and "
                f"{stackwise_depth!r}. Fix: e.g. scale_config(*SCALES['s']).")
        images = keras.Input(shape=(None, None, image_channels), name="images")
        outputs = backbone_graph(Graph(dtype), images, channels, depths)
        super().__init__(inputs=images, outputs=outputs, dtype=dtype, **kwargs)
        self.stackwise_channels = channels
        self.stackwise_depth = depths
        self.image_channels = int(image_channels)

    @classmethod
    def from_scale(cls, scale: str, **kwargs: Any) -> YOLOV8Backbone:
        """A randomly initialised backbone of one of ultralytics' scales
        (`"n"`, `"s"`, `"m"`, `"l"`, `"x"`)."""
        if scale not in SCALES:
            raise ValueError(f"Unknown YOLOv8 scale {scale!r}. Fix: one of {sorted(SCALES)}.")
        return cls(**scale_config(*SCALES[scale]), **kwargs)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "stackwise_channels": self.stackwise_channels,
            "stackwise_depth": self.stackwise_depth,
            "image_channels": self.image_channels,
        }
