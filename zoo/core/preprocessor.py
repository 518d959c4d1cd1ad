"""`Preprocessor`: raw inputs (strings, images, audio) to model-ready arrays.

Preprocessors are plain Python objects that run in numpy (plus `tokenizers`,
`sentencepiece`, Pillow), so JAX and PyTorch users never need TensorFlow or
tf.data. Tasks call them per batch inside `fit`/`evaluate`/`predict`.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from zoo.core import preset_classes, preset_handlers, preset_io
from zoo.core.tokenizer import Tokenizer


class Preprocessor:
    """Base class for zoo preprocessors.

    `__call__(x, y=None, sample_weight=None)` returns what Keras' `fit`
    expects: `x` alone, or `(x, y)`, or `(x, y, sample_weight)`.
    """

    #: the tokenizer class this preprocessor loads from a preset
    tokenizer_cls: type[Tokenizer] | None = None

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self.tokenizer = tokenizer

    def __call__(self, x: Any, y: Any = None, sample_weight: Any = None) -> Any:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Preprocessor:
        return cls(**config)

    @classmethod
    def from_preset(cls, handle: str | os.PathLike, **overrides: Any) -> Preprocessor:
        """Load the preprocessor (and its tokenizer) of a preset.

        When the preset holds a preprocessor of another kind (say a plain
        `BertPreprocessor` while `BertMaskedLMPreprocessor` is asked for), the
        requested class is built with the saved settings it accepts.

        Args:
            handle: any preset handle (see `Backbone.from_preset`).
            **overrides: constructor arguments to replace, e.g. `sequence_length=128`.

        Example:

        >>> from zoo.models import BertPreprocessor
        >>> pre = BertPreprocessor.from_preset("all_minilm_l6_v2")  # doctest: +SKIP
        """
        directory = preset_handlers.resolve(handle)
        data = preset_io.read_json(directory, preset_io.PREPROCESSOR_FILE)
        saved_cls = preset_classes.get_class(data, Preprocessor, directory, "preprocessor")
        config = preset_classes.config_of(data, directory, preset_io.PREPROCESSOR_FILE)
        target = saved_cls if issubclass(saved_cls, cls) else cls
        if target is not saved_cls:
            accepted = inspect.signature(target.__init__).parameters
            config = {k: v for k, v in config.items() if k in accepted}
        tokenizer = None
        tokenizer_cls = target.tokenizer_cls
        if tokenizer_cls is not None:
            tokenizer = tokenizer_cls.from_preset(directory)
        return preset_classes.from_config(target, {**config, "tokenizer": tokenizer, **overrides},
                                     directory, preset_io.PREPROCESSOR_FILE)

    def save_to_preset(self, preset_dir: str | os.PathLike) -> None:
        """Save this preprocessor and its tokenizer into `preset_dir`."""
        preset_io.write_preset(preset_dir, preprocessor=self)
