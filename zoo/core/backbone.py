"""`Backbone`: the base of every zoo model body (a functional Keras model)."""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import keras
import ml_dtypes
import numpy as np

from zoo.core import deferred, preset_classes, preset_handlers, preset_io, quantization, weights_io
from zoo.core.compiled_loop import choose_keras_jit, recovers_from_failed_loops
from zoo.core.errors import InputError, PresetError
from zoo.utils.atomic import atomic_file

#: the Dense layers `enable_lora` adapts by default: attention queries and values
DEFAULT_LORA_TARGETS: tuple[str, ...] = ("query", "value")
#: marker and version of the files `save_lora_weights` writes
LORA_FORMAT = "zoo.lora"
LORA_FORMAT_VERSION = 1
#: layer classes whose Keras `enable_lora(rank)` LoRA uses
_LORA_LAYER_TYPES = (keras.layers.Dense, keras.layers.EinsumDense)


@recovers_from_failed_loops
class Backbone(keras.Model):
    """Base class for zoo backbones.

    A backbone is a functional `keras.Model` built from explicit constructor
    arguments, which `get_config()` mirrors exactly; that config plus the
    weights is a preset. Subclasses build their graph in `__init__` and pass
    `inputs`/`outputs` to this constructor.

    `Backbone.from_preset(handle)` on the base class returns whatever subclass
    the preset holds; on a subclass it checks the preset holds that class.

    Every backbone supports LoRA fine-tuning (`enable_lora`): low-rank
    adapters on the attention projections, saved with the preset or on their
    own (`save_lora_weights` / `load_lora_weights`).
    """

    #: path prefixes of the parts `quantize` quantizes by default (empty: all)
    quantized_parts: tuple[str, ...] = ()

    def __init__(self, *args: Any, dtype: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, dtype=dtype, **kwargs)
        if dtype is not None:
            # A functional model drops `dtype`; set it so `dtype_policy` (read by
            # task heads) and `get_config()` report the backbone's real policy.
            # A DTypePolicyMap (a quantized preset) named its layers' policies,
            # which they took when they were made; the backbone keeps its default.
            self._dtype_policy = quantization.base_policy(dtype)
        quantization.check_first(self)
        self._lora_rank: int | None = None
        self._lora_target_names: tuple[str, ...] = ()
        choose_keras_jit(self)
        from zoo.layout import check_distribution

        # Under a keras.distribution scope: a clear error off jax, and the
        # layout map checked against these variables (from_preset builds
        # abstractly first, so this runs before any weight is placed).
        check_distribution(self)

    # -- LoRA -----------------------------------------------------------------
    @property
    def lora_rank(self) -> int | None:
        """The LoRA rank, or None when LoRA is not enabled."""
        return getattr(self, "_lora_rank", None)

    @property
    def lora_target_names(self) -> tuple[str, ...]:
        """Names of the layers carrying adapters (empty when LoRA is off)."""
        return getattr(self, "_lora_target_names", ())

    def _lora_candidates(self) -> list[keras.layers.Layer]:
        return [layer for layer in self._flatten_layers(include_self=False)
                if isinstance(layer, _LORA_LAYER_TYPES)]

    @property
    def lora_weights(self) -> list[keras.Variable]:
        """The adapter variables (`lora_kernel_a`/`lora_kernel_b` of every
        adapted layer), in `self.weights` order; empty when LoRA is off."""
        ids = set()
        for layer in self._lora_candidates():
            if getattr(layer, "lora_enabled", False):
                ids.update((id(layer.lora_kernel_a), id(layer.lora_kernel_b)))
        return [v for v in self.weights if id(v) in ids]

    def enable_lora(
        self, rank: int, target_names: Sequence[str] = DEFAULT_LORA_TARGETS
    ) -> None:
        """Add LoRA adapters and make them the only trainable variables.

        Every `Dense` (or `EinsumDense`) layer in the backbone whose name is in
        `target_names` gets Keras' low-rank adapter (`layer.enable_lora(rank)`:
        `kernel + A @ B`, `A` random, `B` zero, so outputs do not change until
        training). Then every variable of the backbone except the adapters is
        frozen (`variable.trainable = False`); a task's own head stays
        trainable. The rank and targets become part of `get_config()`, so a
        preset saved afterwards reloads with the adapters in place.

        Enable LoRA before the task's first `fit`. A task compiled but not
        yet trained picks the change up by itself (its optimizer is built on
        the first `fit`). A task already trained holds an optimizer built for
        the old variables: call its `compile(...)` again with a new optimizer.
        Otherwise `fit` raises on JAX and PyTorch and silently keeps training
        the old variables on TensorFlow. `generate` needs nothing: its
        compiled steps are keyed by the model's variables and rebuilt. Setting `backbone.trainable = True` later
        makes every variable trainable again.

        Args:
            rank: the adapter rank, a positive int.
            target_names: names of the layers to adapt; by default the query
                and value projections of every attention layer.

        Raises:
            ValueError: LoRA is already enabled, `rank` is not a positive int,
                or a target name matches no Dense layer.

        Example:

        >>> from zoo.models import BertBackbone
        >>> backbone = BertBackbone(vocabulary_size=50, num_layers=1, num_heads=2,
        ...                         hidden_dim=8, intermediate_dim=16)
        >>> backbone.enable_lora(rank=2)
        >>> [v.path for v in backbone.trainable_weights]  # doctest: +NORMALIZE_WHITESPACE
        ['transformer_layer_0/self_attention/query/lora_kernel_a',
         'transformer_layer_0/self_attention/query/lora_kernel_b',
         'transformer_layer_0/self_attention/value/lora_kernel_a',
         'transformer_layer_0/self_attention/value/lora_kernel_b']
        >>> backbone.get_config()["lora_rank"]
        2
        """
        if self.lora_rank is not None:
            raise InputError(
                f"LoRA is already enabled on this {type(self).__name__} (rank "
                f"{self.lora_rank}, targets {list(self.lora_target_names)}); it can be "
                "enabled only once. Fix: to change the rank or targets, build a fresh "
                "backbone from the base weights (without LoRA) and enable it there."
            )
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
            raise InputError(f"LoRA rank must be a positive int, got {rank!r}. Fix: pass "
                             "e.g. rank=4.")
        rank = int(rank)
        if isinstance(target_names, str):
            target_names = (target_names,)
        targets = tuple(dict.fromkeys(target_names))  # unique, in order
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise InputError(
                f"target_names must be a non-empty sequence of layer names, got "
                f"{target_names!r}. Fix: pass e.g. target_names=('query', 'value')."
            )
        candidates = self._lora_candidates()
        matched = [layer for layer in candidates if layer.name in targets]
        found = {layer.name for layer in matched}
        unmatched = [t for t in targets if t not in found]
        if unmatched:
            available = sorted({layer.name for layer in candidates})
            raise InputError(
                f"No Dense layer of this {type(self).__name__} is named "
                f"{', '.join(map(repr, unmatched))} (targets: {list(targets)}). "
                f"Fix: name some of the Dense layers available: {available}."
            )
        adapted = [layer.name for layer in matched if getattr(layer, "lora_enabled", False)]
        if adapted:
            raise InputError(
                f"Layers {sorted(set(adapted))} already carry LoRA adapters (enabled "
                "directly on the layers). Fix: build a fresh backbone and call "
                "Backbone.enable_lora only."
            )
        unbuilt = sorted({layer.name for layer in matched if not layer.built})
        if unbuilt:
            raise InputError(
                f"Layers {unbuilt} are not built yet, so LoRA cannot be added to them. "
                "Fix: build the backbone first (call it once, or load it with from_preset)."
            )
        for layer in matched:
            layer.enable_lora(rank)
        lora_ids = {id(v) for v in self.lora_weights}
        for variable in self.weights:
            variable.trainable = id(variable) in lora_ids
        self._lora_rank = rank
        self._lora_target_names = targets

    def _require_lora(self, action: str) -> list[keras.Variable]:
        if self.lora_rank is None:
            raise InputError(
                f"{action} needs LoRA enabled on this {type(self).__name__}. Fix: call "
                "backbone.enable_lora(rank=...) first."
            )
        return self.lora_weights

    def save_lora_weights(self, path: str | os.PathLike) -> Path:
        """Save only the LoRA adapters to one small HDF5 file (atomically).

        The file holds each adapter variable under its path plus the rank and
        target names; load it with `load_lora_weights` into a backbone of the
        same architecture with the same LoRA rank and targets.

        Args:
            path: the file to write (e.g. `"adapters.lora.h5"`); an existing
                file is replaced only once the new one is complete.

        Returns:
            The path written.

        Raises:
            ValueError: LoRA is not enabled.

        Example:

        >>> import os, tempfile
        >>> import keras
        >>> import numpy as np
        >>> from zoo.models import BertBackbone
        >>> def tiny():
        ...     return BertBackbone(vocabulary_size=50, num_layers=1, num_heads=2,
        ...                         hidden_dim=8, intermediate_dim=16)
        >>> trained, fresh = tiny(), tiny()
        >>> trained.enable_lora(rank=2)
        >>> path = os.path.join(tempfile.mkdtemp(), "adapters.lora.h5")
        >>> _ = trained.save_lora_weights(path)
        >>> fresh.enable_lora(rank=2)
        >>> fresh.load_lora_weights(path)
        >>> all(np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
        ...     for a, b in zip(trained.lora_weights, fresh.lora_weights))
        True
        """
        variables = self._require_lora("save_lora_weights")
        path = Path(path)
        weights_io._unique_paths(variables)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = LORA_FORMAT
                f.attrs["format_version"] = LORA_FORMAT_VERSION
                f.attrs["lora_rank"] = self.lora_rank
                f.attrs["target_names"] = json.dumps(list(self.lora_target_names))
                f.attrs["backbone_class"] = type(self).__name__
                for variable in variables:
                    data = np.asarray(keras.ops.convert_to_numpy(variable))
                    dtype = str(data.dtype)
                    if dtype == "bfloat16":
                        data = data.view(np.uint16)
                    f.create_dataset(variable.path, data=data).attrs["dtype"] = dtype
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        return path

    def load_lora_weights(self, path: str | os.PathLike) -> None:
        """Load adapters written by `save_lora_weights` into this backbone.

        Everything is checked before any variable changes: the file is a zoo
        LoRA file, its rank equals this backbone's LoRA rank, and it holds
        exactly this backbone's adapter variables with the same shapes.

        Args:
            path: a file written by `save_lora_weights`.

        Raises:
            ValueError: LoRA is not enabled on this backbone.
            FileNotFoundError: `path` does not exist.
            PresetError: the file is not a zoo LoRA file, or its rank,
                variable paths or shapes do not match this backbone.

        Example: see `save_lora_weights`.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No LoRA weight file at {path}.")
        # Only datasets of an adapter's path and shape are read, after their
        # element type is checked: a tiny file cannot declare gigabytes.
        expected = {v.path: tuple(v.shape) for v in self.lora_weights}
        try:
            with h5py.File(path, "r") as f:
                attrs = dict(f.attrs)
                arrays: dict[str, np.ndarray] = {}
                shapes: dict[str, tuple[int, ...]] = {}

                def visit(name: str, item: object) -> None:
                    if isinstance(item, h5py.Dataset):
                        weights_io.check_dataset(path, name, item)
                        shapes[name] = tuple(item.shape)
                        if expected.get(name) != shapes[name]:
                            return
                        data = np.asarray(item[()])
                        if item.attrs.get("dtype") == "bfloat16":
                            data = data.view(ml_dtypes.bfloat16)
                        arrays[name] = data

                if attrs.get("format") == LORA_FORMAT:
                    f.visititems(visit)
        except (OSError, KeyError) as e:
            raise PresetError(
                f"Cannot read LoRA weight file {path}: it is truncated or not HDF5 "
                f"({e}). Fix: save the adapters again with save_lora_weights()."
            ) from None
        if attrs.get("format") != LORA_FORMAT or "lora_rank" not in attrs:
            raise PresetError(
                f"{path} is not a zoo LoRA file (no '{LORA_FORMAT}' marker). Fix: pass "
                "a file written by save_lora_weights()."
            )
        saved_rank = int(attrs["lora_rank"])
        saved_targets = json.loads(attrs.get("target_names", "[]"))
        if self.lora_rank is None:
            raise InputError(
                f"load_lora_weights needs LoRA enabled on this {type(self).__name__}. "
                f"Fix: call backbone.enable_lora(rank={saved_rank}, "
                f"target_names={saved_targets}) first."
            )
        if saved_rank != self.lora_rank:
            raise PresetError(
                f"The adapters in {path} have rank {saved_rank} (targets "
                f"{saved_targets}), but this backbone has LoRA rank {self.lora_rank} "
                f"(targets {list(self.lora_target_names)}). Fix: enable LoRA with "
                f"rank={saved_rank} on a fresh backbone."
            )
        variables = self.lora_weights
        paths = [v.path for v in variables]
        missing = [p for p in paths if p not in shapes]
        unexpected = sorted(set(shapes) - set(paths))
        if missing or unexpected:
            raise PresetError(
                f"The adapters in {path} (saved from a "
                f"{attrs.get('backbone_class', '?')} with targets {saved_targets}) do "
                f"not fit this {type(self).__name__} (targets "
                f"{list(self.lora_target_names)}): missing {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                f"{'...' if len(unexpected) > 5 else ''}. Fix: load them into the "
                "architecture and LoRA targets they were trained with."
            )
        for p, variable in zip(paths, variables):
            if shapes[p] != tuple(variable.shape):
                raise PresetError(
                    f"LoRA weight {p!r} in {path} has shape {shapes[p]}, "
                    f"but this backbone expects {tuple(variable.shape)}. Fix: load them "
                    "into the architecture they were trained with."
                )
        for p, variable in zip(paths, variables):
            variable.assign(arrays[p].astype(weights_io.numpy_dtype(variable.dtype)))

    # -- sharding -------------------------------------------------------------
    @classmethod
    def layout_rules(cls) -> list:
        """The family's `zoo.layout.ShardRule`s (model-parallel sharding)."""
        from zoo.layout import LayoutError

        raise LayoutError(
            f"{cls.__name__} has no layout rules yet, so it cannot be sharded. Fix: "
            "use keras.distribution.DataParallel, or build a keras LayoutMap by hand."
        )

    @classmethod
    def get_layout_map(cls, device_mesh: keras.distribution.DeviceMesh,
                       model_dim: str = "model", batch_dim: str = "batch") -> Any:
        """A layout map that shards this family over `device_mesh` (jax only).

        Attention and MLP kernels split along `model_dim` (Megatron-style
        column / row parallelism), embeddings along the vocabulary or hidden
        axis; everything else is replicated. Building the model under the
        distribution checks the map against the real variables first (every
        rule must match, heads and sizes must divide the axis).

        Args:
            device_mesh: a `keras.distribution.DeviceMesh`
                (`zoo.layout.make_mesh((1, 8))`).
            model_dim: the mesh axis weights are split over.
            batch_dim: the mesh axis the batch is split over.

        Returns:
            A `zoo.layout.ZooLayoutMap` (a `keras.distribution.LayoutMap`).

        Example:

        >>> import keras, zoo.layout
        >>> from zoo.models import OPTBackbone
        >>> if keras.backend.backend() == "jax":
        ...     layout_map = OPTBackbone.get_layout_map(zoo.layout.make_mesh((1, -1)))
        ...     with zoo.layout.model_parallel(layout_map).scope():
        ...         backbone = OPTBackbone(vocabulary_size=64, num_layers=1, num_heads=2,
        ...                                hidden_dim=8, intermediate_dim=16)
        """
        from zoo.layout import build_layout_map

        return build_layout_map(cls.__name__, cls.layout_rules(), device_mesh,
                                model_dim, batch_dim)

    # -- config ---------------------------------------------------------------
    def get_config(self) -> dict:
        # Subclasses extend this with their constructor arguments.
        config = {
            "name": self.name,
            "trainable": self.trainable,
            **quantization.config_entries(self, self.dtype_policy),
        }
        if self.lora_rank is not None:
            config["lora_rank"] = self.lora_rank
            config["lora_target_names"] = list(self.lora_target_names)
        return config

    @classmethod
    def from_config(cls, config: dict) -> Backbone:
        config = dict(config)
        lora_rank = config.pop("lora_rank", None)
        lora_target_names = config.pop("lora_target_names", None)
        quantized_activations = config.pop("quantized_activations", True)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        backbone = cls(**config)
        if not quantized_activations:
            quantization.keep_activations(backbone)
        if lora_rank is not None:
            # Before any weights are loaded, so the adapters' variables exist.
            backbone.enable_lora(
                lora_rank,
                DEFAULT_LORA_TARGETS if lora_target_names is None else lora_target_names,
            )
        return backbone

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
                Without `dtype`, the preset's recorded policy applies, unless
                Keras' global policy was set to another than float32 (e.g.
                `keras.config.set_dtype_policy("mixed_bfloat16")`): then that one.

        Example:

        >>> from zoo.models import Backbone
        >>> backbone = Backbone.from_preset("all_minilm_l6_v2")  # doctest: +SKIP
        """
        directory = preset_handlers.resolve(handle)
        data = preset_io.read_json(directory, preset_io.CONFIG_FILE)
        backbone_cls = preset_classes.get_class(data, cls, directory, "backbone")
        global_policy = keras.config.dtype_policy()
        if "dtype" not in overrides and global_policy.name != "float32" and not getattr(
                global_policy, "quantization_mode", None):
            # A global policy the user set (keras.config.set_dtype_policy(
            # "mixed_bfloat16") or set_floatx) applies to a loaded backbone as
            # to one built in code: the preset's recorded policy (float32 even
            # for a 16-bit source) would otherwise silently replace it.
            overrides = {**overrides, "dtype": global_policy.name}
        recorded = preset_classes.config_of(data, directory, preset_io.CONFIG_FILE)
        if "dtype" in overrides and "dtype" in recorded:
            # A quantized preset stays quantized; only its compute dtype changes.
            overrides = {**overrides, "dtype": quantization.with_compute_dtype(
                recorded["dtype"], overrides["dtype"])}
        config = {**recorded, **overrides}

        def build() -> Backbone:
            return preset_classes.from_config(backbone_cls, config, directory,
                                              preset_io.CONFIG_FILE)

        if not load_weights:
            return build()
        # Hashed before the (possibly big) model is built, so damage fails fast.
        preset_io.verify_weights(directory, preset_io.BACKBONE_WEIGHTS)
        # Built without allocating (no random initial values), then each
        # variable gets its stored value once (into its shards under a
        # keras.distribution scope): see zoo/core/deferred.py.
        backbone, created = deferred.abstract_build(build)
        preset_io.load_weights(backbone.weights, directory, preset_io.BACKBONE_WEIGHTS,
                               verified=True)
        deferred.initialize_rest(created)  # state that is not a weight (seed generators)
        return backbone

    def quantize(self, mode: str, activations: bool = False, **kwargs: Any) -> None:
        """Quantize every Dense, EinsumDense and token embedding (of the
        `quantized_parts`, unless Keras' `filters` says) through Keras
        (`keras.Model.quantize`): `"int8"` (per-channel int8 weights;
        `activations=True` rounds each layer's inputs to int8 too), `"int4"`
        or `"float8"`. Presets keep the quantization; see
        `zoo.core.quantization` (an example there)."""
        quantization.quantize(self, mode, activations, parts=self.quantized_parts, **kwargs)

    def save_to_preset(self, preset_dir: str | os.PathLike) -> None:
        """Save config and weights to `preset_dir` (atomically).

        Args:
            preset_dir: directory to create, or a zoo preset to update.
        """
        preset_io.write_preset(preset_dir, backbone=self)
