"""Media shipped inside the zoo package, for `zoo demo` and `zoo benchmark`.

- `story.flac`: 72 s of English speech, 16 kHz mono FLAC, synthesized with
  espeak-ng (its sentences and the commands that made it are in the
  repository's tests/data/speech/make_clips.sh, which is also where the tests
  read it from, through a link).
- `grace_hopper.jpg`: a 512 x 600 portrait of Grace Hopper, a public-domain
  U.S. Navy photograph (the copy in matplotlib's sample data).

Example:

    >>> from zoo.data import demo_media
    >>> demo_media("story.flac").name
    'story.flac'
"""

from __future__ import annotations

from pathlib import Path

from zoo.core.errors import ZooError

#: the files in this folder
MEDIA = ("story.flac", "grace_hopper.jpg")


def demo_media(name: str) -> Path:
    """The path of one of the shipped media files (`MEDIA`).

    Raises:
        ZooError: `name` is not one of them, or the installation lost the file.
    """
    if name not in MEDIA:
        raise ZooError(f"No shipped media named {name!r}. Fix: use one of {', '.join(MEDIA)}.")
    path = Path(__file__).resolve().parent / name
    if not path.is_file():
        raise ZooError(f"{path} is missing from this zoo installation. Fix: reinstall zoo "
                       "(pip install --force-reinstall zoo).")
    return path
