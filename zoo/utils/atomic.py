"""Atomic writes outside the hub, and the cleanup of what a killed writer left.

A file or folder zoo writes for a user (`save_to_preset` into a folder of
theirs, `--out` files, LoRA adapters, benchmark reports) is built under a
hidden name next to its target and renamed onto it once complete, so the
target is either the old one or the new one, never half of either. The
hidden name records who writes it:

    .<name>.zoo-tmp-<pid>-<start>-<random>[<suffix>]   the work in progress
    .<name>.zoo-old-<pid>-<start>-<random>             a folder being replaced

`<start>` is the writer's start time (from /proc), so a reused process id is
not taken for the writer. An exception removes the work at once; a kill -9
cannot, so every atomic write first sweeps its folder: a hidden entry of this
form whose writer is no longer running is removed, and a `zoo-old` folder whose
target is missing (the writer died between its two renames) is moved back.
Nothing else is ever touched, and a live writer's entries never are.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

#: what `hidden_name` makes: name, kind, pid, start time, random part, suffix
_HIDDEN = re.compile(r"\.(?P<name>.+)\.zoo-(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<start>\d+)-"
                     r"[0-9a-f]{8}(?P<suffix>\.[A-Za-z0-9]{1,10})?")


def _start_time(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux), 0
    where /proc is missing, None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").is_file():
            return None  # /proc works: the process is gone
    except OSError:
        return 0
    else:
        return int(stat.rpartition(")")[2].split()[19])  # field 22: starttime
    try:  # no /proc (macOS): whether the id is in use at all
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass
    return 0


def _alive(pid: int, start: int) -> bool:
    now = _start_time(pid)
    return now is not None and (now == start or now == 0 or start == 0)


def hidden_name(target: Path, kind: str = "tmp") -> Path:
    """A fresh hidden sibling of `target` that names this process as its writer.

    >>> hidden_name(Path("out/result.png")).name.startswith(".result.png.zoo-tmp-")
    True
    >>> hidden_name(Path("out/result.png")).suffix
    '.png'
    """
    pid = os.getpid()
    start = _start_time(pid) or 0
    suffix = target.suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", target.suffix) else ""
    return target.with_name(f".{target.name}.zoo-{kind}-{pid}-{start}-"
                            f"{secrets.token_hex(4)}{suffix if kind == 'tmp' else ''}")


def remove(path: Path) -> None:
    """Remove a file, link or folder tree; what is already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep(folder: Path) -> list[Path]:
    """Clean what killed zoo writers left in `folder` (see the module docstring).

    Returns:
        The entries removed or moved back.
    """
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    cleaned = []
    for entry in entries:
        match = _HIDDEN.fullmatch(entry.name)
        if match is None or _alive(int(match["pid"]), int(match["start"])):
            continue
        with contextlib.suppress(OSError):
            target = entry.with_name(match["name"])
            if match["kind"] == "old" and not os.path.lexists(target):
                os.replace(entry, target)  # the writer died between its two renames
            else:
                remove(entry)
            cleaned.append(entry)
    return cleaned


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden path next to `path` to write; it becomes `path` when the
    block ends without an exception, and is removed when it raises.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_file(folder / "notes.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> [p.name for p in folder.iterdir()], (folder / "notes.txt").read_text()
    (['notes.txt'], 'done')
    """
    path = Path(path)
    sweep(path.parent)
    tmp = hidden_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """`Path(path).write_text(text)`, atomically (see `atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, overwrite: bool = True,
                     exists_error: Exception | None = None) -> Iterator[Path]:
    """Yield an empty hidden folder next to `final`; it replaces `final` when
    the block ends without an exception, and is removed when it raises.

    An existing `final` is moved aside first and removed once the new one is
    in place; with `overwrite=False` the block's work is dropped and
    `exists_error` (default `FileExistsError`) raised instead.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep(final.parent)
    work = hidden_name(final)
    work.mkdir()
    try:
        yield work
        if os.path.lexists(final):
            if not overwrite:
                raise exists_error or FileExistsError(final)
            old = hidden_name(final, "old")
            os.replace(final, old)
            os.replace(work, final)
            remove(old)
        else:
            os.replace(work, final)
    except BaseException:
        remove(work)
        raise
