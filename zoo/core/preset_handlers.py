"""The seam between zoo.core and zoo.presets.

Every class's `from_preset` (zoo.core) turns its handle into a preset
directory, and a broken preset's error says how to repair it. Both need the
layer above core, zoo.presets (catalog names, hf:// and pkg:// handles,
checkpoint conversion, the hub), which core never imports: zoo.presets
installs its functions here when it is imported, and every family package
imports zoo.presets, so they are in place whenever a concrete class exists.
This module imports nothing heavy, so installing them keeps `zoo.presets`
free of Keras.

Example:

    >>> import zoo.presets
    >>> from zoo.core import preset_handlers
    >>> preset_handlers.installed()
    True
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from zoo.core.errors import PresetError

_resolve: Callable[[str | os.PathLike], Path] | None = None
_hub_hint: Callable[[Path, str | None], str | None] | None = None


def install(*, resolve: Callable[[str | os.PathLike], Path],
            hub_hint: Callable[[Path, str | None], str | None]) -> None:
    """Called by zoo.presets: `resolve(handle) -> Path` turns any preset handle
    into a ready preset directory; `hub_hint(directory, source) -> str | None`
    is the repair advice for a broken preset inside the hub (None elsewhere)."""
    global _resolve, _hub_hint
    _resolve, _hub_hint = resolve, hub_hint


def installed() -> bool:
    """Whether zoo.presets has installed its functions."""
    return _resolve is not None


def resolve(handle: str | os.PathLike) -> Path:
    """The preset directory for `handle`.

    Without zoo.presets only a saved preset folder resolves (it is what
    `save_to_preset` writes); anything else asks for zoo.presets.

    Raises:
        PresetError: see `zoo.presets.resolve`.
    """
    if _resolve is not None:
        return _resolve(handle)
    from zoo.core.preset_io import is_zoo_preset

    if isinstance(handle, (str, os.PathLike)) and str(handle) and is_zoo_preset(Path(handle)):
        return Path(handle)
    raise PresetError(f"Cannot resolve the preset handle {handle!r}: catalog names, hf://, "
                      "pkg:// and checkpoints are resolved by zoo.presets, which is not "
                      "loaded. Fix: import zoo.models (or zoo.presets) first.")


def hub_hint(directory: Path, source: str | None) -> str | None:
    """zoo.presets' repair advice for a broken preset in the hub, if installed."""
    return _hub_hint(directory, source) if _hub_hint is not None else None
