"""Format detection and the registry of converters into zoo presets."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zoo.core.errors import ConversionError, PresetError
from zoo.families import FAMILIES, Family

@dataclass(frozen=True)
class SourceFormat:
    """How a family's converter module converts and checks one kind of
    checkpoint (an entry of its `SOURCE_FORMATS`, keyed by `detect_format`'s
    names)."""

    #: converter-module function `(source, output, handle, dtype="source") -> None`
    convert: str
    #: converter-module function `(preset_dir, source) -> float`, or None from it when
    #: this checkpoint has no reference to run; None here: no reference exists for the format
    compare: str | None
    #: the packages `compare` needs, comma-separated
    reference: str
    #: what `compare` returns, as printed ("<measure>: 1.2e-06 (tolerance 1e-04)")
    measure: str
    #: the largest accepted value of `compare` unless --tolerance says otherwise
    tolerance: float = 1e-4


#: the transformers folders of every family that reads them
TRANSFORMERS_FORMAT = SourceFormat("convert_transformers", "compare_with_transformers",
                                   "transformers,torch", "max abs difference vs transformers")


def transformers_model_types() -> list[str]:
    """The transformers `model_type`s some family converts."""
    return sorted(t for f in FAMILIES for t in f.transformers_model_types)


def supported() -> str:
    """What zoo converts, for error messages (from the family table)."""
    reads = [f.reads for f in FAMILIES if f.reads]
    return (f"zoo presets, transformers folders (model types: "
            f"{', '.join(transformers_model_types())}), {', '.join(reads[:-1])} and {reads[-1]}")


def torch_file_kind(path: Path) -> str:
    """Which family's single-file checkpoint `path` is: the first kind of the
    family table whose identifying bytes are in the file's safetensors header
    or torch pickle (e.g. `"stable_diffusion"`, `"ultralytics"`); otherwise
    `"safetensors"` for a `.safetensors` file, and for a torch file the kind
    a family claims without bytes (`"openai_whisper"`, whose converter
    explains what it expected when the file is something else)."""
    import struct
    import zipfile
    import zlib

    path = Path(path)
    data = b""
    if path.suffix == ".safetensors":
        try:
            with open(path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                data = f.read(min(length, 1 << 26))
        except (OSError, struct.error):
            pass
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                pickles = [n for n in zf.namelist() if n.endswith("/data.pkl")]
                if pickles:
                    with zf.open(pickles[0]) as f:
                        # No further than the file's size (+1 MiB): a compressed pickle
                        # cannot inflate into a memory bomb here.
                        data = f.read(path.stat().st_size + (1 << 20))
        except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
                zlib.error):
            pass  # the converter reports what is wrong with the file
    kinds = [kind for f in FAMILIES for kind in f.torch_file_kinds]
    found = next((name for name, marker in kinds if marker is not None and marker in data),
                 None)
    if found is not None:
        return found
    if path.suffix == ".safetensors":
        return "safetensors"
    return next(name for name, marker in kinds if marker is None)


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
        f"convert. zoo reads {supported()}. "
        "Fix: point at such a directory."
    )


def _load(family: Family, kind: str) -> Callable:
    """`family`'s converter function for checkpoints of `kind` (its `SOURCE_FORMATS`)."""
    module = importlib.import_module(family.converter)
    return getattr(module, module.SOURCE_FORMATS[kind].convert)


def _family(matches: Callable[[Family], bool]) -> Family | None:
    return next((f for f in FAMILIES if matches(f)), None)


def converter_for(path: Path, fmt: str) -> Callable[[Path, Path, str], None]:
    """The function that converts `path` (of format `fmt`) into a zoo preset,
    found through the family table (`zoo.families`).

    Converters are called as `convert(source_dir, output_dir, source_handle)`
    and write a complete preset into `output_dir`.
    """
    if fmt == "transformers":
        model_type = json.loads((Path(path) / "config.json").read_text())["model_type"]
        family = _family(lambda f: model_type in f.transformers_model_types)
        if family is None:
            raise ConversionError(
                f"{path} is a transformers '{model_type}' model, which zoo cannot "
                f"convert yet (supported: {', '.join(transformers_model_types())})."
            )
        return _load(family, fmt)
    if fmt == "ctranslate2":
        spec = ctranslate2_spec(Path(path) / "model.bin")
        family = _family(lambda f: spec in f.ctranslate2_specs)
        if family is None:
            supported = sorted(s for f in FAMILIES for s in f.ctranslate2_specs)
            raise ConversionError(
                f"{path} is a CTranslate2 {spec}, which zoo cannot convert (supported: "
                f"{', '.join(supported)}).")
        return _load(family, fmt)
    if fmt == "diffusers":
        family = _family(lambda f: f.diffusers)
    elif fmt == "torch_file":
        kind = torch_file_kind(Path(path))  # each converter checks the content in detail
        family = _family(lambda f: kind in dict(f.torch_file_kinds))
    else:
        family = None
    if family is None:
        raise ConversionError(f"No converter for format {fmt!r}.")
    return _load(family, fmt)
