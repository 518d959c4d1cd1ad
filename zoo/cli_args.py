"""The `zoo` command's argument and output-file checks, and its error.

Everything here runs before any model work: a path that cannot be written or
a text argument that is not UTF-8 is one line naming the fix, and output files
are written atomically (`zoo.utils.atomic`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from zoo.core.errors import ZooError
from zoo.utils.atomic import atomic_file


class CommandError(ZooError):
    """A user-facing error raised by a command (printed as one line)."""


def check_output_path(path: str | os.PathLike, suffixes: Sequence[str] = ()) -> Path:
    """Fail early (before any model work) when `path` cannot be written.

    >>> check_output_path("/no/such/dir/out.png")
    Traceback (most recent call last):
    ...
    zoo.cli_args.CommandError: Cannot write /no/such/dir/out.png: the directory /no/such/dir does not exist. Fix: create it or pass another --out.
    """
    out = Path(path)
    if suffixes and out.suffix.lower() not in suffixes:
        raise CommandError(f"Cannot write {out}: use one of {', '.join(suffixes)} as the "
                           "file extension.")
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise CommandError(f"Cannot write {out}: it is a directory. Fix: pass a file name.")
    if not parent.is_dir():
        raise CommandError(f"Cannot write {out}: the directory {parent} does not exist. "
                           "Fix: create it or pass another --out.")
    if not os.access(parent, os.W_OK):
        raise CommandError(f"Cannot write {out}: the directory {parent} is not writable. "
                           "Fix: pass another --out.")
    return out


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it into
    place, so an interrupted run never leaves a half-written file (and what a
    killed run left is cleaned by the next write there: `zoo.utils.atomic`).

    Raises:
        CommandError: the file could not be written (a full disk, say); `path` is
            as it was and the temporary file is gone.
    """
    try:
        with atomic_file(path) as tmp:
            write(tmp)
    except OSError as e:
        raise CommandError(f"Cannot write {path}: {e.strerror or e}. Fix: free some space or "
                           "pass another --out.") from e
    return path


#: arguments that are file names, which may hold any bytes; every other one is text
#: `zoo quantize --mode` and `zoo convert --quantize`: Keras' modes that need
#: no calibration data (zoo.core.quantization.MODES, without importing Keras)
QUANTIZATION_MODES = ("int8", "int4", "float8")

_PATH_ARGUMENTS = frozenset({"file", "files", "image", "directory", "source", "preset", "out",
                             "out_dir"})


def check_text_arguments(args: argparse.Namespace) -> None:
    """Refuse text arguments that are not UTF-8 (Python keeps undecodable
    command-line bytes as lone surrogates, which no tokenizer or file format takes).

    >>> check_text_arguments(argparse.Namespace(text=["ok", "\\udcff"]))
    Traceback (most recent call last):
    ...
    zoo.cli_args.CommandError: The text argument is not valid UTF-8 (b'\\xff'). Fix: pass UTF-8 text (set the terminal or script encoding to UTF-8).
    """
    for dest, value in vars(args).items():
        if dest in _PATH_ARGUMENTS:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raw = item.encode("utf-8", "surrogateescape")
                    raise CommandError(f"The {dest.replace('_', '-')} argument is not valid "
                                       f"UTF-8 ({raw!r}). Fix: pass UTF-8 text (set the "
                                       "terminal or script encoding to UTF-8).") from None
