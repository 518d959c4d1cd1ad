"""Which preset files were already checked against their recorded sha256.

Loading a preset hashes each file before reading it (`zoo.core.preset_io`),
so a big preset is read twice on every load: once to hash, once to load.
After a file's hash matched, a stamp under `$ZOO_HOME/verified/` remembers
that exact file version: its path, device, inode, size, modification and
status-change times (nanoseconds) and the digest it matched. The next load
of an unchanged file skips the hash and reads the file once; any write to
the file (even one that restores its modification time) changes its
status-change time, so it is hashed again.

Files modified in the last `MIN_AGE_S` seconds are never remembered: file
times are coarse (a clock tick), and an edit within the same tick as the
check could otherwise keep the stamp. `ZOO_REVERIFY=1` hashes every time.

Example:

>>> import tempfile, os
>>> from pathlib import Path
>>> home = os.environ.get("ZOO_HOME")
>>> os.environ["ZOO_HOME"] = tempfile.mkdtemp()
>>> f = Path(tempfile.mkdtemp()) / "w.h5"
>>> _ = f.write_bytes(b"weights")
>>> remember(f, "ab12")   # just written: too fresh to remember
>>> known(f, "ab12")
False
>>> os.utime(f, (1e9, 1e9))  # (an old file)
>>> remember(f, "ab12"); known(f, "ab12"), known(f, "another digest")
(True, False)
>>> _ = os.environ.pop("ZOO_HOME") if home is None else os.environ.update(ZOO_HOME=home)
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

#: files modified more recently than this many seconds are hashed every time
MIN_AGE_S = 2.0


def zoo_home() -> Path:
    """zoo's cache root: `$ZOO_HOME`, or `~/.cache/zoo` (made absolute); the
    hub (`zoo.presets.hub`) keeps its presets there too."""
    home = os.environ.get("ZOO_HOME") or Path.home() / ".cache" / "zoo"
    return Path(home).expanduser().absolute()


def _stamps() -> Path | None:
    if os.environ.get("ZOO_REVERIFY", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    return zoo_home() / "verified"


def _key(path: Path, digest: str) -> str | None:
    """The stamp name of this version of `path` matching `digest`; None when
    it cannot be remembered (too fresh, or not a file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if time.time() - st.st_mtime < MIN_AGE_S:
        return None
    identity = "\0".join(str(v) for v in (
        os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
        st.st_ctime_ns, digest))
    return hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()


def known(path: str | os.PathLike, digest: str) -> bool:
    """Whether this exact version of `path` was found to hash to `digest`."""
    stamps, key = _stamps(), _key(Path(path), digest)
    return stamps is not None and key is not None and (stamps / key).is_file()


def remember(path: str | os.PathLike, digest: str) -> None:
    """Record that `path`, as it is now, hashes to `digest` (best effort: an
    unwritable `$ZOO_HOME` only means hashing again next time)."""
    stamps, key = _stamps(), _key(Path(path), digest)
    if stamps is None or key is None:
        return
    try:
        stamps.mkdir(parents=True, exist_ok=True)
        (stamps / key).touch()
    except OSError:
        pass
