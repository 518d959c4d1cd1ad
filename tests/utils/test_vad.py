"""zoo.utils.vad: Silero VAD's probabilities (onnxruntime, the model file of
the installed faster-whisper) and zoo's regions and chunks, on generated
probability sequences and generated recordings."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.core.errors import InputError
from zoo.utils import vad
from zoo.utils.audio import load_audio
from zoo.utils.vad import Chunk, VadError, VadOptions, pack_chunks, speech_regions

# numpy and onnxruntime only: one backend is enough
pytestmark = pytest.mark.once
SPEECH = Path(__file__).parents[1] / "data" / "speech"
RATE, FRAME = 16000, 512


def _random_probs(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Runs of speech-like and silence-like frames of random lengths, with
    frames in the undecided band between the thresholds."""
    out, speech = [], bool(rng.integers(2))
    while sum(map(len, out)) < frames:
        length = int(rng.integers(1, 120))
        centre = 0.85 if speech else 0.1
        out.append(np.clip(rng.normal(centre, 0.2, length), 0, 1))
        speech = not speech
    return np.concatenate(out)[:frames].astype(np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_regions_on_random_probabilities_keep_every_rule(seed):
    rng = np.random.default_rng(seed)
    frames = int(rng.integers(1, 4000))
    probs = _random_probs(rng, frames)
    n = frames * FRAME - int(rng.integers(0, FRAME))  # the last frame is partial
    options = VadOptions(min_silence_s=float(rng.choice([0.1, 0.5, 2.0])),
                         speech_pad_s=float(rng.choice([0.0, 0.2, 0.4])),
                         max_region_s=float(rng.choice([5.0, 30.0])))
    regions = speech_regions(probs, n, options)
    flat = [t for r in regions for t in r]
    assert flat == sorted(flat) and all(0 <= t <= n for t in flat)  # ordered, no overlap
    assert all(b > a for a, b in regions)
    assert all(b - a <= options.max_region_s * RATE for a, b in regions)
    # every frame at or above the threshold is inside a region
    for i in np.flatnonzero(probs >= options.threshold):
        start = i * FRAME
        if start < n:
            assert any(a <= start < b for a, b in regions), (i, regions)
    # no region starts on a frame below the threshold (padding and cuts of
    # over-long regions, which start where the one before ends, aside)
    if options.speech_pad_s == 0:
        ends = {b for _, b in regions}
        for a, _ in regions:
            assert a in ends or probs[a // FRAME] >= options.threshold
    # silence shorter than min_silence_s between two regions was bridged,
    # unless the regions were cut for length
    min_gap = options.min_silence_s * RATE
    for (_, b), (a, _) in zip(regions, regions[1:]):
        assert a - b + 2 * options.speech_pad_s * RATE >= min_gap - FRAME or a == b


def test_hysteresis_between_the_thresholds():
    # 0.4 is between neg_threshold (0.35) and threshold (0.5): it neither
    # starts speech nor ends it
    probs = np.array([0.4] * 10 + [0.9] * 10 + [0.4] * 200 + [0.1] * 100, np.float32)
    options = VadOptions(min_silence_s=0.5, speech_pad_s=0.0)
    assert speech_regions(probs, len(probs) * FRAME, options) == [(10 * FRAME, 220 * FRAME)]


def test_a_long_region_is_cut_at_its_quietest_frame():
    probs = np.full(3000, 0.9, np.float32)  # 96 s of speech
    probs[700] = 0.55  # the least speech-like frame in the second half of 30 s
    options = VadOptions(speech_pad_s=0.0, max_region_s=30.0)
    regions = speech_regions(probs, len(probs) * FRAME, options)
    assert regions[0] == (0, 700 * FRAME)
    assert all(b - a <= 30 * RATE for a, b in regions) and regions[-1][1] == 3000 * FRAME


@pytest.mark.parametrize("seed", range(6))
def test_chunks_fit_and_times_map_back_into_their_pieces(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(10, 200)) * RATE
    cuts = np.sort(rng.choice(np.arange(1, n), size=2 * int(rng.integers(1, 30)), replace=False))
    regions = [(int(a), int(b)) for a, b in cuts.reshape(-1, 2)]
    chunks = pack_chunks(regions, 30 * RATE)
    assert [p for c in chunks for p in c.pieces] == regions  # all, in order
    for c in chunks:
        assert c.num_samples <= 30 * RATE or len(c.pieces) == 1
        samples = np.arange(n, dtype=np.float32)
        audio = c.audio(samples)
        assert len(audio) == c.num_samples
        for t in rng.uniform(0, c.num_samples / RATE, 20):
            back = c.recording_time(float(t))
            # the chunk's sample at t is the recording's sample at back
            assert audio[int(t * RATE)] == pytest.approx(back * RATE, abs=1.0)
            assert any(a / RATE <= back <= b / RATE for a, b in c.pieces)
        last = c.pieces[-1][1] / RATE
        assert c.recording_time(c.num_samples / RATE + 3.0, is_end=True) == last  # clamped


def test_seams_belong_to_the_later_piece_and_ends_to_the_earlier():
    chunk = Chunk([(16000, 32000), (80000, 96000)])
    assert chunk.recording_time(1.0) == 5.0
    assert chunk.recording_time(1.0, is_end=True) == 2.0


def test_probabilities_on_a_generated_recording():
    """Silence, a spoken sentence, low noise, a sentence: the model hears the
    two sentences and only them."""
    rng = np.random.default_rng(0)
    fox = load_audio(str(SPEECH / "fox.wav"))
    weather = load_audio(str(SPEECH / "weather.wav"))
    quiet = lambda s: (0.003 * rng.standard_normal(int(s * RATE))).astype(np.float32)  # noqa
    recording = np.concatenate([np.zeros(5 * RATE, np.float32), fox, quiet(8), weather,
                                quiet(3)])
    probs = vad.speech_probabilities(recording)
    assert probs.shape == (-(-len(recording) // FRAME),)
    assert probs.min() >= 0 and probs.max() <= 1
    # one chunk of all the speech (vad=True), pauses under 2 s bridged
    chunks = vad.speech_chunks(recording, max_seconds=None)
    assert len(chunks) == 1
    (a, b), (c, d) = chunks[0].pieces
    fox_at, weather_at = 5 * RATE, 5 * RATE + len(fox) + 8 * RATE
    assert a <= fox_at + 0.3 * RATE and b >= fox_at + len(fox) - 0.5 * RATE
    assert a >= fox_at - 0.5 * RATE and b <= fox_at + len(fox) + 0.5 * RATE
    assert c <= weather_at + 0.3 * RATE and d >= weather_at + len(weather) - 0.5 * RATE
    # vad="chunks": pauses of 0.16 s split (there is one inside weather.wav)
    pieces = [p for c in vad.speech_chunks(recording, max_seconds=30.0) for p in c.pieces]
    assert len(pieces) > 2 and pieces[0] == (a, b) and (pieces[1][0], pieces[-1][1]) == (c, d)
    assert vad.speech_chunks(np.zeros(10 * RATE, np.float32)) == []
    assert vad.speech_chunks(quiet(10)) == []
    assert vad.speech_probabilities(np.zeros(0, np.float32)).shape == (0,)
    # the same audio in a different frame phase gives the same regions within a frame
    shifted = vad.speech_chunks(np.concatenate([np.zeros(100, np.float32), recording]), None)
    assert [p for p, q in zip(shifted[0].pieces, chunks[0].pieces)
            if abs(p[0] - 100 - q[0]) > 2 * FRAME] == []


def test_bad_options_and_missing_pieces_are_clear_errors(monkeypatch, tmp_path):
    with pytest.raises(InputError, match="threshold must be in"):
        VadOptions(threshold=1.5)
    with pytest.raises(InputError, match="neg_threshold"):
        VadOptions(threshold=0.5, neg_threshold=0.7)
    with pytest.raises(InputError, match="speech_pad_s must be >= 0"):
        VadOptions(speech_pad_s=-1)
    with pytest.raises(InputError, match="max_region_s"):
        VadOptions(max_region_s=0.5)
    monkeypatch.setenv("ZOO_VAD_MODEL", str(tmp_path / "nothing.onnx"))
    with pytest.raises(VadError, match="ZOO_VAD_MODEL"):
        vad.model_path()
    monkeypatch.delenv("ZOO_VAD_MODEL")
    monkeypatch.setattr(vad.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VadError, match="zoo\\[vad\\]"):
        vad.model_path()
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    vad._session.cache_clear()
    with pytest.raises(VadError, match="onnxruntime"):
        vad.speech_probabilities(np.zeros(RATE, np.float32))
    vad._session.cache_clear()
