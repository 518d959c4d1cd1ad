"""`Backbone`: the base of every zoo model body (a functional Keras model)."""

from __future__ import annotations

import os
from typing import Any

import keras

from zoo.core import preset_io


class Backbone(keras.Model):
    """Base class for zoo backbones.

    A backbone is a functional `keras.Model` built from explicit constructor
    arguments, which `get_config()` mirrors exactly; that config plus the
    weights is a preset. Subclasses build their graph in `__init__` and pass
    `inputs`/`outputs` to this constructor.

    `Backbone.from_preset(handle)` on the base class returns whatever subclass
    the preset holds; on a subclass it checks the preset holds that class.
    """

    def __init__(self, *args: Any, dtype: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, dtype=dtype, **kwargs)

    def get_config(self) -> dict:
        # Subclasses extend this with their constructor arguments.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config: dict) -> Backbone:
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    @classmethod
    def from_preset(
        cls, handle: str | os.PathLike, load_weights: bool = True, **overrides: Any
    ) -> Backbone:
        """Build a backbone from a preset handle.

        Args:
            handle: a catalog name (`"all_minilm_l6_v2"`), `hf://org/repo`,
                `pkg://package/path`, or a local directory (a zoo preset or a
                raw checkpoint, converted and cached on first use).
            load_weights: when False, build the architecture with random weights.
            **overrides: config values to replace, e.g. `dtype="bfloat16"`.

        Example:

        >>> from zoo.models import Backbone
        >>> backbone = Backbone.from_preset("all_minilm_l6_v2")  # doctest: +SKIP
        """
        from zoo.presets import resolve

        directory = resolve(handle)
        data = preset_io.read_json(directory, preset_io.CONFIG_FILE)
        backbone_cls = preset_io.get_class(data, cls, directory, "backbone")
        config = {**data["config"], **overrides}
        backbone = backbone_cls.from_config(config)
        if load_weights:
            preset_io.load_weights(
                backbone.weights, directory, preset_io.BACKBONE_WEIGHTS
            )
        return backbone

    def save_to_preset(self, preset_dir: str | os.PathLike) -> None:
        """Save config and weights to `preset_dir` (atomically).

        Args:
            preset_dir: directory to create, or a zoo preset to update.
        """
        preset_io.write_preset(preset_dir, backbone=self)
