"""`zoo detect` over many images: a folder, a glob pattern or a video.

One image keeps the simple form (`--out annotated.png`). A folder or a
glob writes one annotated image per input into the `--out` folder (same
file names); a video writes an annotated video (`--out clip.mp4`). Any of
them can also write every detection to `--detections FILE` (.json or .csv).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.cli_args import CommandError, check_output_path, write_atomically

#: video containers `zoo detect` writes, by suffix
VIDEO_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".webm": "webm",
                 ".avi": "avi"}


def detection_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per box: where (`path`, or `frame` and `time`), class,
    score and `x1 y1 x2 y2` in the image's pixels.

    >>> detection_rows([{"path": Path("a.jpg"), "boxes": np.array([[1., 2., 3., 4.]]),
    ...                  "classes": np.array([0]), "class_names": ["cat"],
    ...                  "scores": np.array([0.5])}])
    [{'path': 'a.jpg', 'class': 0, 'class_name': 'cat', 'score': 0.5, 'x1': 1.0, 'y1': 2.0, 'x2': 3.0, 'y2': 4.0}]
    """
    rows = []
    for result in results:
        where = {k: (str(v) if k == "path" else v) for k, v in result.items()
                 if k in ("path", "frame", "time")}
        for box, cls, name, score in zip(result["boxes"], result["classes"],
                                         result["class_names"], result["scores"]):
            rows.append({**where, "class": int(cls), "class_name": name,
                         "score": round(float(score), 6),
                         **{k: round(float(v), 3) for k, v in zip(("x1", "y1", "x2", "y2"), box)}})
    return rows


def write_detections(path: Path, results: Sequence[dict[str, Any]]) -> None:
    """All detections as JSON (one entry per image, its boxes inside) or CSV
    (one row per box), by `path`'s suffix; written atomically."""
    if path.suffix.lower() == ".csv":
        rows = detection_rows(results)
        fields = [k for k in ("path", "frame", "time") if any(k in r for r in rows)] + [
            "class", "class_name", "score", "x1", "y1", "x2", "y2"]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
    else:
        entries = []
        for result in results:
            entry = {k: (str(v) if k == "path" else v) for k, v in result.items()
                     if k in ("path", "frame", "time")}
            entry["detections"] = [{k: v for k, v in row.items()
                                    if k not in ("path", "frame", "time")}
                                   for row in detection_rows([result])]
            entries.append(entry)

        def write(tmp: Path) -> None:
            tmp.write_text(json.dumps(entries, indent=1))
    write_atomically(path, write)


def check_outputs(source: Any, out: str, detections: str | None) -> tuple[Path, Path | None]:
    """Refuse outputs that cannot be written, before the model loads."""
    listing = None if detections is None else check_output_path(detections, (".json", ".csv"))
    if source.kind == "video":
        return check_output_path(out, tuple(VIDEO_FORMATS)), listing
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"Cannot write annotated images into {folder}: it is a file. Fix: "
                           "pass a folder as --out for a folder or pattern of images.")
    if not folder.parent.is_dir():
        raise CommandError(f"Cannot create {folder}: {folder.parent} does not exist. Fix: "
                           "create it or pass another --out.")
    return folder, listing


def run(detector: Any, source: Any, out: Path, listing: Path | None,
        kwargs: dict[str, Any]) -> None:
    """Detect over `source`, write the annotated images or video, the
    listing, and print one summary line per input."""
    from zoo.utils.draw import draw_detections

    results = detector.predict(source.name, **kwargs)
    if source.kind == "video":
        _write_video(out, source, results)
    else:
        out.mkdir(exist_ok=True)
        used: set[str] = set()
        for result in results:
            name = result["path"].name
            while name in used:  # the same file name in two folders of a glob
                name = f"{Path(name).stem}_{len(used)}{Path(name).suffix}"
            used.add(name)
            annotated = draw_detections(result["path"], result)
            write_atomically(out / name, lambda tmp, image=annotated: image.save(
                tmp, format=_pil_format(name)))
    for result in results:
        where = result.get("path", f"frame {result.get('frame')}")
        found = ", ".join(f"{n} {s:.2f}" for n, s in zip(result["class_names"], result["scores"]))
        print(f"{where}: {found or 'no detections'}")
    if listing is not None:
        write_detections(listing, results)
        print(f"wrote {listing}")
    print(f"wrote {out}")


def _pil_format(name: str) -> str | None:
    from PIL import Image

    return Image.registered_extensions().get(Path(name).suffix.lower())


def _write_video(out: Path, source: Any, results: Sequence[dict[str, Any]]) -> None:
    """Decode the video again and write each frame with its boxes drawn."""
    import av

    from zoo.utils.draw import draw_detections

    with av.open(source.name) as container:
        rate = container.streams.video[0].average_rate or 25

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format=VIDEO_FORMATS[out.suffix.lower()]) as video:
            stream = None
            for (_, frame), result in zip(source, results):
                image = np.asarray(draw_detections(frame, result))
                if stream is None:
                    codec = "libvpx" if out.suffix.lower() == ".webm" else "mpeg4"
                    stream = video.add_stream(codec, rate=rate)
                    stream.height, stream.width = (d - d % 2 for d in image.shape[:2])
                    stream.pix_fmt = "yuv420p"
                    stream.bit_rate = 4_000_000
                image = image[:stream.height, :stream.width]  # (even sizes for yuv420p)
                video.mux(stream.encode(av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(image), format="rgb24")))
            if stream is not None:
                video.mux(stream.encode(None))

    write_atomically(out, write)


def is_many(image: str) -> bool:
    """Whether `zoo detect`'s argument names many images (cheap check, no decoding)."""
    from zoo.utils.image_sources import VIDEO_SUFFIXES

    name = os.path.expanduser(image)
    return os.path.isdir(name) or Path(name).suffix.lower() in VIDEO_SUFFIXES or (
        not os.path.exists(name) and any(c in name for c in "*?["))
