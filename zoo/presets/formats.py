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
    "whisper": "zoo.audio.whisper.whisper_convert:convert_transformers",
}

#: CTranslate2 spec name (in model.bin) -> converter
CTRANSLATE2_CONVERTERS: dict[str, str] = {
    "WhisperSpec": "zoo.audio.whisper.whisper_convert:convert_ctranslate2",
}

#: single-file PyTorch checkpoints, by the family that reads them
TORCH_FILE_CONVERTERS: dict[str, str] = {
    "openai_whisper": "zoo.audio.whisper.whisper_convert:convert_openai",
    "ultralytics": "zoo.cv.yolov8.yolov8_convert:convert_ultralytics",
    "stable_diffusion": "zoo.diffusion.stable_diffusion.stable_diffusion_convert:"
                        "convert_single_file",
}

#: diffusers folders (model_index.json), by pipeline family
DIFFUSERS_CONVERTER = "zoo.diffusion.stable_diffusion.stable_diffusion_convert:convert_diffusers"

SUPPORTED = ("zoo presets, transformers folders (model types: {}), CTranslate2 Whisper "
             "folders (model.bin), openai-whisper .pt files, ultralytics YOLOv8 .pt files, "
             "diffusers Stable Diffusion folders (model_index.json) and single-file Stable "
             "Diffusion .safetensors/.ckpt checkpoints")


#: a weight name every single-file Stable Diffusion checkpoint holds
_SD_MARKER = b"model.diffusion_model.input_blocks.0.0.weight"


def torch_file_kind(path: Path) -> str:
    """Which family wrote a single-file checkpoint: `"stable_diffusion"` for
    original Stable Diffusion weights (`.safetensors` or `.ckpt`),
    `"ultralytics"` when its pickle names ultralytics classes, else
    `"openai_whisper"` (whose converter explains what it expected when the
    file is something else)."""
    import struct
    import zipfile
    import zlib

    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            with open(path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = f.read(min(length, 1 << 26))
        except (OSError, struct.error):
            header = b""
        return "stable_diffusion" if _SD_MARKER in header else "safetensors"
    try:
        with zipfile.ZipFile(path) as zf:
            pickles = [n for n in zf.namelist() if n.endswith("/data.pkl")]
            if pickles:
                with zf.open(pickles[0]) as f:
                    # No further than the file's size (+1 MiB): a compressed pickle
                    # cannot inflate into a memory bomb here.
                    data = f.read(path.stat().st_size + (1 << 20))
                if b"ultralytics" in data:
                    return "ultralytics"
                if _SD_MARKER in data:
                    return "stable_diffusion"
    except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
            zlib.error):
        pass  # the converter reports what is wrong with the file
    return "openai_whisper"


def ctranslate2_spec(path: Path) -> str | None:
    """The spec name in a CTranslate2 `model.bin` header, or None if it is not one."""
    import struct

    try:
        with open(path, "rb") as f:
            version, length = struct.unpack("<IH", f.read(6))
            if version > 100 or length > 200:
                return None
            return f.read(length)[:-1].decode("utf-8")
    except (OSError, struct.error, UnicodeDecodeError):
        return None


def detect_format(path: Path) -> str:
    """Say what `path` holds: `"zoo"`, `"transformers"`, `"diffusers"`,
    `"ctranslate2"` or `"torch_file"` (any single-file checkpoint).

    Raises:
        PresetError: `path` holds nothing zoo can load or convert.
    """
    from zoo.core.preset_io import is_zoo_preset

    path = Path(path)
    if path.is_dir():
        if is_zoo_preset(path):
            return "zoo"
        if (path / "model_index.json").is_file():
            return "diffusers"
        config = path / "config.json"
        if config.is_file():
            try:
                data = json.loads(config.read_text())
            except (ValueError, RecursionError):  # not JSON, or not UTF-8
                data = {}
            if isinstance(data, dict) and "model_type" in data:
                return "transformers"
        if (path / "model.bin").is_file() and ctranslate2_spec(path / "model.bin"):
            return "ctranslate2"
    elif path.is_file() and path.suffix in (".pt", ".pth", ".ckpt"):
        return "torch_file"
    elif path.is_file() and path.suffix == ".safetensors" and torch_file_kind(path) != (
            "safetensors"):
        return "torch_file"
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
    if fmt == "ctranslate2":
        spec = ctranslate2_spec(Path(path) / "model.bin")
        if spec not in CTRANSLATE2_CONVERTERS:
            raise ConversionError(
                f"{path} is a CTranslate2 {spec}, which zoo cannot convert (supported: "
                f"{', '.join(sorted(CTRANSLATE2_CONVERTERS))}).")
        return _load(CTRANSLATE2_CONVERTERS[spec])
    if fmt == "diffusers":
        return _load(DIFFUSERS_CONVERTER)
    if fmt == "torch_file":
        # Each converter checks the content in detail.
        return _load(TORCH_FILE_CONVERTERS[torch_file_kind(Path(path))])
    raise ConversionError(f"No converter for format {fmt!r}.")
