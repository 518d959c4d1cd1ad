"""The preset catalog: data gathered from each family's `*_presets.py`."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

#: modules defining a `PRESETS` dict (name -> entry); data only, cheap to import
FAMILY_PRESET_MODULES = ("zoo.nlp.bert.bert_presets", "zoo.nlp.opt.opt_presets",
                         "zoo.audio.whisper.whisper_presets", "zoo.cv.yolov8.yolov8_presets",
                         "zoo.diffusion.stable_diffusion.stable_diffusion_presets")

REQUIRED_KEYS = ("family", "description", "params", "sources", "license")


def catalog() -> dict[str, dict[str, Any]]:
    """Every catalog entry, by name."""
    out: dict[str, dict[str, Any]] = {}
    for module in FAMILY_PRESET_MODULES:
        for name, entry in importlib.import_module(module).PRESETS.items():
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
