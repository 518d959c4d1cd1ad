"""`Task`: a backbone plus a head plus a preprocessor, trainable on raw data.

`fit`, `evaluate` and `predict` accept raw inputs (a list of strings, pairs
of lists for sentence pairs, ...): they are preprocessed batch by batch in
numpy through a `keras.utils.PyDataset`, so no tf.data is needed on JAX or
PyTorch. Already-preprocessed inputs (dicts of arrays, datasets, generators)
pass straight through.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from zoo.core import preset_io
from zoo.core.backbone import Backbone
from zoo.core.preprocessor import Preprocessor


def _is_raw(x: Any) -> bool:
    """Raw inputs are strings, sequences or arrays of them, tuples of those, or
    a list of 1-D sample arrays (audio clips; zoo's models never take a list of
    batches)."""
    if isinstance(x, str):
        return True
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "USO"
    if isinstance(x, tuple):
        return len(x) > 0 and all(_is_raw(part) and not isinstance(part, str) for part in x)
    if isinstance(x, list):
        return len(x) > 0 and not isinstance(x[0], dict) and (
            not isinstance(x[0], np.ndarray) or x[0].ndim == 1)
    return False


def _take(data: Any, index: np.ndarray) -> Any:
    if data is None:
        return None
    if isinstance(data, tuple):
        return tuple(_take(part, index) for part in data)
    if isinstance(data, list) and data and isinstance(data[0], np.ndarray):
        return [data[i] for i in index]  # np.asarray would stack equal-length clips
    return np.asarray(data, dtype=object if not isinstance(data, np.ndarray) else None)[index]


def _length(x: Any) -> int:
    return len(x[0]) if isinstance(x, tuple) else len(x)


class PreprocessedBatches(keras.utils.PyDataset):
    """Batches of raw data, preprocessed on the fly (one Keras PyDataset)."""

    def __init__(
        self,
        preprocessor: Preprocessor,
        x: Any,
        y: Any = None,
        sample_weight: Any = None,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(x, str):
            x = [x]
        n = _length(x)
        for name, value in (("y", y), ("sample_weight", sample_weight)):
            if value is not None and len(value) != n:
                raise ValueError(f"Got {n} inputs but {len(value)} values in {name}.")
        self.preprocessor = preprocessor
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(n)
        if shuffle:
            self._rng.shuffle(self._order)

    def __len__(self) -> int:
        return -(-len(self._order) // self.batch_size)

    def __getitem__(self, index: int) -> Any:
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        x = _take(self.x, rows)
        y = None if self.y is None else np.asarray(self.y)[rows]
        sw = None if self.sample_weight is None else np.asarray(self.sample_weight)[rows]
        return self.preprocessor(x, y, sw)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._rng.shuffle(self._order)


class Task(keras.Model):
    """Base class for zoo tasks (classifier, masked LM, embedder, ...).

    Subclasses set `backbone_cls` and `preprocessor_cls`, build the functional
    graph in `__init__`, and list their constructor arguments in `get_config`.
    """

    backbone_cls: type[Backbone] | None = None
    preprocessor_cls: type[Preprocessor] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    # -- raw-input training and inference -------------------------------------
    def _wrap(self, x: Any, y: Any, sample_weight: Any, batch_size: int | None,
              shuffle: bool = False) -> tuple[Any, Any, Any, int | None]:
        if self.preprocessor is None or not _is_raw(x):
            return x, y, sample_weight, batch_size
        data = PreprocessedBatches(
            self.preprocessor, x, y, sample_weight, batch_size or 32, shuffle=shuffle
        )
        return data, None, None, None

    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None,
            shuffle: bool = True, sample_weight: Any = None,
            validation_data: Any = None, **kwargs: Any) -> keras.callbacks.History:
        """Train on raw inputs (e.g. a list of strings and labels) or arrays.

        Same arguments as `keras.Model.fit`; raw `validation_data` is
        preprocessed the same way.
        """
        x, y, sample_weight, batch_size = self._wrap(x, y, sample_weight, batch_size, shuffle)
        if isinstance(validation_data, tuple) and _is_raw(validation_data[0]):
            vx, vy, vsw = keras.utils.unpack_x_y_sample_weight(validation_data)
            validation_data = self._wrap(vx, vy, vsw, None)[0]
        return super().fit(x, y, batch_size=batch_size, shuffle=shuffle,
                           sample_weight=sample_weight, validation_data=validation_data,
                           **kwargs)

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None,
                 sample_weight: Any = None, **kwargs: Any) -> Any:
        """Evaluate on raw inputs or arrays (arguments of `keras.Model.evaluate`)."""
        x, y, sample_weight, batch_size = self._wrap(x, y, sample_weight, batch_size)
        return super().evaluate(x, y, batch_size=batch_size, sample_weight=sample_weight,
                                **kwargs)

    def predict(self, x: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        """Predict on raw inputs or arrays (arguments of `keras.Model.predict`)."""
        x, _, _, batch_size = self._wrap(x, None, None, batch_size)
        kwargs.setdefault("verbose", 0)
        return super().predict(x, batch_size=batch_size, **kwargs)

    # -- config ---------------------------------------------------------------
    def get_config(self) -> dict:
        # Subclasses extend this with their head arguments.
        return {
            "backbone": self.backbone,
            "preprocessor": self.preprocessor,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config: dict) -> Task:
        config = dict(config)
        for key in ("backbone", "preprocessor"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def head_weights(self) -> list[keras.Variable]:
        """The task's own variables: everything that is not the backbone's."""
        backbone_ids = {id(v) for v in self.backbone.weights}
        return [v for v in self.weights if id(v) not in backbone_ids]

    # -- presets --------------------------------------------------------------
    @classmethod
    def _pick_class(cls, backbone: Backbone, saved: type | None) -> type[Task]:
        if saved is not None and issubclass(saved, cls):
            return saved
        if cls.backbone_cls is not None:
            return cls
        candidates = sorted(
            (t for t in _all_subclasses(Task)
             if t.backbone_cls is type(backbone) and issubclass(t, cls)),
            key=lambda t: t.__name__,
        )
        if len(candidates) == 1:
            return candidates[0]
        names = ", ".join(t.__name__ for t in candidates) or "none"
        raise preset_io.PresetError(
            f"This preset holds a {type(backbone).__name__} and no saved task, so "
            f"{cls.__name__}.from_preset cannot tell which task to build "
            f"(candidates: {names}). Fix: call the task class you want, e.g. "
            f"{candidates[0].__name__ if candidates else 'a concrete task'}.from_preset(...)."
        )

    @classmethod
    def from_preset(cls, handle: str | os.PathLike, load_weights: bool = True,
                    **kwargs: Any) -> Task:
        """Build a task from a preset handle.

        The backbone (and its weights) and preprocessor come from the preset.
        When the preset has a saved task of this class, its head and weights
        are restored too, unless `kwargs` change the head (e.g. a different
        `num_classes`), in which case a fresh head is built.

        Args:
            handle: any preset handle (see `Backbone.from_preset`).
            load_weights: when False, random weights everywhere.
            **kwargs: head arguments (`num_classes=...`), `dtype=...` for the
                backbone, `sequence_length=...` for the preprocessor, or a
                ready `preprocessor=...`.

        Example:

        >>> from zoo.models import BertTextClassifier
        >>> clf = BertTextClassifier.from_preset(  # doctest: +SKIP
        ...     "bert_tiny_en_uncased", num_classes=2)
        """
        from zoo.presets import resolve

        directory = resolve(handle)
        backbone_kwargs = {k: kwargs.pop(k) for k in ("dtype",) if k in kwargs}
        backbone = Backbone.from_preset(directory, load_weights=load_weights, **backbone_kwargs)
        saved_cls, saved_config = None, {}
        if (directory / preset_io.TASK_FILE).is_file():
            data = preset_io.read_json(directory, preset_io.TASK_FILE)
            saved_cls = preset_io.get_class(data, Task, directory, "task")
            saved_config = data["config"]
        task_cls = cls._pick_class(backbone, saved_cls)
        preprocessor = kwargs.pop("preprocessor", None)
        pre_kwargs = {k: kwargs.pop(k) for k in ("sequence_length",) if k in kwargs}
        if preprocessor is None and task_cls.preprocessor_cls is not None and (
            directory / preset_io.PREPROCESSOR_FILE
        ).is_file():
            preprocessor = task_cls.preprocessor_cls.from_preset(directory, **pre_kwargs)
        use_saved = saved_cls is task_cls
        config = {**(saved_config if use_saved else {}), **kwargs}
        config.pop("name", None)
        task = task_cls(backbone=backbone, preprocessor=preprocessor, **config)
        head_changed = any(saved_config.get(k) != v for k, v in kwargs.items())
        if load_weights and use_saved and not head_changed and task.head_weights():
            preset_io.load_weights(task.head_weights(), directory, preset_io.TASK_WEIGHTS)
        return task

    def save_to_preset(self, preset_dir: str | os.PathLike) -> None:
        """Save backbone, preprocessor and head into one preset directory."""
        preset_io.write_preset(preset_dir, task=self)


def _all_subclasses(cls: type) -> Sequence[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out

