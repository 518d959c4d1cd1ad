"""The shared command-line driver of `scripts/convert_weights/convert_<family>.py`.

Every family script does the same: fetch the original checkpoint, convert
it into a temporary preset, compare against the reference library when it is
installed (printing the max abs difference, exiting 1 above tolerance and
writing nothing), then write the preset atomically into the hub under
`--name` and optionally upload it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SourceFormat:
    """How a script converts and checks one kind of checkpoint."""

    # converter-module function `(source, output, handle) -> None`
    convert: str
    # converter-module function `(preset_dir, source) -> float`, or None from it when this
    # checkpoint has no reference to run; None here: no reference exists for the format
    compare: str | None
    # the packages `compare` needs, comma-separated
    reference: str
    # what `compare` returns, as printed ("<measure>: 1.2e-06 (tolerance 1e-04)")
    measure: str
    # the largest accepted value of `compare` unless --tolerance says otherwise
    tolerance: float = 1e-4


_TRANSFORMERS = SourceFormat("convert_transformers", "compare_with_transformers",
                             "transformers,torch", "max abs difference vs transformers")

#: converter module -> the checkpoint kinds it reads (by `detect_format`'s name)
#: and how each is checked; used by `scripts/convert_weights/` and `zoo convert`
CONVERSIONS: dict[str, dict[str, SourceFormat]] = {
    "zoo.nlp.bert.bert_convert": {"transformers": _TRANSFORMERS},
    "zoo.nlp.opt.opt_convert": {"transformers": _TRANSFORMERS},
    "zoo.audio.whisper.whisper_convert": {
        "transformers": _TRANSFORMERS,
        # relative to the output's scale; `compare_with_ctranslate2` says why 1e-4
        "ctranslate2": SourceFormat("convert_ctranslate2", "compare_with_ctranslate2",
                                    "ctranslate2",
                                    "max abs difference / max abs value vs ctranslate2"),
        "torch_file": SourceFormat("convert_openai", None, "", ""),  # openai-whisper .pt
    },
    "zoo.cv.yolov8.yolov8_convert": {
        "torch_file": SourceFormat("convert_ultralytics", "compare_with_onnxruntime",
                                   "onnxruntime",
                                   "max abs difference vs onnxruntime (pixels, probabilities)",
                                   tolerance=1e-2),
    },
    "zoo.diffusion.stable_diffusion.stable_diffusion_convert": {
        "diffusers": SourceFormat("convert_diffusers", "compare_with_diffusers",
                                  "torch,transformers,diffusers",
                                  "max abs difference vs diffusers/transformers",
                                  tolerance=1e-3),
        "torch_file": SourceFormat("convert_single_file", None, "", ""),
    },
}


def converter_module(folder: Path) -> str:
    """The converter module that reads the checkpoint at `folder` (any family).

    Raises:
        PresetError: `folder` is already a zoo preset, or no converter reads it.
    """
    from zoo.core.errors import PresetError
    from zoo.presets.formats import converter_for, detect_format

    fmt = detect_format(folder)
    if fmt == "zoo":
        raise PresetError(f"{folder} is already a zoo preset; load it with from_preset, or "
                          "copy it into the hub. Nothing to convert.")
    return converter_for(folder, fmt).__module__


def raw_folder(source: str) -> Path:
    """The local checkpoint folder behind a handle (downloaded when needed)."""
    from zoo.core.errors import PresetNotFoundError
    from zoo.presets import handles

    if source.startswith("hf://"):
        repo_handle, filename = handles.split_hf_file(source)
        repo_id, revision = handles.parse_hf(repo_handle)
        if filename is not None:
            return handles._hf_file(source, repo_id, revision, filename)
        return handles._hf_snapshot(source, repo_id, revision)
    if source.startswith("pkg://"):
        package, _, sub = source[len("pkg://"):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise PresetNotFoundError(f"Python package {package!r} is not installed.")
        return Path(list(spec.submodule_search_locations)[0]) / sub
    return Path(source)


def main(argv: list[str] | None, converter: str, description: str,
         formats: dict[str, SourceFormat] | None = None, prog: str | None = None) -> int:
    """Run a conversion script.

    Args:
        argv: command-line arguments (None: sys.argv).
        converter: module defining the functions the formats name.
        description: the script's help text.
        formats: the checkpoint kinds the script reads, by the name
            `zoo.presets.formats.detect_format` gives them; default: the
            converter's entry in `CONVERSIONS`.
        prog: the program name shown in usage messages.

    Returns:
        The exit code: 0 written, 1 mismatch or error, 2 not a checkpoint it reads.
    """
    from zoo.presets.formats import detect_format

    if formats is None:
        formats = CONVERSIONS[converter]
    parser = argparse.ArgumentParser(description=description, prog=prog)
    parser.add_argument("source", help="hf://org/repo, pkg://package/path or a local path")
    parser.add_argument("--name", required=True, help="hub name of the converted preset")
    parser.add_argument("--upload", metavar="HF_HANDLE", help="also upload to hf://org/repo")
    defaults = ", ".join(f"{f.tolerance:.0e} for {k}" for k, f in formats.items() if f.compare)
    parser.add_argument("--tolerance", type=float, default=None,
                        help=f"largest difference allowed against the reference ({defaults})")
    args = parser.parse_args(argv)

    from zoo.core.errors import PresetError, ZooError
    from zoo.presets import hub, upload

    module = importlib.import_module(converter)
    try:
        folder = raw_folder(args.source)
        try:
            fmt = formats.get(detect_format(folder))
        except PresetError:
            fmt = None
        if fmt is None:
            print(f"error: {folder} is not a checkpoint this script reads "
                  f"({', '.join(formats)})", file=sys.stderr)
            return 2
        tolerance = fmt.tolerance if args.tolerance is None else args.tolerance
        with tempfile.TemporaryDirectory() as tmp:
            preset = Path(tmp) / "preset"
            getattr(module, fmt.convert)(folder, preset, args.source)
            if fmt.compare is None:
                print("no reference implementation for this format: skipped the numerical "
                      "check")
            elif all(importlib.util.find_spec(p) for p in fmt.reference.split(",") if p):
                diff = getattr(module, fmt.compare)(preset, folder)
                if diff is None:
                    print("no reference model found next to the checkpoint: skipped the "
                          "numerical check")
                else:
                    print(f"{fmt.measure}: {diff:.3e} (tolerance {tolerance:.0e})")
                if diff is not None and not diff <= tolerance:
                    print("error: conversion does not match the reference; nothing written",
                          file=sys.stderr)
                    return 1
            else:
                print(f"{fmt.reference} not installed: skipped the numerical check")
            target = hub.presets_dir() / args.name
            with hub.atomic_directory(target, tmp_root=hub.zoo_home() / "tmp") as work:
                shutil.copytree(preset, work, dirs_exist_ok=True)
        print(f"wrote {target}")
        if args.upload:
            print(f"uploaded: {upload(target, args.upload)}")
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
