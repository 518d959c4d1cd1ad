"""WhisperAudioConverter: parity with transformers' WhisperFeatureExtractor."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import chirp

from zoo.audio.whisper.whisper_audio_converter import (
    WhisperAudioConverter,
    hz_to_mel,
    mel_filter_bank,
    mel_to_hz,
)
from zoo.utils.audio import AudioError, load_audio, resample

pytestmark = pytest.mark.once  # numpy only: the same on every backend

transformers = pytest.importorskip("transformers")

SPEECH = Path(__file__).resolve().parents[2] / "data" / "speech"
# real speech (espeak-ng clips, see tests/data/speech/make_clips.sh); the lossy
# .ogg / .mp3 copies add nothing here (their decoding is tested in tests/utils)
SPEECH_FILES = sorted(p for p in SPEECH.glob("*") if p.suffix in (".wav", ".flac"))

# max abs difference allowed against transformers' public __call__ (which uses
# torch.stft in float32 when torch is installed)
TOLERANCE = 1e-4
# against transformers' numpy path (float64 FFT, like ours)
NUMPY_PATH_TOLERANCE = 1e-5


def extractor(bins: int):
    return transformers.WhisperFeatureExtractor(feature_size=bins)


def synthetic(seconds: float, seed: int = 0) -> np.ndarray:
    """A log chirp 100 Hz -> 7 kHz plus white noise, with a slow loudness envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    x = 0.3 * chirp(t, 100, t[-1], 7000, method="logarithmic") + 0.05 * rng.standard_normal(t.size)
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)
    return x.astype(np.float32)


def reference(samples: np.ndarray, bins: int, full_length: bool = False) -> np.ndarray:
    kwargs = {"padding": "longest", "truncation": False} if full_length else {}
    out = extractor(bins)(samples, sampling_rate=16000, return_tensors="np", **kwargs)
    return out.input_features


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# -- parity --------------------------------------------------------------------
@pytest.mark.parametrize("bins", [80, 128])
@pytest.mark.parametrize("path", SPEECH_FILES, ids=[p.name for p in SPEECH_FILES])
def test_real_speech_parity(path, bins):
    samples = load_audio(path)
    converter = WhisperAudioConverter(num_mel_bins=bins)
    ours = converter(path)  # reads the file itself
    assert ours.shape == (1, bins, 3000) and ours.dtype == np.float32
    assert max_abs(ours, reference(samples, bins)) <= TOLERANCE
    if samples.shape[0] > converter.num_samples:
        # long-form: the whole clip plus 30 s of zeros, as openai-whisper does
        padded = np.concatenate([samples, np.zeros(converter.num_samples, np.float32)])
        assert max_abs(converter.log_mel(padded), reference(padded, bins, True)[0]) <= TOLERANCE


def test_real_speech_fixtures_present():
    if not SPEECH_FILES:
        pytest.skip(f"no speech fixtures (*.wav, *.flac) in {SPEECH}")
    assert any(p.suffix == ".wav" for p in SPEECH_FILES)


@pytest.mark.parametrize("bins", [80, 128])
@pytest.mark.parametrize("seconds", [7, 45])
def test_synthetic_parity(seconds, bins):
    samples = synthetic(seconds)
    converter = WhisperAudioConverter(num_mel_bins=bins)
    # one 30 s chunk: padded (7 s) or truncated (45 s)
    assert max_abs(converter(samples, sampling_rate=16000), reference(samples, bins)) <= TOLERANCE
    # the whole clip, no padding to 30 s
    whole = converter.log_mel(samples)
    assert whole.shape == (bins, seconds * 100)
    assert max_abs(whole, reference(samples, bins, full_length=True)[0]) <= TOLERANCE


@pytest.mark.parametrize("bins", [80, 128])
def test_quiet_audio_parity(bins):
    # so quiet that max - 8 falls below log10(1e-10): the 1e-10 floor decides the silence
    samples = 1e-3 * synthetic(5)
    converter = WhisperAudioConverter(num_mel_bins=bins)
    features = converter(samples, sampling_rate=16000)
    assert features.min() == pytest.approx((-10 + 4) / 4)
    assert max_abs(features, reference(samples, bins)) <= TOLERANCE


@pytest.mark.parametrize("bins", [80, 128])
def test_numpy_path_parity(bins):
    fe = extractor(bins)
    if not hasattr(fe, "_np_extract_fbank_features"):
        pytest.skip("this transformers version has no numpy feature path")
    samples = synthetic(45)
    chunk = samples[:480000][None]
    ours = WhisperAudioConverter(num_mel_bins=bins)(samples, sampling_rate=16000)
    assert max_abs(ours, fe._np_extract_fbank_features(chunk, "cpu")) <= NUMPY_PATH_TOLERANCE


@pytest.mark.parametrize("bins", [80, 128])
def test_mel_filters_match_transformers(bins):
    from transformers.audio_utils import mel_filter_bank as transformers_mel_filter_bank

    theirs = transformers_mel_filter_bank(
        num_frequency_bins=201, num_mel_filters=bins, min_frequency=0.0, max_frequency=8000.0,
        sampling_rate=16000, norm="slaney", mel_scale="slaney",
    )  # (freqs, mels)
    np.testing.assert_allclose(mel_filter_bank(bins, 16000, 400), theirs.T, rtol=0, atol=1e-12)


def test_slaney_mel_scale():
    np.testing.assert_allclose(hz_to_mel([0.0, 200.0, 1000.0, 6400.0]), [0.0, 3.0, 15.0, 42.0])
    hz = np.array([0.0, 440.0, 999.0, 1000.0, 1001.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)


def test_sine_lands_in_its_mel_bin():
    converter = WhisperAudioConverter()
    t = np.arange(32000) / 16000
    features = converter.log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    centres = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), 82))[1:-1]
    assert int(np.argmax(features.mean(axis=1))) == int(np.argmin(np.abs(centres - 1000.0)))


# -- shapes, padding, batches ----------------------------------------------------
def test_chunk_shape_padding_and_truncation():
    converter = WhisperAudioConverter()
    assert (converter.num_samples, converter.num_frames) == (480000, 3000)
    samples = synthetic(45)
    np.testing.assert_array_equal(
        converter(samples, sampling_rate=16000), converter(samples[:480000], sampling_rate=16000)
    )
    short = samples[:16000]
    padded = np.concatenate([short, np.zeros(480000 - 16000, np.float32)])
    np.testing.assert_array_equal(
        converter(short, sampling_rate=16000)[0], converter.log_mel(padded)
    )
    assert converter.log_mel(samples[: 16000 + 159]).shape == (80, 100)
    assert WhisperAudioConverter(chunk_length=10).num_frames == 1000


def test_batch_of_files_and_arrays(tmp_path):
    import soundfile

    converter = WhisperAudioConverter()
    a, b = synthetic(3, seed=1), synthetic(5, seed=2)
    path = tmp_path / "b.wav"
    soundfile.write(path, b, 16000, subtype="FLOAT")
    batch = converter([a, path], sampling_rate=16000)
    assert batch.shape == (2, 80, 3000) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], converter(a, sampling_rate=16000)[0])
    np.testing.assert_array_equal(batch[1], converter(b, sampling_rate=16000)[0])
    # the max - 8 floor is per clip, as in transformers: a quiet clip next to a loud one
    quiet = 1e-3 * b
    batch = converter([a, quiet], sampling_rate=16000)
    theirs = extractor(80)([a, quiet], sampling_rate=16000, return_tensors="np").input_features
    assert max_abs(batch, theirs) <= TOLERANCE


def test_other_sampling_rates_are_resampled():
    converter = WhisperAudioConverter()
    t = np.arange(44100 * 2) / 44100
    x = (0.3 * np.sin(2 * np.pi * 700 * t)).astype(np.float32)
    np.testing.assert_array_equal(
        converter(x, sampling_rate=44100),
        converter(resample(x, 44100, 16000), sampling_rate=16000),
    )


# -- config --------------------------------------------------------------------
def test_config_round_trip():
    converter = WhisperAudioConverter(num_mel_bins=128, chunk_length=20)
    config = converter.get_config()
    assert config == {"num_mel_bins": 128, "sampling_rate": 16000, "n_fft": 400,
                      "hop_length": 160, "chunk_length": 20}
    restored = WhisperAudioConverter.from_config(json.loads(json.dumps(config)))
    assert restored.get_config() == config and restored.num_frames == 2000
    samples = synthetic(3)
    np.testing.assert_array_equal(
        restored(samples, sampling_rate=16000), converter(samples, sampling_rate=16000)
    )


# -- errors --------------------------------------------------------------------
def test_errors():
    converter = WhisperAudioConverter()
    with pytest.raises(AudioError, match="batch"):
        converter([0.1, 0.2, 0.3], sampling_rate=16000)
    with pytest.raises(AudioError, match="empty list"):
        converter([], sampling_rate=16000)
    with pytest.raises(AudioError, match="sampling_rate"):
        converter(np.zeros(100, np.float32))
    with pytest.raises(AudioError, match="mono"):
        converter.log_mel(np.zeros((2, 16000), np.float32))
    with pytest.raises(AudioError, match="at least"):
        converter.log_mel(np.zeros(100, np.float32))
    with pytest.raises(AudioError, match="NaN"):
        converter.log_mel(np.full(16000, np.nan, np.float32))
    with pytest.raises(ValueError, match="num_mel_bins"):
        WhisperAudioConverter(num_mel_bins=0)
