"""Subtitle files (SubRip `.srt`, WebVTT `.vtt`) from transcription segments.

Segments are what `WhisperAudioToText.transcribe` returns: dicts with
`start` and `end` in seconds and `text`.

Example:

>>> segments = [{"start": 0.0, "end": 2.5, "text": " Hello there."},
...             {"start": 2.5, "end": 61.25, "text": " General Kenobi."}]
>>> print(to_srt(segments))
1
00:00:00,000 --> 00:00:02,500
Hello there.
<BLANKLINE>
2
00:00:02,500 --> 00:01:01,250
General Kenobi.
<BLANKLINE>
>>> print(to_vtt(segments).splitlines()[2])
00:00:00.000 --> 00:00:02.500
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def format_timestamp(seconds: float, decimal_marker: str = ",") -> str:
    """`HH:MM:SS,mmm` (SubRip) or, with `decimal_marker="."`, `HH:MM:SS.mmm` (WebVTT).

    >>> format_timestamp(3725.5)
    '01:02:05,500'
    """
    if seconds < 0:
        raise ValueError(f"A timestamp cannot be negative, got {seconds!r}.")
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def _cues(segments: Iterable[Mapping[str, Any]], marker: str) -> list[str]:
    cues = []
    for segment in segments:
        text = str(segment["text"]).strip()
        if not text:
            continue
        start = format_timestamp(float(segment["start"]), marker)
        end = format_timestamp(float(segment["end"]), marker)
        cues.append(f"{start} --> {end}\n{text}\n")
    return cues


def to_srt(segments: Iterable[Mapping[str, Any]]) -> str:
    """A SubRip document: numbered cues with `HH:MM:SS,mmm` times."""
    return "\n".join(f"{i}\n{cue}" for i, cue in enumerate(_cues(segments, ","), start=1))


def to_vtt(segments: Iterable[Mapping[str, Any]]) -> str:
    """A WebVTT document: the `WEBVTT` header, then cues with `HH:MM:SS.mmm` times."""
    return "\n".join(["WEBVTT\n", *_cues(segments, ".")])
