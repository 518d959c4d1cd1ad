"""Many images from one name: a folder, a glob pattern or a video file.

`open_source` turns such a name into an `ImageSource`: a count (when known)
and an iterator of `(where, image)` pairs read one at a time, so a long
video or a large folder never sits in memory at once. `where` says which
input each image is: `{"path": ...}` for files, `{"frame": i, "time": s}`
for a video's frames (decoded by PyAV, the FFmpeg binding zoo also reads
audio with).

Example:

>>> import tempfile
>>> from pathlib import Path
>>> from PIL import Image
>>> folder = Path(tempfile.mkdtemp())
>>> for name in ("b.png", "a.jpg"):
...     Image.new("RGB", (4, 3)).save(folder / name)
>>> _ = (folder / "notes.txt").write_text("not an image")
>>> source = open_source(folder)
>>> source.count, [where["path"].name for where, _ in source]
(2, ['a.jpg', 'b.png'])
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.utils.images import ImageError, load_image

#: files a folder or glob contributes (case-insensitive suffixes)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: files read as videos, frame by frame
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
_GLOB_CHARACTERS = ("*", "?", "[")


@dataclass
class ImageSource:
    """Images read lazily, each with where it came from."""

    kind: str  # "folder", "glob" or "video"
    name: str
    count: int | None  # None: not known before reading (some videos)
    _items: Any

    def __iter__(self) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        return iter(self._items())


def is_video(name: str | os.PathLike) -> bool:
    """Whether `name` has a video file's suffix."""
    return Path(name).suffix.lower() in VIDEO_SUFFIXES


def open_source(x: Any) -> ImageSource | None:
    """An `ImageSource` for a folder, a glob pattern or a video file; None for
    anything else (one image, an array, a list: read as before).

    Raises:
        ImageError: a folder without images, a pattern matching none, a video
            that cannot be opened or has no video track.
    """
    if not isinstance(x, (str, os.PathLike)):
        return None
    name = os.path.expanduser(os.fspath(x))
    if os.path.isdir(name):
        files = _image_files(sorted(Path(name).iterdir()))
        if not files:
            raise ImageError(f"The folder {name!r} has no images (looked for "
                             f"{', '.join(IMAGE_SUFFIXES)}). Fix: pass a folder of images.")
        return _files("folder", name, files)
    if not os.path.exists(name) and any(c in name for c in _GLOB_CHARACTERS):
        files = _image_files(sorted(Path(p) for p in glob.glob(name, recursive=True)))
        if not files:
            raise ImageError(f"No image files match {name!r}. Fix: check the pattern (e.g. "
                             "'photos/*.jpg', or 'photos/**/*.jpg' for subfolders).")
        return _files("glob", name, files)
    if os.path.isfile(name) and is_video(name):
        return _video(name)
    return None


def _image_files(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _files(kind: str, name: str, files: list[Path]) -> ImageSource:
    def items() -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        for path in files:
            yield {"path": path}, load_image(path)

    return ImageSource(kind, name, len(files), items)


def _video(name: str) -> ImageSource:
    import av

    fix = "Fix: check the file plays in a video player, or pass its frames as images."
    try:
        with av.open(name) as container:
            if not container.streams.video:
                raise ImageError(f"{name!r} has no video track. {fix}")
            frames = int(container.streams.video[0].frames) or None
    except av.error.FFmpegError as error:
        raise ImageError(f"Could not read {name!r} as a video ({error}). {fix}") from None

    def items() -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        try:
            with av.open(name) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for index, frame in enumerate(container.decode(stream)):
                    time = float(frame.time) if frame.time is not None else None
                    yield {"frame": index, "time": time}, frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as error:
            raise ImageError(f"Could not read {name!r} as a video ({error}). {fix}") from None

    return ImageSource("video", name, frames, items)
