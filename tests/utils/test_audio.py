"""zoo.utils.audio: sample scaling, channel mix-down, resampling, files, errors."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from zoo.utils.audio import SAMPLING_RATE, AudioError, load_audio, resample

pytestmark = pytest.mark.once  # numpy only: the same on every backend

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech"


def sine(frequency: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    """Frequency of the largest FFT bin (Hann-windowed)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[np.argmax(spectrum)])


# -- sample types --------------------------------------------------------------
@pytest.mark.parametrize(
    "dtype, values, expected",
    [
        (np.int16, [0, 16384, -32768, 32767], [0.0, 0.5, -1.0, 32767 / 32768]),
        (np.int32, [0, 2**30, -(2**31), 2**31 - 1], [0.0, 0.5, -1.0, (2**31 - 1) / 2**31]),
        (np.uint8, [128, 192, 0, 255], [0.0, 0.5, -1.0, 127 / 128]),
        (np.int8, [0, 64, -128, 127], [0.0, 0.5, -1.0, 127 / 128]),
        (np.float32, [0.0, 0.25, -1.5, 2.0], [0.0, 0.25, -1.5, 2.0]),  # floats kept, not clipped
        (np.float64, [0.0, 0.25, -0.75, 1e-6], [0.0, 0.25, -0.75, 1e-6]),
    ],
)
def test_sample_types_scale_to_unit_range(dtype, values, expected):
    out = load_audio(np.array(values, dtype=dtype), sampling_rate=SAMPLING_RATE)
    assert out.dtype == np.float32 and out.shape == (len(values),)
    np.testing.assert_allclose(out, np.array(expected, np.float32), rtol=0, atol=1e-7)


def test_float32_input_is_returned_unchanged():
    samples = np.random.default_rng(0).uniform(-1, 1, 1000).astype(np.float32)
    np.testing.assert_array_equal(load_audio(samples, sampling_rate=16000), samples)


# -- channels ------------------------------------------------------------------
def test_stereo_samples_by_channels_is_averaged():
    stereo = np.stack([np.full(500, 0.2), np.full(500, 0.6)], axis=1).astype(np.float32)  # (500, 2)
    out = load_audio(stereo, sampling_rate=16000)
    assert out.shape == (500,)
    np.testing.assert_allclose(out, 0.4, atol=1e-7)


def test_stereo_channels_by_samples_is_averaged():
    stereo = np.array([np.full(500, 8192), np.full(500, -16384)], dtype=np.int16)  # (2, 500)
    out = load_audio(stereo, sampling_rate=16000)
    assert out.shape == (500,)
    np.testing.assert_allclose(out, (0.25 - 0.5) / 2, atol=1e-7)


def test_channel_layout_rule():
    # first axis <= 8 and shorter than the second: (channels, samples)
    assert load_audio(np.zeros((8, 9), np.float32), sampling_rate=16000).shape == (9,)
    assert load_audio(np.zeros((1, 300), np.float32), sampling_rate=16000).shape == (300,)
    # otherwise (samples, channels)
    assert load_audio(np.zeros((4, 3), np.float32), sampling_rate=16000).shape == (4,)
    assert load_audio(np.zeros((9, 100), np.float32), sampling_rate=16000).shape == (9,)
    assert load_audio(np.zeros((300, 1), np.float32), sampling_rate=16000).shape == (300,)


# -- resampling ----------------------------------------------------------------
def test_resample_44k_sine_keeps_frequency_and_length():
    samples = sine(1000.0, 44100, seconds=1.0)
    out = load_audio(samples, sampling_rate=44100)
    assert out.shape == (16000,) and out.dtype == np.float32
    assert abs(peak_hz(out, 16000) - 1000.0) <= 1.0  # 1 Hz bins
    middle = out[1000:-1000]  # away from the filter's edge effects
    assert abs(np.sqrt(np.mean(middle**2)) - 0.5 / np.sqrt(2)) < 0.005


def test_resample_up_and_to_another_target_rate():
    up = resample(sine(440.0, 8000), 8000, 16000)
    assert up.shape == (16000,) and abs(peak_hz(up, 16000) - 440.0) <= 1.0
    down = load_audio(sine(440.0, 48000), sampling_rate=48000, target_rate=8000)
    assert down.shape == (8000,) and abs(peak_hz(down, 8000) - 440.0) <= 1.0


def test_resample_same_rate_is_identity_and_length_rounds_up():
    samples = sine(300.0, 16000)
    np.testing.assert_array_equal(resample(samples, 16000, 16000), samples)
    assert resample(np.zeros(1001, np.float32), 44100, 16000).shape == (364,)  # ceil(1001*160/441)


# -- files ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "suffix, fmt, subtype",
    [(".wav", "WAV", "PCM_16"), (".flac", "FLAC", "PCM_24"), (".ogg", "OGG", "VORBIS"),
     (".mp3", "MP3", "MPEG_LAYER_III")],
)
def test_read_files(tmp_path, suffix, fmt, subtype):
    samples = sine(440.0, 16000, seconds=1.0)
    path = tmp_path / f"clip{suffix}"
    soundfile.write(path, samples, 16000, format=fmt, subtype=subtype)
    for audio in (path, str(path)):
        out = load_audio(audio)
        assert out.dtype == np.float32 and out.ndim == 1
        assert abs(peak_hz(out, 16000) - 440.0) <= 1.0
    if fmt in ("WAV", "FLAC"):  # lossless: equal up to the PCM step
        assert out.shape == (16000,)
        np.testing.assert_allclose(out, samples, rtol=0, atol=1 / 2**15)
    else:  # lossy codecs: same loudness
        rms = np.sqrt(np.mean(out**2))
        assert abs(rms - 0.5 / np.sqrt(2)) < 0.02


def test_read_stereo_44k_file_is_mixed_and_resampled(tmp_path):
    left, right = sine(1000.0, 44100, amplitude=0.8), sine(1000.0, 44100, amplitude=0.2)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    out = load_audio(path, sampling_rate=8000)  # files carry their own rate: 8000 is ignored
    assert out.shape == (16000,)
    assert abs(peak_hz(out, 16000) - 1000.0) <= 1.0
    assert abs(np.sqrt(np.mean(out[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.005


def test_short_multichannel_file_is_samples_by_channels(tmp_path):
    # the (channels, samples) guess is for arrays only: a file says its own layout
    path = tmp_path / "short.wav"
    soundfile.write(path, np.array([[0.5, -0.25, 0.25]], np.float32), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), [0.5 / 3], atol=1e-7)


STEREO_FIXTURES = sorted(SPEECH.glob("*_stereo_44k.wav"))


@pytest.mark.parametrize("stereo_path", STEREO_FIXTURES, ids=[p.name for p in STEREO_FIXTURES])
def test_speech_fixture_stereo_44k_matches_mono_16k(stereo_path):
    # X_stereo_44k.wav is X.wav resampled by sox, right channel = 0.7 x left (make_clips.sh)
    mono_path = stereo_path.with_name(stereo_path.name.replace("_stereo_44k", ""))
    if not mono_path.exists():
        pytest.skip(f"{mono_path.name}, the 16 kHz mono original of {stereo_path.name}, is missing")
    mono = load_audio(mono_path)
    stereo = load_audio(stereo_path)
    assert abs(stereo.shape[0] - mono.shape[0]) <= 1
    n = min(mono.shape[0], stereo.shape[0])
    assert np.corrcoef(mono[:n], stereo[:n])[0, 1] > 0.999
    assert abs(float(mono[:n] @ stereo[:n]) / float(mono[:n] @ mono[:n]) - 0.85) < 0.005


# -- errors --------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="not found") as info:
        load_audio(path)
    assert "nope.wav" in str(info.value)


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "x.wav"
    path.write_text("this is not audio\n")
    with pytest.raises(AudioError, match="Could not read") as info:
        load_audio(path)
    assert "x.wav" in str(info.value) and "ffmpeg" in str(info.value)


def test_png_file(tmp_path):
    from PIL import Image

    path = tmp_path / "picture.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(AudioError, match="as audio"):
        load_audio(path)


def test_directory(tmp_path):
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


def test_empty_array_and_empty_file(tmp_path):
    with pytest.raises(AudioError, match="empty"):
        load_audio(np.zeros(0, np.float32), sampling_rate=16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(np.zeros((0, 2), np.int16), sampling_rate=16000)
    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(path)


def test_array_without_sampling_rate():
    with pytest.raises(AudioError, match="sampling_rate=") as info:
        load_audio(np.zeros(100, np.float32))
    assert "needs its sampling rate" in str(info.value)


@pytest.mark.parametrize(
    "bad, word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")]
)
def test_non_finite_samples(bad, word):
    samples = np.zeros(100, np.float32)
    samples[37] = bad
    with pytest.raises(AudioError, match=word) as info:
        load_audio(samples, sampling_rate=16000)
    assert "index 37" in str(info.value) and "nan_to_num" in str(info.value)


@pytest.mark.parametrize("shape", [(), (2, 3, 100)])
def test_wrong_dimensionality(shape):
    with pytest.raises(AudioError, match="1-D"):
        load_audio(np.zeros(shape, np.float32), sampling_rate=16000)


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, float("nan"), "16000"])
def test_bad_sampling_rate(rate):
    with pytest.raises(AudioError, match="positive"):
        load_audio(np.zeros(100, np.float32), sampling_rate=rate)


def test_bad_target_rate_and_resample_rates():
    with pytest.raises(AudioError, match="target_rate"):
        load_audio(np.zeros(100, np.float32), sampling_rate=16000, target_rate=0)
    with pytest.raises(AudioError, match="orig_rate"):
        resample(np.zeros(100, np.float32), -1, 16000)


def test_unscaled_integer_types_and_non_numbers():
    with pytest.raises(AudioError, match="int16"):
        load_audio(np.zeros(100, np.int64), sampling_rate=16000)
    with pytest.raises(AudioError, match="numbers"):
        load_audio(np.array(["a", "b"]), sampling_rate=16000)
    with pytest.raises(AudioError, match="bytes"):
        load_audio(b"RIFF....WAVE", sampling_rate=16000)
