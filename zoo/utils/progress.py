"""Progress bars for long work (downloads, conversion, denoising, transcription).

One library (tqdm) everywhere. Bars are shown only when stderr is a
terminal, and can be turned off with `ZOO_PROGRESS=0` or
`zoo.utils.progress.set_enabled(False)`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_enabled: bool | None = None


def set_enabled(enabled: bool | None) -> None:
    """Force progress bars on or off; `None` goes back to auto-detection."""
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    """Whether progress bars are shown right now."""
    if _enabled is not None:
        return _enabled
    if os.environ.get("ZOO_PROGRESS", "").strip().lower() in ("0", "false", "off", "no"):
        return False
    return sys.stderr.isatty()


def progress(
    iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it"
) -> Iterator[T]:
    """Wrap `iterable` in a progress bar when bars are enabled.

    Args:
        iterable: the items to iterate over.
        desc: a short label shown before the bar.
        total: number of items, when `len(iterable)` is not available.
        unit: the unit name shown in the rate.

    Example:

    >>> list(progress([1, 2, 3], desc="demo"))
    [1, 2, 3]
    """
    if not enabled():
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, unit=unit, leave=False)


class _NoBar:
    """Stand-in for a tqdm bar when bars are off."""

    def update(self, n: float = 1) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(*, total: float | None, desc: str, unit: str = "it") -> Any:
    """A manually advanced bar (`with progress_bar(...) as bar: bar.update(n)`),
    or a silent stand-in when bars are off.

    Example:

    >>> with progress_bar(total=3, desc="demo") as bar:
    ...     bar.update(3)
    """
    if not enabled():
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False)


@contextlib.contextmanager
def download_bars() -> Iterator[None]:
    """Within the block, huggingface_hub's download bars (tqdm too) follow
    zoo's setting: shown on a terminal, off otherwise or with ZOO_PROGRESS=0.

    Example:

    >>> with download_bars():
    ...     pass
    """
    from huggingface_hub.utils import (are_progress_bars_disabled, disable_progress_bars,
                                       enable_progress_bars)

    was_disabled = are_progress_bars_disabled()
    if enabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()
