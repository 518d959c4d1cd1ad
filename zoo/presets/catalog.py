"""The preset catalog: data gathered from each family's `*_presets.py`."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from zoo.families import FAMILIES

#: modules defining a `PRESETS` dict (name -> entry); data only, cheap to import
FAMILY_PRESET_MODULES = tuple(family.presets for family in FAMILIES)

REQUIRED_KEYS = ("family", "description", "params", "sources", "license")


def _load_data_module(module: str) -> Any:
    """Import a presets module without running its packages' `__init__` (which
    import Keras): listing the catalog must not pay for, or print, a backend import."""
    if module in sys.modules:
        return sys.modules[module]
    path = Path(__file__).resolve().parents[1].joinpath(*module.split(".")[1:]).with_suffix(".py")
    spec = importlib.util.spec_from_file_location(module, path)
    if spec is None or spec.loader is None:  # pragma: no cover - broken install
        return importlib.import_module(module)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def catalog() -> dict[str, dict[str, Any]]:
    """Every catalog entry, by name."""
    out: dict[str, dict[str, Any]] = {}
    for module in FAMILY_PRESET_MODULES:
        for name, entry in _load_data_module(module).PRESETS.items():
            missing = [k for k in REQUIRED_KEYS if k not in entry]
            if missing:
                raise RuntimeError(f"Catalog entry {name!r} lacks {missing}.")
            out[name] = {"name": name, **entry}
    return out


def unknown_name_message(name: str) -> str:
    names = sorted(catalog())
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"{name!r} is not a preset name in the zoo catalog, nor an existing local "
        f"path, hf:// or pkg:// handle.{hint} Fix: pick a name from "
        "zoo.presets.list() (or `zoo presets`), or pass a directory."
    )


def name_for_source(source: str) -> str | None:
    """The catalog name that lists `source` among its sources, if one does.

    >>> name_for_source("no://such/source") is None
    True
    """
    return next((name for name, entry in catalog().items() if source in entry["sources"]),
                None)
