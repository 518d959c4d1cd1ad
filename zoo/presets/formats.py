"""Format detection and the registry of converters into zoo presets."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

from zoo.core.errors import ConversionError, PresetError

#: transformers `model_type` -> "module:function" converting such a folder.
TRANSFORMERS_CONVERTERS: dict[str, str] = {
    "bert": "zoo.nlp.bert.bert_convert:convert_transformers",
    "opt": "zoo.nlp.opt.opt_convert:convert_transformers",
}

SUPPORTED = "zoo presets and transformers folders (model types: {})"


def detect_format(path: Path) -> str:
    """Say what `path` holds: `"zoo"`, `"transformers"` (more formats to come).

    Raises:
        PresetError: `path` holds nothing zoo can load or convert.
    """
    from zoo.core.preset_io import is_zoo_preset

    path = Path(path)
    if path.is_dir():
        if is_zoo_preset(path):
            return "zoo"
        config = path / "config.json"
        if config.is_file():
            try:
                data = json.loads(config.read_text())
            except json.JSONDecodeError:
                data = {}
            if "model_type" in data:
                return "transformers"
    raise PresetError(
        f"{path} is neither a zoo preset (no metadata.json) nor a checkpoint zoo can "
        f"convert. zoo reads {SUPPORTED.format(', '.join(sorted(TRANSFORMERS_CONVERTERS)))}. "
        "Fix: point at such a directory."
    )


def _load(spec: str) -> Callable:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def converter_for(path: Path, fmt: str) -> Callable[[Path, Path, str], None]:
    """The function that converts `path` (of format `fmt`) into a zoo preset.

    Converters are called as `convert(source_dir, output_dir, source_handle)`
    and write a complete preset into `output_dir`.
    """
    if fmt == "transformers":
        model_type = json.loads((Path(path) / "config.json").read_text())["model_type"]
        if model_type not in TRANSFORMERS_CONVERTERS:
            raise ConversionError(
                f"{path} is a transformers '{model_type}' model, which zoo cannot "
                f"convert yet (supported: {', '.join(sorted(TRANSFORMERS_CONVERTERS))})."
            )
        return _load(TRANSFORMERS_CONVERTERS[model_type])
    raise ConversionError(f"No converter for format {fmt!r}.")
