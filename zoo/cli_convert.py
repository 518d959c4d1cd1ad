"""The shared command-line driver of `scripts/convert_weights/convert_<family>.py`.

Every family script does the same: check `--name` (and `--upload`) and that
the hub can be written, fetch the original checkpoint, convert it into a
temporary preset under `$ZOO_HOME/tmp`, compare against the reference library
when it is installed (printing the max abs difference, exiting 1 above
tolerance and writing nothing), then rename the preset into the hub under
`--name` (replacing an existing one only with `--overwrite`) and optionally
upload it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from zoo.cli_args import QUANTIZATION_MODES
from zoo.families import FAMILIES
from zoo.presets.formats import SourceFormat


#: `--dtype`: what a converted preset stores its weights in
DTYPE_CHOICES = ("source", "float32", "float16", "bfloat16")
DTYPE_HELP = ("dtype the preset stores its weights in (default: source, the checkpoint's own "
              "when all its weights share one; a float16 checkpoint stays float16 on disk). "
              "Loading casts to the model's dtype (float32 unless from_preset(dtype=...)). The "
              "check against transformers/diffusers uses weights rounded the same way; "
              "CTranslate2 and onnxruntime compute from the checkpoint's own weights, so a "
              "narrower dtype than the checkpoint's needs --tolerance there.")

class _Conversions(Mapping[str, dict[str, SourceFormat]]):
    """Converter module -> the checkpoint kinds it reads (by `detect_format`'s
    names) and how each is checked: each family's `SOURCE_FORMATS`, read from
    the family table (`zoo.families`) when first asked for."""

    def __getitem__(self, module: str) -> dict[str, SourceFormat]:
        if module not in self._modules():
            raise KeyError(module)
        return importlib.import_module(module).SOURCE_FORMATS

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules())

    def __len__(self) -> int:
        return len(self._modules())

    @staticmethod
    def _modules() -> list[str]:
        return [f.converter for f in FAMILIES]


#: used by `scripts/convert_weights/` and `zoo convert`
CONVERSIONS: Mapping[str, dict[str, SourceFormat]] = _Conversions()


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


def check_target(name: str, overwrite: bool = False, upload_handle: str | None = None) -> Path:
    """Everything about where a conversion goes that can be checked before it runs:
    the preset name, an existing preset, the hub being writable, the upload handle.

    Returns:
        The preset's path in the hub.

    Raises:
        PresetError: what is wrong, and the fix.
    """
    from zoo.presets import hub
    from zoo.presets.upload import parse_upload_handle

    target = hub.new_preset_path(name, overwrite)
    if upload_handle is not None:
        parse_upload_handle(upload_handle)
    hub.check_writable()
    return target


def raw_folder(source: str) -> Path:
    """The local checkpoint folder behind a handle (downloaded when needed).

    Raises:
        PresetNotFoundError: nothing is at `source` (the message says what to pass).
    """
    from zoo.presets import handles

    if source.startswith("hf://"):
        repo_handle, filename = handles.split_hf_file(source)
        repo_id, revision = handles.parse_hf(repo_handle)
        if filename is not None:
            return handles._hf_file(source, repo_id, revision, filename)
        return handles._hf_snapshot(source, repo_id, revision)
    if source.startswith("pkg://"):
        return handles.pkg_path(source)[0]
    return handles.existing_path(source, "pass hf://org/repo or pkg://package/path")


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
    parser.add_argument("--name", required=True, help="hub name of the converted preset "
                        "(letters, digits, '.', '_', '-')")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing preset of that name")
    parser.add_argument("--upload", metavar="HF_HANDLE", help="also upload to hf://org/repo")
    defaults = ", ".join(f"{f.tolerance:.0e} for {k}" for k, f in formats.items() if f.compare)
    parser.add_argument("--tolerance", type=float, default=None,
                        help=f"largest difference allowed against the reference ({defaults})")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="source", help=DTYPE_HELP)
    parser.add_argument("--quantize", choices=QUANTIZATION_MODES,
                        help="quantize the verified preset through Keras before writing it")
    args = parser.parse_args(argv)

    from zoo.core.errors import ConversionError, PresetError, ZooError
    from zoo.presets import hub, upload

    try:
        target = check_target(args.name, args.overwrite, args.upload)
        module = importlib.import_module(converter)
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
        with hub.atomic_directory(target, tmp_root=hub.tmp_dir(),
                                  overwrite=args.overwrite) as preset:
            getattr(module, fmt.convert)(folder, preset, args.source, dtype=args.dtype)
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
                    raise ConversionError(
                        f"conversion does not match the reference ({diff:.3e} > {tolerance:.0e})"
                        "; nothing written. Fix: report the checkpoint, or pass --tolerance if "
                        "the difference is expected.")
            else:
                print(f"{fmt.reference} not installed: skipped the numerical check")
            if args.quantize:
                # (verified in float first: the reference has no int8 form to compare)
                quantize_preset(preset, preset, args.quantize)
        print(f"wrote {target}")
        if args.upload:
            print(f"uploaded: {upload(target, args.upload)}")
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def quantize_preset(source: Path, target: Path, mode: str) -> None:
    """Write a `mode`-quantized copy of the preset `source` into `target`
    (which may be `source`): its task, or its backbone and preprocessor,
    loaded, quantized through Keras (`Backbone.quantize`) and written; the
    sizes are printed.

    Raises:
        InputError: nothing in the model can be quantized in `mode`.
    """
    from zoo.core import preset_io
    from zoo.models import Backbone, Preprocessor, Task

    def weights_bytes(directory: Path) -> int:
        return sum(f.stat().st_size for f in Path(directory).glob("*.weights.*"))

    before = weights_bytes(source)
    parts: dict = {}
    if (source / preset_io.TASK_FILE).is_file():
        parts["task"] = Task.from_preset(source)
        parts["task"].quantize(mode)
    else:
        parts["backbone"] = Backbone.from_preset(source)
        parts["backbone"].quantize(mode)
        if (source / preset_io.PREPROCESSOR_FILE).is_file():
            parts["preprocessor"] = Preprocessor.from_preset(source)
    preset_io.write_preset(target, **parts)
    after = weights_bytes(target)
    print(f"{mode} weights: {after / 1e6:.1f} MB, {after / max(before, 1):.2f}x of "
          f"{before / 1e6:.1f} MB")
