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
        return _in_order(lambda: _unsharded(lambda: _resolve(handle)))
    from zoo.core.preset_io import is_zoo_preset

    if isinstance(handle, (str, os.PathLike)) and str(handle) and is_zoo_preset(Path(handle)):
        return Path(handle)
    raise PresetError(f"Cannot resolve the preset handle {handle!r}: catalog names, hf://, "
                      "pkg:// and checkpoints are resolved by zoo.presets, which is not "
                      "loaded. Fix: import zoo.models (or zoo.presets) first.")


def _unsharded(work: Callable[[], Path]) -> Path:
    """Run `work` (which may convert a checkpoint) outside any keras.distribution.

    A conversion builds its model, ports the weights and checks them against
    the reference, all unsharded; the `from_preset` that asked then checks
    its layout map against the model (a clear `LayoutError`) and loads the
    converted preset into its shards. Converting inside the distribution
    failed deep in jax when an axis did not divide a weight.
    """
    import keras

    active = keras.distribution.distribution()
    if active is None:
        return work()
    keras.distribution.set_distribution(None)
    try:
        return work()
    finally:
        keras.distribution.set_distribution(active)


def _in_order(work: Callable[[], Path]) -> Path:
    """Run `work` on process 0 first, then on the others of a multi-process job.

    On a shared filesystem process 0 converts into the hub and the others
    find the preset there; on hosts with their own disks each converts.
    """
    from zoo.core import processes

    if processes.process_count() == 1:
        return work()
    if not processes.is_writer():
        processes.agree(True, "resolve the preset")  # raises when process 0 failed
        with processes.alone():
            return work()
    try:
        with processes.alone():
            path = work()
    except BaseException:
        processes.agree(False, "resolve the preset")
        raise
    processes.agree(True, "resolve the preset")
    return path


def hub_hint(directory: Path, source: str | None) -> str | None:
    """zoo.presets' repair advice for a broken preset in the hub, if installed."""
    return _hub_hint(directory, source) if _hub_hint is not None else None
