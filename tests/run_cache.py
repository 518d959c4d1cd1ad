"""Reference results shared by the backends of one `make test` run.

`make test` runs the suite once per Keras backend, but a reference computed by
another library (faster-whisper's transcripts, say) is the same on every one.
The Makefile gives each run a fresh, empty folder in `ZOO_TEST_CACHE`; the
first backend computes a reference and stores it there as JSON, the others
read it. Without `ZOO_TEST_CACHE` (a plain `pytest` run) nothing is stored.
A folder lives for one run only, so a key needs to name the computation, not
the versions of the code and data behind it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cached(key: str, compute: Callable[[], Any]) -> Any:
    """`compute()` (a JSON value), computed once per `make test` run.

    The value comes back as JSON gives it (tuples become lists) on every
    backend, computed or read, so tests see the same types either way.
    """
    folder = os.environ.get("ZOO_TEST_CACHE")
    path = Path(folder) / f"{hashlib.sha256(key.encode()).hexdigest()}.json" if folder else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())["value"]
    text = json.dumps({"key": key, "value": compute()})
    if path is not None:
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(text)
        os.replace(partial, path)  # a worker reading at the same time sees all or nothing
    return json.loads(text)["value"]
