"""`Task`: a backbone plus a head plus a preprocessor, trainable on raw data.

`fit`, `evaluate` and `predict` accept raw inputs (a list of strings, pairs
of lists for sentence pairs, ...): they are preprocessed batch by batch in
numpy through a `keras.utils.PyDataset`, so no tf.data is needed on JAX or
PyTorch. Already-preprocessed inputs (dicts of arrays, datasets, generators)
pass straight through.

Preprocessors pad each batch only to its own length bucket, so batches differ
in shape. Keras' PyDataset adapter for TensorFlow fixes the dataset's shapes
from the first two batches, which breaks on a later batch of another bucket;
so on TensorFlow `fit` and `evaluate` read the batches through a tf.data
pipeline whose element spec leaves every axis dynamic that the model accepts
at any size (`zoo.core.compiled_loop.backend_dataset`). `predict` runs batch
by batch and pads outputs whose length follows the batch's (a causal LM's
logits) to the longest batch.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from zoo.core import export as export_lib
from zoo.core import preset_classes, preset_handlers, preset_io, processes, quantization
from zoo.core.backbone import Backbone
from zoo.core.compiled_loop import backend_dataset, recovers_from_failed_loops
from zoo.core.errors import InputError
from zoo.core.preprocessor import Preprocessor


def positive_int(value: Any, name: str, example: int) -> int:
    """`value` as an int, or an `InputError` unless it is a positive integer.

    Args:
        value: what the caller passed (an int or numpy integer; not a bool).
        name: the argument's name, for the message.
        example: a sensible value to suggest in the message.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name}={value!r} is not a positive int. Fix: pass e.g. "
                         f"{name}={example}.")
    return int(value)


def check_inputs(x: Any, what: str = "x") -> None:
    """Raise an `InputError` for inputs that no task reads: nothing (None, an
    empty list, tuple or array, or a tuple of sentence pairs with an empty
    side), bytes, or a bare number. Everything else is left to the
    preprocessor (raw inputs) or to Keras (arrays, datasets).
    """
    if isinstance(x, (bytes, bytearray)):
        raise InputError(
            f"{what} is bytes. Fix: decode text first (data.decode('utf-8')); for an image or "
            "audio file, pass its path or the decoded array.")
    if x is None or isinstance(x, numbers.Number):
        raise InputError(f"{what} is {x!r}, not a batch of inputs. Fix: pass a list of "
                         "inputs, e.g. model.predict(['some text']).")
    if isinstance(x, (list, tuple, np.ndarray)) and (
            not isinstance(x, np.ndarray) or x.ndim > 0) and len(x) == 0:
        raise InputError(f"{what} is empty ({type(x).__name__} of length 0): there is nothing "
                         "to run. Fix: pass at least one input.")
    if isinstance(x, tuple):
        for part in x:
            if isinstance(part, (list, tuple, np.ndarray)):
                check_inputs(part, what)


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


def _standardize(batch: Any) -> Any:
    """A preprocessor's output as Keras reads a batch: `x`, or a tuple
    `(x, y)` / `(x, y, sample_weight)` without trailing `None`s."""
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, tuple):
        return batch
    while len(batch) > 1 and batch[-1] is None:
        batch = batch[:-1]
    return batch[0] if len(batch) == 1 else batch


def _spec(value: Any, declared: Any) -> Any:
    """`keras.KerasTensor` spec of one batch structure, with the batch axis and
    every axis that `declared` (the model's matching input, or None) does not
    fix left dynamic."""
    if isinstance(value, dict):
        return {k: _spec(v, declared.get(k) if isinstance(declared, dict) else None)
                for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        same = isinstance(declared, (tuple, list)) and len(declared) == len(value)
        return type(value)(_spec(v, declared[i] if same else None)
                           for i, v in enumerate(value))
    array = np.asarray(value)
    fixed = declared.shape if isinstance(declared, keras.KerasTensor) and len(
        declared.shape) == array.ndim else (None,) * array.ndim
    shape = (None,) + tuple(size if fixed[axis] is not None else None
                            for axis, size in enumerate(array.shape) if axis > 0)
    return keras.KerasTensor(shape, dtype=keras.backend.standardize_dtype(array.dtype))


def _concat_padded(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate batches along axis 0, zero-padding every other axis to the
    largest batch's size where batches differ (per-batch length buckets)."""
    parts = [np.asarray(p) for p in parts]
    if len(parts) == 1:
        return parts[0]
    if any(p.ndim != parts[0].ndim for p in parts):
        raise InputError(f"Batches of outputs differ in rank: {[p.shape for p in parts]}.")
    size = np.max([p.shape for p in parts], axis=0)
    padded = [np.pad(p, [(0, 0)] + [(0, int(n) - d) for n, d in zip(size[1:], p.shape[1:])])
              for p in parts]
    return np.concatenate(padded, axis=0)


class PreprocessedBatches(keras.utils.PyDataset):
    """Batches of raw data, preprocessed on the fly (one Keras PyDataset)."""
    split_over_processes = False  # fit, evaluate: each process's rows (processes.local_part)

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
                raise InputError(f"Got {n} inputs but {len(value)} values in {name}. Fix: "
                                 f"give one value of {name} per input.")
        self.preprocessor = preprocessor
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self._rng = np.random.default_rng(processes.same_seed(seed))
        self._order = np.arange(n)
        if shuffle:
            self._rng.shuffle(self._order)

    def __len__(self) -> int:
        return -(-len(self._order) // self.batch_size)

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(f"Batch {index} of {len(self)}.")
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        x = _take(self.x, rows)
        y = None if self.y is None else np.asarray(self.y)[rows]
        sw = None if self.sample_weight is None else np.asarray(self.sample_weight)[rows]
        batch = _standardize(self.preprocessor(x, y, sw))
        return processes.local_part(batch) if self.split_over_processes else batch

    def element_spec(self, batch: Any, model_inputs: Any) -> Any:
        """The spec every batch fits: `batch`'s structure and dtypes; in `x`,
        the axes `model_inputs` (the model's `input`) fixes keep `batch`'s
        sizes, all others (length buckets) are dynamic; `y` and
        `sample_weight` keep only their rank.

        Args:
            batch: one batch (`self[i]`).
            model_inputs: the model's symbolic inputs (`keras.Model.input`),
                or None to leave every non-batch axis dynamic.
        """
        if isinstance(batch, tuple):
            return (_spec(batch[0], model_inputs),) + tuple(_spec(p, None) for p in batch[1:])
        return _spec(batch, model_inputs)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._rng.shuffle(self._order)


@recovers_from_failed_loops
class Task(keras.Model):
    """Base class for zoo tasks (classifier, masked LM, embedder, ...).

    Subclasses set `backbone_cls` and `preprocessor_cls`, build the functional
    graph in `__init__`, and list their constructor arguments in `get_config`.
    """

    backbone_cls: type[Backbone] | None = None
    preprocessor_cls: type[Preprocessor] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        quantization.check_first(self)

    def _check_input_keys(self, x: dict) -> None:
        """Raise an `InputError` when preprocessed inputs lack a model input."""
        try:
            expected = self.input  # a functional model's symbolic inputs
        except (AttributeError, ValueError):
            return
        missing = sorted(set(expected) - set(x)) if isinstance(expected, dict) else []
        if missing:
            raise InputError(
                f"The input dict lacks {missing} (it has {sorted(x)}; this model reads "
                f"{sorted(expected)}). Fix: pass every key, e.g. the preprocessor's output "
                "model.preprocessor(texts), or raw inputs.")

    # -- raw-input training and inference -------------------------------------
    def _batches(self, x: Any, y: Any, sample_weight: Any, batch_size: int | None,
                 shuffle: bool = False) -> PreprocessedBatches | None:
        """Raw `x` as preprocessed batches; None when `x` is not raw input.

        Raises:
            InputError: `x` is empty, bytes or a bare number, or `batch_size`
                is not a positive int.
        """
        check_inputs(x)
        if batch_size is not None:
            positive_int(batch_size, "batch_size", 32)
        if isinstance(x, dict):
            self._check_input_keys(x)
        if not self._is_raw_input(x):
            return None
        return PreprocessedBatches(
            self.preprocessor, x, y, sample_weight, batch_size or 32, shuffle=shuffle
        )

    def _wrap(self, x: Any, y: Any, sample_weight: Any, batch_size: int | None,
              shuffle: bool = False) -> tuple[Any, Any, Any, int | None]:
        """Raw `x` (and `y`, `sample_weight`) as one dataset Keras' `fit` and
        `evaluate` read on every backend, whatever length buckets its batches
        fall into; other inputs unchanged."""
        data = self._batches(x, y, sample_weight, batch_size, shuffle)
        if data is None:
            return x, y, sample_weight, batch_size
        data.split_over_processes = True
        try:
            model_inputs = self.input  # a functional model's symbolic inputs
        except (AttributeError, ValueError):
            model_inputs = None
        dataset = backend_dataset(data, lambda batch: data.element_spec(batch, model_inputs))
        return dataset, None, None, None

    def _is_raw_input(self, x: Any) -> bool:
        """Whether `x` is raw input that the preprocessor turns into batches."""
        return self.preprocessor is not None and _is_raw(x)

    def _wrap_validation(self, validation_data: Any) -> Any:
        """Raw `(x, y[, sample_weight])` validation data, preprocessed as `_wrap`
        does for `x` (without augmentation); anything else unchanged."""
        if not (isinstance(validation_data, tuple) and validation_data
                and self._is_raw_input(validation_data[0])):
            return validation_data
        vx, vy, vsw = keras.utils.unpack_x_y_sample_weight(validation_data)
        return self._wrap(vx, vy, vsw, None)[0]

    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None,
            shuffle: bool = True, sample_weight: Any = None,
            validation_data: Any = None, **kwargs: Any) -> keras.callbacks.History:
        """Train on raw inputs (e.g. a list of strings and labels) or arrays.

        Same arguments as `keras.Model.fit`; raw `validation_data` is
        preprocessed the same way.
        """
        raw = self._is_raw_input(x)
        x, y, sample_weight, batch_size = self._wrap(x, y, sample_weight, batch_size, shuffle)
        validation_data = self._wrap_validation(validation_data)
        # Raw inputs are reshuffled row by row every epoch by the batches themselves.
        with processes.presharded_data():  # (raw batches are each process's part)
            return super().fit(x, y, batch_size=batch_size, shuffle=shuffle and not raw,
                               sample_weight=sample_weight, validation_data=validation_data,
                               **kwargs)

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None,
                 sample_weight: Any = None, **kwargs: Any) -> Any:
        """Evaluate on raw inputs or arrays (arguments of `keras.Model.evaluate`)."""
        x, y, sample_weight, batch_size = self._wrap(x, y, sample_weight, batch_size)
        with processes.presharded_data():
            return super().evaluate(x, y, batch_size=batch_size, sample_weight=sample_weight,
                                    **kwargs)

    def predict(self, x: Any, batch_size: int | None = None, verbose: Any = 0,
                steps: int | None = None, callbacks: Any = None) -> Any:
        """Predict on raw inputs or arrays (arguments of `keras.Model.predict`).

        Raw inputs run batch by batch (each padded to its own length bucket);
        an output whose length follows the batch's (a causal LM's logits) is
        zero-padded to the longest batch, past each row's own padding.
        """
        data = self._batches(x, None, None, batch_size)
        if data is None:
            return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps,
                                   callbacks=callbacks)
        verbose = 1 if verbose == "auto" else verbose
        num = len(data) if steps is None else min(int(steps), len(data))
        if not isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks = keras.callbacks.CallbackList(
                callbacks, add_progbar=verbose != 0, verbose=verbose, epochs=1, steps=num,
                model=self)
        self.stop_predicting = False
        callbacks.on_predict_begin()
        outputs = []
        for step in range(num):
            callbacks.on_predict_batch_begin(step)
            batch = data[step]
            out = self.predict_on_batch(batch[0] if isinstance(batch, tuple) else batch)
            outputs.append(out)
            callbacks.on_predict_batch_end(step, {"outputs": out})
            if self.stop_predicting:
                break
        callbacks.on_predict_end()
        return keras.tree.map_structure(lambda *parts: _concat_padded(parts), *outputs)

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

    def quantize(self, mode: str, activations: bool = False, **kwargs: Any) -> None:
        """Quantize the backbone's weights (`Backbone.quantize`: `"int8"`,
        `"int4"` or `"float8"`, through Keras). The task's own head stays in
        float: it is a small part of the weights (an LM head tied to the
        token embedding reads the quantized table). `save_to_preset` and
        `from_preset` keep the quantization."""
        self.backbone.quantize(mode, activations, **kwargs)
        # Keras' compiled train/test/predict functions read the old variables.
        self.train_function = self.test_function = self.predict_function = None

    #: the name of the graph `export` writes, and of its output (functional tasks)
    export_names: tuple[str, str] = ("model", "outputs")

    def export_graphs(self) -> list[export_lib.ExportGraph]:
        """The inference graphs `export` writes (default: the whole model)."""
        return [export_lib.functional_graph(self, *self.export_names)]

    def export(self, filepath: str | os.PathLike, format: str = "onnx",
               graphs: Sequence[str] | None = None, overwrite: bool = False,
               verbose: bool | None = None, **kwargs: Any) -> os.PathLike:
        """Write the inference graphs (`export_graphs`) to the folder `filepath`
        as `"onnx"`, `"saved_model"` or `"litert"` artifacts, plus
        `export.json` (`zoo.core.export.export`), on every backend.

        Unlike `keras.Model.export`, the result is a folder of graphs (a
        Whisper or Stable Diffusion task has several); `verbose` is accepted
        and ignored (progress shows as a bar).

        Example:

        >>> embedder.export("minilm_onnx", format="onnx")  # doctest: +SKIP
        PosixPath('minilm_onnx')
        """
        if kwargs:
            raise InputError(f"export() got unexpected arguments {sorted(kwargs)}. Fix: pass "
                             "filepath, format, graphs and overwrite only.")
        if format == "tf_saved_model":
            raise InputError("zoo's export writes a folder of graphs; format 'saved_model' "
                             "writes one SavedModel per graph (<filepath>/<graph>/). Fix: pass "
                             "format='saved_model'.")
        return export_lib.export(self, filepath, format, graphs, overwrite)

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
        directory = preset_handlers.resolve(handle)
        # before any weight is read: a preset of another family, or one that
        # lacks what this task needs, is one clear PresetError
        preset_classes.check_task_preset(cls, directory, kwargs)
        backbone_kwargs = {k: kwargs.pop(k) for k in ("dtype",) if k in kwargs}
        backbone = Backbone.from_preset(directory, load_weights=load_weights, **backbone_kwargs)
        saved_cls, saved_config = None, {}
        if (directory / preset_io.TASK_FILE).is_file():
            data = preset_io.read_json(directory, preset_io.TASK_FILE)
            saved_cls = preset_classes.get_class(data, Task, directory, "task")
            saved_config = preset_classes.config_of(data, directory, preset_io.TASK_FILE)
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
        elif load_weights and any(name.startswith(f"{preset_io.TASK_WEIGHTS}.weights.") for name
                                  in preset_io.read_metadata(directory)["files"]):
            # a head with no weights of its own (tied to the embeddings, or
            # none at all): its file is still checked, so no damage goes unseen
            preset_io.verify_weights(directory, preset_io.TASK_WEIGHTS)
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

