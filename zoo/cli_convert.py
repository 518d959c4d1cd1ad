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
from pathlib import Path


def raw_folder(source: str) -> Path:
    """The local checkpoint folder behind a handle (downloaded when needed)."""
    from zoo.core.errors import PresetNotFoundError
    from zoo.presets import handles

    if source.startswith("hf://"):
        repo_id, revision = handles.parse_hf(source)
        return handles._hf_snapshot(source, repo_id, revision)
    if source.startswith("pkg://"):
        package, _, sub = source[len("pkg://"):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise PresetNotFoundError(f"Python package {package!r} is not installed.")
        return Path(list(spec.submodule_search_locations)[0]) / sub
    return Path(source)


def main(argv: list[str] | None, converter: str, reference: str, description: str) -> int:
    """Run a conversion script.

    Args:
        argv: command-line arguments (None: sys.argv).
        converter: module defining `convert_transformers(source, output, handle)`
            and `compare_with_transformers(preset_dir, source) -> float`.
        reference: the packages the comparison needs, comma-separated.
        description: the script's help text.

    Returns:
        The exit code: 0 written, 1 mismatch or error, 2 not a checkpoint.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("source", help="hf://org/repo, pkg://package/path or a local folder")
    parser.add_argument("--name", required=True, help="hub name of the converted preset")
    parser.add_argument("--upload", metavar="HF_HANDLE", help="also upload to hf://org/repo")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max abs difference allowed against the reference")
    args = parser.parse_args(argv)

    from zoo.core.errors import ZooError
    from zoo.presets import hub, upload

    module = importlib.import_module(converter)
    try:
        folder = raw_folder(args.source)
        if not (folder / "config.json").is_file():
            print(f"error: {folder} has no config.json; not a transformers folder",
                  file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory() as tmp:
            preset = Path(tmp) / "preset"
            module.convert_transformers(folder, preset, args.source)
            if all(importlib.util.find_spec(p) for p in reference.split(",")):
                diff = module.compare_with_transformers(preset, folder)
                print(f"max abs difference vs transformers: {diff:.3e} "
                      f"(tolerance {args.tolerance:.0e})")
                if not diff <= args.tolerance:
                    print("error: conversion does not match transformers; nothing written",
                          file=sys.stderr)
                    return 1
            else:
                print(f"{reference} not installed: skipped the numerical check")
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
