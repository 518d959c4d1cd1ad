"""The local hub: where converted and downloaded presets are cached.

The hub lives at `$ZOO_HOME` (default `~/.cache/zoo`):

    $ZOO_HOME/presets/<key>/     one zoo preset per source handle
    $ZOO_HOME/tmp/               work in progress; never read as a preset

Every write is atomic: a preset is written into a fresh directory under
`tmp/` and renamed into place only once it is complete, so an interrupted
or failed conversion leaves nothing behind under `presets/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def zoo_home() -> Path:
    """The hub root: `$ZOO_HOME`, or `~/.cache/zoo`."""
    return Path(os.environ.get("ZOO_HOME") or Path.home() / ".cache" / "zoo")


def presets_dir() -> Path:
    """Directory of cached presets inside the hub."""
    return zoo_home() / "presets"


def cache_key(source: str) -> str:
    """A readable, collision-free directory name for a source handle.

    Example:

    >>> cache_key("hf://google-bert/bert-base-uncased")[:34]
    'hf--google-bert--bert-base-uncased'
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "--", source.replace("://", "--")).strip("-")
    digest = hashlib.sha256(source.encode()).hexdigest()[:10]
    return f"{readable[:80]}-{digest}"


def cached_preset_path(source: str) -> Path:
    """Where the preset converted from `source` lives in the hub."""
    return presets_dir() / cache_key(source)


def _clean_stale_tmp(tmp_root: Path, max_age_s: float = 24 * 3600) -> None:
    """Remove leftovers of interrupted writes (older than a day)."""
    if not tmp_root.is_dir():
        return
    now = time.time()
    for entry in tmp_root.iterdir():
        with contextlib.suppress(OSError):
            if now - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(final: Path, tmp_root: Path | None = None) -> Iterator[Path]:
    """Yield an empty directory that is renamed to `final` on success.

    On any exception the directory is removed and `final` is untouched. When
    `final` already exists it is replaced only after the new one is complete.

    Args:
        final: the directory to create or replace.
        tmp_root: where to build it; must be on the same filesystem as
            `final`. Defaults to a hidden sibling of `final`.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if tmp_root is None:
        tmp_root = final.parent
    tmp_root.mkdir(parents=True, exist_ok=True)
    if tmp_root != final.parent:
        _clean_stale_tmp(tmp_root)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=tmp_root))
    try:
        yield work
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / "x")
            os.replace(work, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def hub_write(source: str) -> contextlib.AbstractContextManager[Path]:
    """Atomically write the hub preset for `source` (see `atomic_directory`)."""
    return atomic_directory(cached_preset_path(source), tmp_root=zoo_home() / "tmp")
