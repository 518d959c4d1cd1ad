"""Reading audio into float32 mono samples at a fixed rate.

Speech models take mono float32 samples in [-1, 1] at one sampling rate
(16 kHz for Whisper). `load_audio` turns what users have — an audio file
(wav, flac, ogg and mp3 through soundfile; m4a/aac, opus, webm, the audio
track of an mp4 or mkv video, and whatever else FFmpeg decodes, through
PyAV), or a numpy array of any common sample type and channel layout — into
exactly that, and says clearly what is wrong when it cannot.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np

from zoo.core.errors import ZooError

#: the sampling rate speech models (Whisper) expect, in Hz
SAMPLING_RATE = 16000

#: a 2-D array whose first axis is at most this long (and shorter than the
#: second) is read as (channels, samples); otherwise as (samples, channels)
MAX_LEADING_CHANNELS = 8

_FILE_FORMATS = "wav, flac, ogg, mp3, m4a, aac, opus, webm or mp4"


class AudioError(ZooError, ValueError):
    """Audio input that cannot be used: missing, unreadable, empty or malformed."""


def _check_rate(rate: Any, name: str) -> int:
    """Return `rate` as a positive int, or raise AudioError naming `name`."""
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.number)):
        raise AudioError(
            f"{name} must be a positive number of samples per second, got {rate!r}. "
            f"Fix: pass e.g. {name}=16000."
        )
    if not (math.isfinite(rate) and rate > 0 and float(rate).is_integer()):
        raise AudioError(
            f"{name} must be a positive whole number of samples per second, got {rate!r}. "
            f"Fix: pass e.g. {name}=16000."
        )
    return int(rate)


def _to_float(array: np.ndarray) -> np.ndarray:
    """Scale integer PCM to [-1, 1] and return float32 (float input is kept as is)."""
    dtype = array.dtype
    if dtype == np.uint8:  # 8-bit PCM is unsigned, centred at 128
        return (array.astype(np.float32) - 128.0) / 128.0
    if dtype in (np.int8, np.int16, np.int32):
        scale = float(2 ** (8 * dtype.itemsize - 1))
        return (array.astype(np.float64) / scale).astype(np.float32)
    if np.issubdtype(dtype, np.floating):
        return array.astype(np.float32, copy=False)
    if np.issubdtype(dtype, np.integer):
        raise AudioError(
            f"Audio samples of type {dtype} have no standard scale. Fix: pass int16, int32 "
            "or uint8 PCM, or float samples in [-1, 1] (e.g. samples.astype(np.float32) / peak)."
        )
    raise AudioError(
        f"Audio samples must be numbers, got an array of type {dtype}. "
        "Fix: pass float samples in [-1, 1] or int16 / int32 / uint8 PCM."
    )


def _to_mono(array: np.ndarray, guess_layout: bool = True) -> np.ndarray:
    """Average the channels of a 1-D or 2-D sample array into one 1-D array.

    With `guess_layout`, a 2-D array may be (channels, samples) (see
    `MAX_LEADING_CHANNELS`); without it (file data), it is (samples, channels).
    """
    if array.ndim == 1:
        return array
    if array.ndim != 2:
        raise AudioError(
            f"Audio must be a 1-D array of samples or a 2-D (samples, channels) array, got "
            f"shape {array.shape}. Fix: pass one clip at a time (a batch is a list of clips)."
        )
    rows, cols = array.shape
    if guess_layout and rows <= MAX_LEADING_CHANNELS and cols > rows:
        array = array.T  # (channels, samples) -> (samples, channels)
    if array.shape[1] == 1:
        return array[:, 0]
    return array.mean(axis=1, dtype=np.float32)


def _read_file(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file into (float32 (samples, channels), sampling rate):
    soundfile for what libsndfile reads (exact and fast), else PyAV."""
    import soundfile

    name = os.path.expanduser(os.fspath(path))
    if not os.path.exists(name):
        raise AudioError(
            f"Audio file not found: {name!r} (relative paths start at {os.getcwd()!r}). "
            "Fix: check the path and file name."
        )
    if os.path.isdir(name):
        raise AudioError(f"{name!r} is a directory, not an audio file. Fix: pass the file's path.")
    try:
        with soundfile.SoundFile(name) as file:
            declared, rate = file.frames / file.samplerate, file.samplerate
            samples = file.read(dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError) as error:
        return _decode(name, error)
    _warn_if_short(name, len(samples) / rate, declared)
    return samples, int(rate)


def _warn_if_short(name: str, seconds: float, declared: float | None, skipped: int = 0) -> None:
    """Warn when a decoder read clearly less sound than the file declares, or
    skipped packets: a damaged or cut-short file, whose readable part is used."""
    if skipped or (declared is not None and seconds < 0.9 * declared - 0.1):
        lost = f"skipped {skipped} audio packets FFmpeg could not decode; " if skipped else ""
        of = f" of the {declared:.2f} s the file declares" if declared else ""
        warnings.warn(f"{name!r} looks damaged: {lost}read {seconds:.2f} s of sound{of}. "
                      "The rest of the recording is missing from the result.", stacklevel=5)


def _decode(name: str, soundfile_error: Exception) -> tuple[np.ndarray, int]:
    """Decode the first audio track of `name` with PyAV (FFmpeg) at its own
    rate and channels, packet by packet: a packet FFmpeg cannot decode is
    skipped with a warning, as players do; a file with none decodable, or
    without an audio track, is an AudioError."""
    fix = ("Fix: pass a {} file, or convert it first, e.g. `ffmpeg -i INPUT -ac 1 -ar 16000 "
           "OUTPUT.wav`.").format(_FILE_FORMATS)
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        raise AudioError(f"Could not read {name!r} as audio ({soundfile_error}), and PyAV, "
                         f"which reads more formats, is not installed. Fix: pip install av. "
                         f"{fix}") from None
    chunks: list[np.ndarray] = []
    rate, skipped, declared = 0, 0, None
    try:
        with av.open(name, metadata_errors="ignore") as container:
            if container.duration:
                declared = container.duration / av.time_base
            if not container.streams.audio:
                kinds = sorted({s.type for s in container.streams}) or ["no streams"]
                raise AudioError(f"Could not read {name!r} as audio: it has no audio track "
                                 f"(it has: {', '.join(kinds)}). {fix}")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp")  # float planar, own layout and rate
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    skipped += 1
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        rate = out.sample_rate
                        chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except AudioError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as error:
        raise AudioError(f"Could not read {name!r} as audio ({error}). {fix}") from None
    if not chunks or not rate:
        raise AudioError(f"Could not read {name!r} as audio: its audio track has no "
                         f"decodable sound ({skipped} broken packets). {fix}")
    channels = min(c.shape[0] for c in chunks)  # (a layout change keeps the common ones)
    samples = np.concatenate([c[:channels] for c in chunks], axis=1).T
    _warn_if_short(name, len(samples) / rate, declared, skipped)
    return np.ascontiguousarray(samples, dtype=np.float32), int(rate)


def resample(
    samples: np.ndarray, orig_rate: int, target_rate: int = SAMPLING_RATE
) -> np.ndarray:
    """Resample along the first axis with a polyphase filter (`scipy.signal.resample_poly`).

    The output has `ceil(len(samples) * target_rate / orig_rate)` samples; the
    rate ratio is reduced by its greatest common divisor first, so 44.1 kHz to
    16 kHz runs as up 160 / down 441.

    Args:
        samples: float samples, shape (samples,) or (samples, channels).
        orig_rate: the rate of `samples`, in Hz.
        target_rate: the rate wanted, in Hz.

    Returns:
        float32 samples at `target_rate` (the input itself, as float32, when
        the rates are equal).

    Example:

    >>> import numpy as np
    >>> resample(np.zeros(44100, np.float32), 44100, 16000).shape
    (16000,)
    """
    orig_rate = _check_rate(orig_rate, "orig_rate")
    target_rate = _check_rate(target_rate, "target_rate")
    samples = np.asarray(samples)
    if orig_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    divisor = math.gcd(orig_rate, target_rate)
    up, down = target_rate // divisor, orig_rate // divisor
    out = resample_poly(samples, up, down, axis=0)
    return np.asarray(out, dtype=np.float32)


def load_audio(
    audio: str | os.PathLike | np.ndarray,
    sampling_rate: int | None = None,
    target_rate: int = SAMPLING_RATE,
) -> np.ndarray:
    """Load audio as float32 mono samples at `target_rate`.

    Args:
        audio: a path to an audio file: wav, flac, ogg, mp3, m4a/aac, opus,
            webm, or a video whose first audio track is read (its own rate is used;
            `sampling_rate` is ignored), or an array of samples (a numpy
            array, list, or any object with `__array__`, such as a torch or
            jax array on the CPU). Arrays may be 1-D (samples,) or 2-D
            (samples, channels); a 2-D array whose first axis has at most 8
            entries and is shorter than the second is read as
            (channels, samples). int16 and int32 PCM are scaled by 2**15 and
            2**31, uint8 PCM is centred at 128; float samples are kept as
            they are. Channels are averaged into one.
        sampling_rate: the rate of an array input, in Hz (required for arrays).
        target_rate: the rate of the returned samples, in Hz.

    Returns:
        A float32 array of shape (samples,) at `target_rate`.

    Raises:
        AudioError: the file is missing or is not audio, the array has no
            `sampling_rate`, the wrong number of dimensions, no samples, or
            NaN / infinite samples, or a rate is not a positive integer.

    Example:

    >>> import numpy as np
    >>> stereo = np.full((44100, 2), 16384, dtype=np.int16)  # 1 s at 44.1 kHz
    >>> samples = load_audio(stereo, sampling_rate=44100)
    >>> samples.shape, samples.dtype, round(float(samples[8000]), 3)
    ((16000,), dtype('float32'), 0.5)
    """
    target_rate = _check_rate(target_rate, "target_rate")
    if isinstance(audio, (str, os.PathLike)):
        samples, rate = _read_file(audio)
        where, from_file = f"{os.fspath(audio)!r}", True
    elif isinstance(audio, bytes):
        raise AudioError(
            "Audio given as bytes is not supported. Fix: write it to a file and pass the "
            "path, or decode it into a numpy array first."
        )
    else:
        if sampling_rate is None:
            raise AudioError(
                "An audio array needs its sampling rate. Fix: pass sampling_rate=..., e.g. "
                "load_audio(samples, sampling_rate=16000)."
            )
        rate = _check_rate(sampling_rate, "sampling_rate")
        try:
            samples = np.asarray(audio)
        except (TypeError, ValueError) as error:
            raise AudioError(
                f"Could not turn the audio input ({type(audio).__name__}) into an array "
                f"({error}). Fix: pass a file path or a numpy array of samples."
            ) from error
        if samples.ndim == 0 or samples.ndim > 2:
            raise AudioError(
                f"Audio must be a 1-D array of samples or a 2-D (samples, channels) array, "
                f"got shape {samples.shape}. Fix: pass one clip at a time (a batch is a list "
                "of clips)."
            )
        samples = _to_float(samples)
        where, from_file = "the audio array", False
    if samples.size == 0:
        raise AudioError(
            f"{where} is empty (shape {samples.shape}, no samples). Fix: pass audio that "
            "holds at least one sample."
        )
    mono = _to_mono(samples, guess_layout=not from_file)
    finite = np.isfinite(mono)
    if not finite.all():
        bad = int(np.size(finite) - np.count_nonzero(finite))
        first = int(np.argmin(finite))
        raise AudioError(
            f"{where} holds {bad} NaN or infinite sample(s) (the first at index {first}). "
            "Fix: clean the signal first, e.g. np.nan_to_num(samples, nan=0.0, posinf=1.0, "
            "neginf=-1.0)."
        )
    return resample(mono, rate, target_rate)
