"""The local hub: where converted and downloaded presets are cached.

The hub lives at `$ZOO_HOME` (default `~/.cache/zoo`):

    $ZOO_HOME/presets/<name>/    one zoo preset per `--name`, or per source handle
    $ZOO_HOME/tmp/<entry>/       one write in progress each; never read as a preset

Preset names. A name a user gives (`zoo convert --name NAME`, then
`from_preset("NAME")`) is one path component: 1 to 100 ASCII letters,
digits, `.`, `_` or `-`, starting with a letter or a digit (`whisper_tiny_en`,
`opt_6.7b_en`, `my-bert.v2`). So a name never reaches outside `presets/`,
never names `presets/` itself and never a sub-folder; anything else is
refused with a `PresetError` before any work starts. An existing preset is
replaced only when asked (`zoo convert --overwrite`).

The temporary place. Every write into the hub is atomic and happens under
`$ZOO_HOME/tmp` (the same filesystem as `presets/`, so the final rename is
atomic): a preset is built in `tmp/<entry>/preset` and renamed into
`presets/` once complete; a preset it replaces is first moved to
`tmp/<entry>/old`. Each entry holds a `lock` file that its writer keeps
locked (`flock`) for as long as it works; the operating system drops the lock
when the process ends, kill -9 included. Every hub write starts by cleaning
`tmp/`: an entry whose lock can be taken belongs to a process that is gone, so
it is removed (after moving `old` back into place if the process died between
the two renames); the entry of a live writer is never touched, however long it
runs, whichever process looks. What has no lock (a writer killed while setting
its entry up, leftovers of older versions) is removed once a day old; nothing
else in `tmp/` is ever touched. A full disk or an unwritable `$ZOO_HOME` is a
`PresetError` that names the fix, and leaves `presets/` as it was and nothing
in `tmp/`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from zoo.core import verified
from zoo.core.errors import PresetError
from zoo.utils import atomic

try:
    import fcntl
except ImportError:  # no flock (Windows): an entry then counts as live for a day
    fcntl = None  # type: ignore[assignment]

#: a preset name: one path component (see the module docstring)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = ("1-100 ASCII letters, digits, '.', '_' or '-', starting with a letter or a "
             "digit")
#: in a `tmp/` entry: the file its writer keeps locked, the path it writes, the work, the
#: preset it replaces
LOCK_FILE, TARGET_FILE, WORK_DIR, OLD_DIR = "lock", "target", "preset", "old"
#: age after which a `tmp/` entry without a lock is removed
STALE_AFTER_S = 24 * 3600
_STAGING = ".new-"  # an entry being set up, before its lock is held
#: unlocked entries zoo makes: being set up by `_locked_entry`, or left by earlier versions
_STAGING_OR_LEGACY = re.compile(r"\.new-[A-Za-z0-9_]{8}|\..+\.(tmp|old)-[A-Za-z0-9_]{8}")


def zoo_home() -> Path:
    """The hub root: `$ZOO_HOME`, or `~/.cache/zoo` (made absolute)."""
    return verified.zoo_home()


def presets_dir() -> Path:
    """Directory of cached presets inside the hub."""
    return zoo_home() / "presets"


def repair_hint(directory: Path, source: str | None) -> str | None:
    """How to repair a broken preset inside the hub: delete it and fetch it
    again (`zoo pull NAME` when its source is a catalog entry's). None for a
    folder outside the hub (zoo.core.preset_io advises saving it again)."""
    try:
        in_hub = Path(directory).resolve().is_relative_to(presets_dir().resolve())
    except OSError:
        in_hub = False
    if not in_hub:
        return None
    from zoo.presets.catalog import name_for_source

    name = name_for_source(source) if source else None
    again = (f"run `zoo pull {name}`" if name else
             f"load {source} again" if source else "convert or download it again")
    return f"Fix: delete {directory} and {again}; zoo fetches and converts it anew."


def tmp_dir() -> Path:
    """The hub's one place for writes in progress (see the module docstring)."""
    return zoo_home() / "tmp"


def is_preset_name(name: object) -> bool:
    """Whether `name` is a valid hub preset name (`NAME_RULE`).

    >>> [is_preset_name(n) for n in ("opt_6.7b_en", "", "..", "a/b", "-x")]
    [True, False, False, False, False]
    """
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


def new_preset_path(name: str, overwrite: bool = False) -> Path:
    """Where the preset called `name` goes in the hub, checked before any work.

    Args:
        name: the preset name (`NAME_RULE`).
        overwrite: whether an existing preset of that name may be replaced.

    Raises:
        PresetError: the name is not valid, or the preset exists and not `overwrite`.

    >>> new_preset_path("../x")
    Traceback (most recent call last):
    ...
    zoo.core.errors.PresetError: '../x' is not a valid preset name: use 1-100 ASCII letters, digits, '.', '_' or '-', starting with a letter or a digit. Fix: pass a name such as my_model_v2.
    """
    if not is_preset_name(name):
        raise PresetError(f"{name!r} is not a valid preset name: use {NAME_RULE}. "
                          "Fix: pass a name such as my_model_v2.")
    path = presets_dir() / name
    if not overwrite and os.path.lexists(path):
        raise PresetError(_exists_message(path))
    return path


def _exists_message(path: Path) -> str:
    return (f"Preset {path.name!r} already exists in the hub ({path}). Fix: pass --overwrite "
            "to replace it, or choose another --name.")


def check_writable() -> Path:
    """Create the hub's folders if needed and check that files can be written there;
    return the hub root. Commands call this before long work, not after.

    Raises:
        PresetError: `$ZOO_HOME` is not a writable folder (the message says how to fix it).
    """
    for folder in (presets_dir(), tmp_dir()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as e:
            raise _hub_error(e) or _unwritable(e) from e
    return zoo_home()


def _unwritable(error: OSError) -> PresetError:
    home = zoo_home()
    if os.path.lexists(home) and not home.is_dir():
        reason = "it is not a folder"
    else:
        reason = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    return PresetError(f"The hub ZOO_HOME={home} cannot be written ({reason}). Fix: set "
                       "ZOO_HOME to a writable folder, or make that one writable.")


def _disk_full(error: OSError) -> bool:
    """Whether `error` says the disk (or the user's quota) is full; libraries that
    wrap the C error (h5py) keep only its text."""
    return (error.errno in (errno.ENOSPC, errno.EDQUOT)
            or os.strerror(errno.ENOSPC) in str(error))


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


def _clean_stale_tmp(tmp_root: Path, max_age_s: float = STALE_AFTER_S) -> None:
    """Remove what interrupted writes left in `tmp_root` (see the module docstring):
    entries whose writer is gone, and unlocked leftovers older than `max_age_s`."""
    if not tmp_root.is_dir():
        return
    for entry in tmp_root.iterdir():
        with contextlib.suppress(OSError):
            lock = entry / LOCK_FILE
            locked = lock.is_file() and (entry / TARGET_FILE).is_file()
            if entry.name.startswith(_STAGING) or not locked or fcntl is None:
                # only what zoo makes: never a user's files, should tmp/ be theirs
                ours = locked or _STAGING_OR_LEGACY.fullmatch(entry.name)
                if ours and time.time() - entry.lstat().st_mtime > max_age_s:
                    atomic.remove(entry)
                continue
            fd = os.open(lock, os.O_RDONLY)  # never created here: a vanished entry is skipped
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer
                old = entry / OLD_DIR
                if os.path.lexists(old):  # killed between moving the old preset out and
                    final = Path((entry / TARGET_FILE).read_text())  # the new one in
                    if not os.path.lexists(final):
                        os.replace(old, final)
                atomic.remove(entry)
            finally:
                os.close(fd)


@contextlib.contextmanager
def _locked_entry(tmp_root: Path, final: Path) -> Iterator[Path]:
    """A fresh `tmp_root` entry, locked by this process until the block ends, then removed."""
    staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=tmp_root))
    entry = tmp_root / f"{final.name[:60]}.{staging.name[len(_STAGING):]}"
    lock, renamed = None, False
    try:
        lock = open(staging / LOCK_FILE, "w")  # noqa: SIM115 (held until the block ends)
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        (staging / TARGET_FILE).write_text(str(final))
        os.rename(staging, entry)  # cleaners only look at locked entries (or old ones)
        renamed = True
        yield entry
    finally:
        atomic.remove(entry if renamed else staging)
        if lock is not None:
            lock.close()


@contextlib.contextmanager
def _hub_directory(final: Path, tmp_root: Path, overwrite: bool) -> Iterator[Path]:
    """`atomic_directory` through a locked entry of the hub's `tmp_root`."""
    with contextlib.ExitStack() as stack:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp_root.mkdir(parents=True, exist_ok=True)
            _clean_stale_tmp(tmp_root)
            entry = stack.enter_context(_locked_entry(tmp_root, final))
            work = entry / WORK_DIR
            work.mkdir()
        except OSError as e:
            raise _hub_error(e) or _unwritable(e) from e
        try:
            yield work
            if os.path.lexists(final):
                if not overwrite:
                    raise PresetError(_exists_message(final))
                os.replace(final, entry / OLD_DIR)
            os.replace(work, final)
        except OSError as e:
            error = _hub_error(e)
            if error is None:
                raise
            raise error from e


def _hub_error(error: OSError) -> PresetError | None:
    """The clear error for a full disk, or None for other errors."""
    if not _disk_full(error):
        return None
    return PresetError(f"The disk of the hub (ZOO_HOME={zoo_home()}) is full; nothing was "
                       "written. Fix: free some space, or set ZOO_HOME to a folder on a disk "
                       "with room.")


@contextlib.contextmanager
def atomic_directory(final: Path, tmp_root: Path | None = None,
                     overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty directory that is renamed to `final` on success.

    On any exception the directory is removed and `final` is untouched. When
    `final` already exists it is replaced only after the new one is complete.

    Args:
        final: the directory to create or replace.
        tmp_root: the hub's `tmp_dir()` for a write into the hub (a locked entry,
            cleaned after a kill; see the module docstring), or None to build
            `final` in a hidden sibling (a folder outside the hub; see
            `zoo.utils.atomic`: what a killed writer left there is cleaned by
            the next write into that folder).
        overwrite: whether an existing `final` may be replaced (else `PresetError`).

    Raises:
        PresetError: `final` exists and not `overwrite`; for hub writes also: the
            disk is full, or `$ZOO_HOME` cannot be written.
    """
    final = Path(final)
    if tmp_root is not None:
        with _hub_directory(final, Path(tmp_root), overwrite) as work:
            yield work
        return
    with atomic.atomic_directory(final, overwrite, PresetError(_exists_message(final))) as work:
        yield work


def hub_write(source: str) -> contextlib.AbstractContextManager[Path]:
    """Atomically write the hub preset for `source` (see `atomic_directory`)."""
    return atomic_directory(cached_preset_path(source), tmp_root=tmp_dir())
