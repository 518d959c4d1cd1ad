"""zoo.utils.audio reads what people record in through PyAV: m4a/aac, opus,
webm, the sound of an mp4 video; damaged and soundless files give clear errors.

The files are encoded here by PyAV from a committed speech clip, at other rates
and channel counts than the model's, and compared with the clip: lossy codecs
keep it to within 20 dB signal-to-noise (26-33 dB measured), aligned to the
sample (FFmpeg drops the encoders' priming samples)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from zoo.utils.audio import AudioError, load_audio

pytestmark = pytest.mark.once  # numpy and FFmpeg only: the same on every backend

FOX = Path(__file__).resolve().parents[1] / "data" / "speech" / "fox.wav"


def encode(path: Path, codec: str, container: str, rate: int, layout: str = "mono",
           video: bool = False, bit_rate: int | None = None, source: Path = FOX) -> Path:
    """Write `source` (a wav, its first channel) to `path` as `codec` in
    `container` at `rate` Hz."""
    samples, source_rate = soundfile.read(source, dtype="float32", always_2d=True)
    channels = 2 if layout == "stereo" else 1
    samples = np.repeat(samples[:, :1], channels, axis=1)
    with av.open(str(path), "w", format=container) as out:
        if video:
            picture = out.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream(codec, rate=rate)
        sound.layout = layout
        if bit_rate:
            sound.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T), format="fltp",
                                           layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = source_rate, 0, Fraction(1, source_rate)
        resampler = av.AudioResampler(format=sound.codec_context.format.name, layout=layout,
                                      rate=rate)
        for piece in resampler.resample(frame) + resampler.resample(None):
            out.mux(sound.encode(piece))
        out.mux(sound.encode(None))
        if video:
            black = np.zeros((48, 64, 3), np.uint8)
            for _ in range(int(len(samples) / source_rate * 10)):
                out.mux(picture.encode(av.VideoFrame.from_ndarray(black, format="rgb24")))
            out.mux(picture.encode(None))
    return path


def snr_db(reference: np.ndarray, samples: np.ndarray) -> float:
    n = min(len(reference), len(samples))
    error = samples[:n] - reference[:n]
    return float(10 * np.log10(np.sum(reference[:n] ** 2) / np.sum(error ** 2)))


@pytest.mark.parametrize("name, codec, container, rate, layout, video", [
    ("phone.m4a", "aac", "mp4", 16000, "mono", False),
    ("voice.opus", "libopus", "ogg", 48000, "mono", False),
    ("call.webm", "libopus", "webm", 48000, "stereo", False),
    ("clip.mp4", "aac", "mp4", 44100, "stereo", True),  # the sound track of a video
])
def test_recorded_formats_read_as_the_clip(tmp_path, name, codec, container, rate, layout,
                                           video):
    reference = load_audio(FOX)
    samples = load_audio(encode(tmp_path / name, codec, container, rate, layout, video))
    assert samples.dtype == np.float32 and samples.ndim == 1
    # the same length, up to the encoder's padding of its last frame (< 50 ms)
    assert abs(len(samples) - len(reference)) < 800, (len(samples), len(reference))
    assert snr_db(reference, samples) > 20.0
    # not shifted: one sample of lag would cost more than the codec does
    assert snr_db(reference, samples) > snr_db(reference, samples[1:]) + 3


def test_video_without_sound(tmp_path):
    path = tmp_path / "silent_film.mp4"
    with av.open(str(path), "w") as out:
        picture = out.add_stream("mpeg4", rate=10)
        picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            out.mux(picture.encode(av.VideoFrame.from_ndarray(
                np.zeros((48, 64, 3), np.uint8), format="rgb24")))
        out.mux(picture.encode(None))
    with pytest.raises(AudioError, match="no audio track") as info:
        load_audio(path)
    assert "video" in str(info.value) and "silent_film.mp4" in str(info.value)


def test_truncated_m4a(tmp_path):
    """A download cut short: an mp4 keeps its index at the end, so nothing is
    readable; the error says so, with the fix."""
    whole = encode(tmp_path / "whole.m4a", "aac", "mp4", 16000).read_bytes()
    path = tmp_path / "cut.m4a"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(AudioError, match="Could not read") as info:
        load_audio(path)
    assert "cut.m4a" in str(info.value) and "Fix:" in str(info.value)


@pytest.mark.parametrize("name, codec, container, rate", [
    ("voice.opus", "libopus", "ogg", 48000),  # read by soundfile (libsndfile)
    ("phone.m4a", "aac", "mp4", 16000),  # PyAV: one packet cannot be decoded
    ("call.webm", "libopus", "webm", 48000),  # PyAV: the demuxer stops early
])
def test_damaged_recording_reads_what_it_can_and_warns(tmp_path, name, codec, container, rate):
    """400 random bytes in the middle of the file: the readable sound is
    returned, and a warning says the file looks damaged and how much was read."""
    path = encode(tmp_path / name, codec, container, rate)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 400] = np.random.default_rng(0).integers(0, 256, 400, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="looks damaged") as record:
        samples = load_audio(path)
    assert name in str(record[0].message)
    assert 0.4 * len(load_audio(FOX)) < len(samples)


def test_intact_files_do_not_warn(tmp_path, recwarn):
    for name, codec, container, rate in [("a.opus", "libopus", "ogg", 48000),
                                         ("a.m4a", "aac", "mp4", 16000)]:
        load_audio(encode(tmp_path / name, codec, container, rate))
    load_audio(FOX)
    assert not [w for w in recwarn if "damaged" in str(w.message)]
