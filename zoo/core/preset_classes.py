"""Which class a preset file makes, and whether its config fits that class.

Every serialized object in a preset (config.json, tokenizer.json,
preprocessor.json, task.json) names its registered Keras class and holds a
`"config"` object. These helpers find the class, check it is the kind asked
for, check the config against the constructor's annotations, and check before
any weight is read that a preset can make the task class `from_preset` was
called on, each failure one `PresetError` with a Fix.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

import zoo
from zoo.core.errors import PresetError, ZooError
from zoo.core.preset_io import (
    _LIBRARY_ERRORS,
    CONFIG_FILE,
    TASK_FILE,
    read_json,
    read_metadata,
    repair_hint,
)


def get_class(data: dict, base: type, directory: Path, what: str) -> type:
    """The registered zoo class named in a serialized config, checked against `base`.

    The class is found through the module the config records (Keras writes
    it): a `zoo.` module is imported, which registers its classes, so only
    the preset's own family is loaded. Modules outside zoo are never imported
    from a preset file; their classes must already be registered (imported by
    the user).
    """
    module = data.get("module")
    if isinstance(module, str) and module.startswith("zoo.") and all(
            part.isidentifier() for part in module.split(".")):
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # a module this version of zoo lacks: "does not know" below
    name = data.get("registered_name") or data.get("class_name")
    if not isinstance(name, str) or not name:
        raise PresetError(
            f"The {what} file in {directory} names no class ('registered_name'), so it "
            f"was not written by save_to_preset() or was damaged. {repair_hint(directory)}"
        )
    cls = keras.saving.get_registered_object(name)
    if not isinstance(cls, type):
        raise PresetError(
            f"The {what} in {directory} is of class {name!r}, which this version of "
            f"zoo ({zoo.__version__}) does not know. Fix: upgrade zoo."
        )
    if not issubclass(cls, base):
        raise PresetError(
            f"{directory} holds a {cls.__name__}, which is not a {base.__name__}. "
            f"Fix: load it with {cls.__name__}.from_preset(...) or a base class "
            "such as zoo.models.Backbone / zoo.models.Task."
        )
    return cls


def config_of(data: dict, directory: Path, name: str) -> dict:
    """The `"config"` object of the serialized object read from `name`."""
    config = data.get("config")
    if not isinstance(config, dict):
        found = "none" if config is None else f"a JSON {type(config).__name__}"
        raise PresetError(
            f"{Path(directory) / name} has no 'config' object (found {found}), so it "
            f"was not written by save_to_preset() or was damaged. {repair_hint(directory)}"
        )
    return dict(config)


#: constructor arguments that are sizes or counts (never negative)
_SIZE_NAME = ("num_", "max_")
_SIZE_SUFFIX = ("_dim", "_size", "_length", "_layers", "_heads", "_classes")
_SIMPLE = (bool, int, float, str, type(None))


def _accepts(kind: type, value: Any) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _field_problem(cls: type, config: Mapping) -> str | None:
    """What is wrong with a field of `config` for `cls(**config)`, judged from
    the constructor's plain annotations (bool, int, float, str, None and
    unions of them) and size-like names; None when nothing is seen."""
    try:
        params = inspect.signature(cls.__init__).parameters
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # annotations that cannot be evaluated: nothing to judge by
        return None
    for key, value in config.items():
        hint, param = hints.get(key), params.get(key)
        if hint is None or param is None:
            continue
        origin = typing.get_origin(hint)
        if origin is None:
            kinds: tuple = (hint,)
        elif origin in (typing.Union, types.UnionType):
            kinds = typing.get_args(hint)
        else:
            continue  # list[int], Literal[...], ...: not judged here
        if not all(k in _SIMPLE for k in kinds):
            continue
        if not any(_accepts(k, value) for k in kinds):
            wanted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            return f"field {key!r} is {value!r}, but {cls.__name__} takes {wanted}"
        sized = key.startswith(_SIZE_NAME) or key.endswith(_SIZE_SUFFIX)
        default = param.default
        if (sized and _accepts(int, value) and value < 0
                and not (_accepts(int, default) and default < 0)):
            return f"field {key!r} is {value}, but a size or count cannot be negative"
    return None


def from_config(cls: type, config: Mapping, directory: Path, name: str) -> Any:
    """`cls.from_config(config)` for a config read from `name` in a preset.

    A config that does not fit the class (a wrong type, a negative size, an
    unknown or missing argument) gives one `PresetError` naming the field
    where the constructor's annotations tell it, instead of an error from
    deep inside a layer.
    """
    path = Path(directory) / name
    problem = _field_problem(cls, config)
    if problem is not None:
        raise PresetError(
            f"The config in {path} does not fit {cls.__name__}: {problem}. "
            f"{repair_hint(directory)}"
        )
    try:
        return cls.from_config(dict(config))
    except ZooError:
        raise
    except _LIBRARY_ERRORS as e:
        raise PresetError(
            f"The config in {path} does not build a {cls.__name__} "
            f"({type(e).__name__}: {e}). {repair_hint(directory)}"
        ) from None


def _subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


def check_task_preset(task_cls: type, directory: Path, kwargs: Mapping) -> None:
    """Check, before any weight is read, that the preset can make a `task_cls`.

    The preset's backbone must be one `task_cls` (or one of its subclasses)
    is built on, and every constructor argument the task requires must come
    from the preset's saved task or from `kwargs`.

    Args:
        task_cls: the class `from_preset` was called on.
        directory: the resolved preset directory.
        kwargs: the keyword arguments given to `from_preset`.

    Raises:
        PresetError: naming the preset's classes and the class asked for.
    """
    directory = Path(directory)
    backbone_cls = get_class(read_json(directory, CONFIG_FILE), object, directory, "backbone")
    saved_cls, saved_config = None, {}
    if (directory / TASK_FILE).is_file() or TASK_FILE in read_metadata(directory)["files"]:
        data = read_json(directory, TASK_FILE)
        saved_cls = get_class(data, object, directory, "task")
        saved_config = config_of(data, directory, TASK_FILE)
    holds = f"a {backbone_cls.__name__}" + (f" (saved task: {saved_cls.__name__})"
                                             if saved_cls else " and no saved task")
    fits = [t for t in _subclasses(task_cls) if getattr(t, "backbone_cls", None) is not None
            and issubclass(backbone_cls, t.backbone_cls)]
    if not fits:
        load = saved_cls.__name__ if saved_cls else backbone_cls.__name__
        raise PresetError(
            f"{directory} holds {holds}, which cannot make a {task_cls.__name__}. "
            f"Fix: load it with {load}.from_preset(...) or zoo.models.Task.from_preset(...), "
            f"or pick a preset of the {task_cls.__name__} family."
        )
    if getattr(task_cls, "backbone_cls", None) is None:
        return  # a base class: the concrete task is chosen after the backbone loads
    given = set(kwargs) | (set(saved_config) if saved_cls is task_cls else set())
    required = [n for n, p in inspect.signature(task_cls.__init__).parameters.items()
                if p.default is inspect.Parameter.empty and n not in ("self", "backbone")
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in given]
    if required:
        args = ", ".join(f"{n}=..." for n in required)
        raise PresetError(
            f"{directory} holds {holds}, so it gives no {', '.join(required)} for a "
            f"{task_cls.__name__}. Fix: pass them, e.g. {task_cls.__name__}.from_preset("
            f"..., {args})."
        )
