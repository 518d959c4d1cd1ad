"""`WhisperAudioConverter`: audio to Whisper's log-mel spectrogram, in numpy.

The features equal those of transformers' `WhisperFeatureExtractor` (and of
openai-whisper's `log_mel_spectrogram`): a centred short-time Fourier
transform (reflect padding, periodic Hann window of `n_fft` samples, hop
`hop_length`), its power spectrum, a Slaney-scale mel filter bank with Slaney
area normalisation (as librosa builds it), `log10(max(mel, 1e-10))`, values
below `max - 8` raised to `max - 8`, then `(x + 4) / 4`. The last STFT frame is
dropped, so a 30 s chunk of 480000 samples gives exactly 3000 frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.core.errors import InputError
from zoo.utils.audio import AudioError, load_audio

# Slaney's mel scale (librosa's default, `htk=False`): linear below 1 kHz, log above.
_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _LINEAR_HZ_PER_MEL  # 15 mel
_MELS_PER_LOG_HZ = 27.0 / math.log(6.4)


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Frequencies in Hz to mels on the Slaney scale."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _LINEAR_HZ_PER_MEL
    log = _LOG_START_MEL + np.log(np.maximum(hz, _LOG_START_HZ) / _LOG_START_HZ) * _MELS_PER_LOG_HZ
    return np.where(hz >= _LOG_START_HZ, log, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Mels on the Slaney scale to frequencies in Hz (the inverse of `hz_to_mel`)."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _LINEAR_HZ_PER_MEL
    above = np.maximum(mel, _LOG_START_MEL) - _LOG_START_MEL
    log = _LOG_START_HZ * np.exp(above / _MELS_PER_LOG_HZ)
    return np.where(mel >= _LOG_START_MEL, log, linear)


def mel_filter_bank(num_mel_bins: int, sampling_rate: int, n_fft: int) -> np.ndarray:
    """Triangular Slaney-normalised mel filters from 0 Hz to `sampling_rate / 2`.

    The same filters as `librosa.filters.mel(sr, n_fft, n_mels, htk=False,
    norm="slaney")`; transformers fixes the top at 8 kHz, which is the same
    for Whisper's 16 kHz.

    Args:
        num_mel_bins: number of filters.
        sampling_rate: audio rate in Hz.
        n_fft: FFT size; the filters cover its `n_fft // 2 + 1` frequency bins.

    Returns:
        float64 array of shape (num_mel_bins, n_fft // 2 + 1).

    Example:

    >>> mel_filter_bank(80, 16000, 400).shape
    (80, 201)
    """
    fft_hz = np.linspace(0.0, sampling_rate / 2.0, n_fft // 2 + 1)  # (freqs,)
    edges_mel = np.linspace(hz_to_mel(0.0), hz_to_mel(sampling_rate / 2.0), num_mel_bins + 2)
    edges_hz = mel_to_hz(edges_mel)  # (mels + 2,): left, centre, right of each triangle
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)  # (mels, freqs)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (upper - lower))  # Slaney norm: each triangle has unit area


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InputError(f"{name} must be a positive integer, got {value!r}. Fix: e.g. {name}=80.")
    return int(value)


class WhisperAudioConverter:
    """Turns audio into Whisper's log-mel input features (numpy, any backend).

    Args:
        num_mel_bins: number of mel bins: 80 for every Whisper model except
            large-v3 / large-v3-turbo, which use 128.
        sampling_rate: the rate the model expects, in Hz; inputs at other
            rates are resampled to it.
        n_fft: STFT window and FFT size, in samples.
        hop_length: STFT hop, in samples.
        chunk_length: seconds of audio the model reads at once; `__call__`
            pads or truncates every input to this length.

    Example:

    >>> import numpy as np
    >>> converter = WhisperAudioConverter()
    >>> t = np.arange(16000) / 16000
    >>> sine = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # 1 s, 440 Hz
    >>> features = converter(sine, sampling_rate=16000)
    >>> features.shape, features.dtype
    ((1, 80, 3000), dtype('float32'))
    >>> converter.log_mel(sine).shape  # no padding to 30 s
    (80, 100)
    """

    def __init__(
        self,
        num_mel_bins: int = 80,
        sampling_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        chunk_length: int = 30,
    ) -> None:
        self.num_mel_bins = _positive_int(num_mel_bins, "num_mel_bins")
        self.sampling_rate = _positive_int(sampling_rate, "sampling_rate")
        self.n_fft = _positive_int(n_fft, "n_fft")
        self.hop_length = _positive_int(hop_length, "hop_length")
        self.chunk_length = _positive_int(chunk_length, "chunk_length")
        n = np.arange(self.n_fft)
        # periodic Hann window, shape (n_fft,)
        self.window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / self.n_fft)
        # (num_mel_bins, n_fft // 2 + 1)
        self.mel_filters = mel_filter_bank(self.num_mel_bins, self.sampling_rate, self.n_fft)

    @property
    def num_samples(self) -> int:
        """Samples in one chunk (480000 for Whisper: 30 s at 16 kHz)."""
        return self.chunk_length * self.sampling_rate

    @property
    def num_frames(self) -> int:
        """Feature frames in one chunk (3000 for Whisper)."""
        return self.num_samples // self.hop_length

    def get_config(self) -> dict:
        """The constructor arguments, JSON-serialisable."""
        return {
            "num_mel_bins": self.num_mel_bins,
            "sampling_rate": self.sampling_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "chunk_length": self.chunk_length,
        }

    @classmethod
    def from_config(cls, config: dict) -> WhisperAudioConverter:
        """Build a converter from `get_config()`'s output."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def log_mel(self, samples: np.ndarray) -> np.ndarray:
        """The log-mel spectrogram of a whole clip, without padding it to 30 s.

        The result has `len(samples) // hop_length` frames. For long-form
        transcription, pad the whole clip with `num_samples` zeros, call this
        once and slice `num_frames`-frame windows out of the result (as
        openai-whisper does). Note that the `max - 8` floor is then taken over
        the whole clip, not per window, so a window differs slightly from
        calling the converter on that window's samples alone.

        Args:
            samples: mono samples at `sampling_rate`, shape (samples,); at
                least `hop_length` of them. They are used as float32.

        Returns:
            float32 array of shape (num_mel_bins, len(samples) // hop_length).

        Example:

        >>> import numpy as np
        >>> WhisperAudioConverter(num_mel_bins=128).log_mel(np.zeros(32000, np.float32)).shape
        (128, 200)
        """
        samples = np.asarray(samples)
        if samples.ndim != 1:
            raise AudioError(
                f"log_mel takes one mono clip of shape (samples,), got shape {samples.shape}. "
                "Fix: mix down and resample with zoo.utils.audio.load_audio first."
            )
        if not np.issubdtype(samples.dtype, np.floating):
            raise AudioError(
                f"log_mel takes float samples in [-1, 1], got {samples.dtype}. "
                "Fix: convert PCM with zoo.utils.audio.load_audio first."
            )
        if samples.shape[0] < self.hop_length:
            raise AudioError(
                f"log_mel needs at least hop_length={self.hop_length} samples, got "
                f"{samples.shape[0]}. Fix: pad the clip with zeros."
            )
        samples = samples.astype(np.float32, copy=False)
        if not np.isfinite(samples).all():
            raise AudioError(
                "log_mel got NaN or infinite samples. Fix: clean the signal first, "
                "e.g. np.nan_to_num(samples)."
            )
        return self._log_mel(samples)

    def _log_mel(self, samples: np.ndarray) -> np.ndarray:
        """`log_mel` without input checks; `samples` is 1-D float32."""
        # float64 FFT: with numpy 2.x it is no slower than float32 here, and it
        # matches transformers' numpy path to 1 float32 ulp (float32: ~1e-5).
        padded = np.pad(samples.astype(np.float64), self.n_fft // 2, mode="reflect")
        num_frames = (padded.shape[0] - self.n_fft) // self.hop_length  # the last one dropped
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)
        frames = windows[:: self.hop_length][:num_frames]  # (frames, n_fft), a view
        spectrum = np.fft.rfft(frames * self.window, axis=-1)  # (frames, n_fft // 2 + 1)
        power = spectrum.real**2 + spectrum.imag**2
        mel = self.mel_filters @ power.T  # (mels, frames)
        log_spec = np.log10(np.maximum(mel, 1e-10))
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).astype(np.float32)

    def __call__(
        self, audio: Any | Sequence[Any], sampling_rate: int | None = None
    ) -> np.ndarray:
        """Features of the first `chunk_length` seconds of each input.

        Args:
            audio: one input or a list of inputs, each anything
                `zoo.utils.audio.load_audio` accepts: a file path (wav, flac,
                ogg, mp3) or an array of samples. Each input is mixed down,
                resampled to `sampling_rate`, then padded with zeros or
                truncated to `num_samples`. A list is always a batch, and a
                2-D array is always one multichannel clip (not a batch).
            sampling_rate: the rate of array inputs, in Hz (required for
                arrays; files carry their own rate).

        Returns:
            float32 array of shape (batch, num_mel_bins, num_frames).
        """
        if isinstance(audio, (list, tuple)):
            inputs = list(audio)
            if not inputs:
                raise AudioError("Got an empty list of audio inputs. Fix: pass at least one clip.")
            if all(isinstance(item, (int, float, np.number)) for item in inputs):
                raise AudioError(
                    "Got a list of numbers; a list is read as a batch of clips. Fix: pass "
                    "the samples of one clip as a numpy array, np.asarray(samples)."
                )
        else:
            inputs = [audio]
        features = np.empty((len(inputs), self.num_mel_bins, self.num_frames), np.float32)
        for i, item in enumerate(inputs):
            samples = load_audio(item, sampling_rate=sampling_rate, target_rate=self.sampling_rate)
            chunk = np.zeros(self.num_samples, np.float32)
            length = min(samples.shape[0], self.num_samples)
            chunk[:length] = samples[:length]
            features[i] = self._log_mel(chunk)
        return features
