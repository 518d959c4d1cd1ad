#!/usr/bin/env python
"""Convert a transformers BERT checkpoint into a verified zoo preset in the hub.

    python scripts/convert_weights/convert_bert.py SOURCE --name NAME [--upload hf://org/repo]

SOURCE is hf://org/repo, pkg://package/path or a local transformers folder.
When transformers is installed the converted model is run next to the
original on sample sentences; the max abs difference is printed and the
script exits 1 (writing nothing) above --tolerance. The preset is then
written atomically to $ZOO_HOME/presets/NAME, loadable as
`from_preset("NAME")`, and optionally uploaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path


def raw_folder(source: str) -> Path:
    """The local transformers folder behind a handle (downloaded if needed)."""
    from zoo.presets import handles

    if source.startswith("hf://"):
        repo_id, revision = handles.parse_hf(source)
        return handles._hf_snapshot(source, repo_id, revision)
    if source.startswith("pkg://"):
        package, _, sub = source[len("pkg://"):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise SystemExit(f"error: package {package!r} is not installed")
        return Path(list(spec.submodule_search_locations)[0]) / sub
    return Path(source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="hf://org/repo, pkg://package/path or a local folder")
    parser.add_argument("--name", required=True, help="hub name of the converted preset")
    parser.add_argument("--upload", metavar="HF_HANDLE", help="also upload to hf://org/repo")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max abs difference allowed against transformers")
    args = parser.parse_args(argv)

    from zoo.core.errors import ZooError
    from zoo.nlp.bert.bert_convert import compare_with_transformers, convert_transformers
    from zoo.presets import hub, upload

    try:
        folder = raw_folder(args.source)
        if not (folder / "config.json").is_file():
            print(f"error: {folder} has no config.json; not a transformers folder",
                  file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory() as tmp:
            preset = Path(tmp) / "preset"
            convert_transformers(folder, preset, args.source)
            if importlib.util.find_spec("transformers") and importlib.util.find_spec("torch"):
                diff = compare_with_transformers(preset, folder)
                print(f"max abs difference vs transformers: {diff:.3e} "
                      f"(tolerance {args.tolerance:.0e})")
                if not diff <= args.tolerance:
                    print("error: conversion does not match transformers; nothing written",
                          file=sys.stderr)
                    return 1
            else:
                print("transformers/torch not installed: skipped the numerical check")
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


if __name__ == "__main__":
    sys.exit(main())
