"""Progress bars for long work (downloads, conversion, denoising, transcription).

One library (tqdm, its auto mode: a widget in notebooks, text in terminals)
everywhere. Bars are shown when stderr is a terminal or the code runs in a
Jupyter kernel, and stay quiet in logs and CI (stderr redirected); turn them
off with `ZOO_PROGRESS=0` or `zoo.utils.progress.set_enabled(False)`, on with
`ZOO_PROGRESS=1`.
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
    setting = os.environ.get("ZOO_PROGRESS", "").strip().lower()
    if setting in ("0", "false", "off", "no"):
        return False
    if setting in ("1", "true", "on", "yes"):
        return True
    return _is_terminal(sys.stderr) or _in_notebook()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (its stderr is not a terminal,
    but tqdm's auto mode draws a widget there)."""
    ipython = sys.modules.get("IPython")  # only look: importing IPython is slow
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return getattr(shell, "kernel", None) is not None


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
