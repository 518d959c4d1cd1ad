"""ObjectDetector.predict over many images by one name: a folder, a glob
pattern, a video file (zoo.utils.image_sources), equal to predict on the same
images as a list, batched, with where each result came from."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.cv.yolov8.synthetic import rectangles
from tests.cv.yolov8.test_yolov8_detector import _detector, _same
from zoo.utils import progress
from zoo.utils.images import ImageError

# Reading the sources is numpy and FFmpeg; predict itself is tested on every
# backend in tests/cv/yolov8 (a plain pytest run on one backend runs these too).
pytestmark = pytest.mark.once


@pytest.fixture(scope="module")
def detector():
    return _detector(size=64, score_threshold=0.0, max_detections=5)


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    """`n` synthetic photos of different sizes."""
    return rectangles(n, 64, seed)[0]


def test_folder_and_glob_equal_the_list_of_their_files(detector, tmp_path):
    for i, image in enumerate(_images(5)):
        Image.fromarray(image).save(tmp_path / f"img{i}.{'png' if i % 2 else 'bmp'}")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    files = sorted(p for p in tmp_path.iterdir() if p.suffix in (".png", ".bmp"))
    expected = detector.predict([str(p) for p in files])
    got = detector.predict(tmp_path, batch_size=2)  # 3 batches, the last one short
    _same(got, expected)
    assert [r["path"] for r in got] == files
    pngs = detector.predict(str(tmp_path / "*.png"), batch_size=4)
    assert [r["path"].name for r in pngs] == ["img1.png", "img3.png"]
    _same(pngs, [expected[1], expected[3]])


def write_video(path: Path, frames: list[np.ndarray], rate: int = 5) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def test_video_frames_equal_the_decoded_frames(detector, tmp_path):
    frames = [np.ascontiguousarray(image[:48, :48]) for image in _images(5, seed=1)]
    video = write_video(tmp_path / "clip.mp4", frames)
    with av.open(str(video)) as container:  # what the file holds (lossy)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 5
    got = detector.predict(str(video), batch_size=2)
    _same(got, detector.predict(decoded))
    assert [r["frame"] for r in got] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([r["time"] for r in got], [0.0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)


def test_progress_bar_over_a_folder(detector, tmp_path, capsys):
    for i, image in enumerate(_images(3)):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    progress.set_enabled(True)
    try:
        detector.predict(tmp_path, batch_size=1)
    finally:
        progress.set_enabled(None)
    err = capsys.readouterr().err
    assert "detect folder" in err and "/3 " in err  # a bar over 3 batches


def test_bad_sources_are_clear_errors(detector, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="has no images"):
        detector.predict(tmp_path / "empty")
    with pytest.raises(ImageError, match="No image files match"):
        detector.predict(str(tmp_path / "*.jpg"))
    sound = tmp_path / "sound.mp4"  # an mp4 with only an audio track
    with av.open(str(sound), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 16000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(ImageError, match="no video track"):
        detector.predict(str(sound))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(ImageError, match="as a video"):
        detector.predict(str(broken))


def test_zoo_detect_over_a_folder_and_a_video(detector, tmp_path, capsys):
    """`zoo detect FOLDER --out DIR --detections x.csv` and `zoo detect VIDEO
    --out annotated.mp4 --detections x.json`: annotated copies, and listings
    that hold what predict finds."""
    import csv
    import json

    from tests.test_cli import assert_one_line_error, zoo_here

    def run_zoo(*args: str) -> subprocess.CompletedProcess:
        return zoo_here(capsys, *args)

    preset = tmp_path / "preset"
    detector.save_to_preset(preset)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(_images(3)):
        Image.fromarray(image).save(photos / f"p{i}.png")
    out = tmp_path / "annotated"
    result = run_zoo("detect", str(photos), "--preset", str(preset), "--out", str(out),
                     "--detections", str(tmp_path / "found.csv"), "--score-threshold", "0")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png", "p2.png"]
    assert Image.open(out / "p1.png").size == Image.open(photos / "p1.png").size
    expected = detector.predict(photos)
    rows = list(csv.DictReader(open(tmp_path / "found.csv")))
    assert len(rows) == sum(len(r["scores"]) for r in expected) > 0
    assert {Path(r["path"]).name for r in rows} <= {"p0.png", "p1.png", "p2.png"}

    frames = [np.ascontiguousarray(image[:48, :48]) for image in _images(4, seed=2)]
    video = write_video(tmp_path / "clip.mp4", frames)
    result = run_zoo("detect", str(video), "--preset", str(preset), "--out",
                     str(tmp_path / "annotated.mp4"), "--detections", str(tmp_path / "v.json"),
                     "--score-threshold", "0")
    assert result.returncode == 0, result.stderr
    with av.open(str(tmp_path / "annotated.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
    listing = json.loads((tmp_path / "v.json").read_text())
    assert [e["frame"] for e in listing] == [0, 1, 2, 3]
    found = detector.predict(str(video))
    assert [len(e["detections"]) for e in listing] == [len(r["scores"]) for r in found]

    assert_one_line_error(run_zoo("detect", str(video), "--preset", str(preset), "--out",
                                  str(tmp_path / "x.png")), ".mp4")
    assert_one_line_error(run_zoo("detect", str(tmp_path / "none" / "*.jpg"), "--preset",
                                  str(preset), "--out", str(tmp_path / "o")), "No image files")
