"""Voice activity detection: where a recording has speech, and that speech
packed into chunks of at most 30 s for batched transcription.

The detector is Silero VAD (v6, MIT licence), the ONNX model faster-whisper
ships, run by onnxruntime: per 32 ms frame (512 samples at 16 kHz, with the
64 samples before it as context) a speech probability, through an LSTM whose
state carries across frames. zoo reads the model file from the installed
faster-whisper package (`pip install "zoo[vad]"`), or from `ZOO_VAD_MODEL`.

Everything after the probabilities is zoo's own and plain numpy:
`speech_regions` (hysteresis between two thresholds, short pauses bridged,
over-long regions split at their quietest frame, padding), then
`pack_chunks` (regions concatenated, silence between them dropped, into
chunks that fit one Whisper window) and `ChunkTimes` (chunk time back to
recording time).

Example:

>>> import numpy as np
>>> from zoo.utils.vad import VadOptions, pack_chunks, speech_regions
>>> probs = np.r_[np.zeros(50), np.ones(100), np.zeros(100), np.ones(30)]  # per 32 ms
>>> options = VadOptions(min_silence_s=0.16, speech_pad_s=0.0)
>>> regions = speech_regions(probs, len(probs) * 512, options)
>>> [(round(a / 16000, 2), round(b / 16000, 2)) for a, b in regions]
[(1.6, 4.8), (8.0, 8.96)]
>>> [c.pieces for c in pack_chunks(regions, max_samples=30 * 16000)]
[[(25600, 76800), (128000, 143360)]]
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zoo.core.errors import InputError

SAMPLING_RATE = 16000
FRAME = 512  # samples per probability (32 ms)
CONTEXT = 64  # samples before each frame that the model also sees


class VadError(InputError):
    """The VAD model cannot run here (no onnxruntime, no model file)."""


@dataclasses.dataclass(frozen=True)
class VadOptions:
    """How speech probabilities become speech regions.

    Args:
        threshold: a frame at or above it starts (or continues) speech.
        neg_threshold: below it a frame counts as silence; between the two
            the current state holds. None: `threshold - 0.15`.
        min_silence_s: silence shorter than this inside speech is bridged.
            None: 2 s where the speech stays one piece (`speech_chunks`
            with `max_seconds=None`, Whisper's `vad=True`), 0.16 s where it
            is cut into chunks (`vad="chunks"`), as faster-whisper does.
        min_speech_s: shorter regions are dropped.
        speech_pad_s: seconds of audio kept on each side of a region (half
            the gap when two regions are closer than twice this).
        max_region_s: a region is split (at its quietest frame) so that,
            padded, it fits in this many seconds.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_silence_s: float | None = None
    min_speech_s: float = 0.0
    speech_pad_s: float = 0.4
    max_region_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise InputError(f"VadOptions.threshold must be in (0, 1), got {self.threshold}. "
                             "Fix: pass a probability such as 0.5.")
        low = self.low
        if not 0.0 <= low <= self.threshold:
            raise InputError(f"VadOptions.neg_threshold must be in [0, threshold], got {low}. "
                             "Fix: pass a value below threshold, or None.")
        for name in ("min_silence_s", "min_speech_s", "speech_pad_s"):
            if (getattr(self, name) or 0) < 0:
                raise InputError(f"VadOptions.{name} must be >= 0, got {getattr(self, name)}.")
        if self.max_region_s <= 2 * self.speech_pad_s + FRAME / SAMPLING_RATE:
            raise InputError(f"VadOptions.max_region_s ({self.max_region_s}) must exceed twice "
                             f"speech_pad_s ({self.speech_pad_s}) plus one 32 ms frame.")

    @property
    def low(self) -> float:
        """The silence threshold actually used."""
        if self.neg_threshold is not None:
            return float(self.neg_threshold)
        return max(self.threshold - 0.15, 0.01)


def model_path() -> Path:
    """The Silero VAD ONNX file: `$ZOO_VAD_MODEL`, else the one in the
    installed faster-whisper package (found without importing it)."""
    given = os.environ.get("ZOO_VAD_MODEL")
    if given:
        path = Path(given)
        if not path.is_file():
            raise VadError(f"ZOO_VAD_MODEL={given!r} is not a file. Fix: point it at a "
                           "Silero VAD v6 .onnx file, or unset it to use faster-whisper's.")
        return path
    spec = importlib.util.find_spec("faster_whisper")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidates = sorted(Path(folder, "assets").glob("silero_vad*.onnx"))
        if candidates:
            return candidates[-1]
    raise VadError("vad=True needs the Silero VAD model, which zoo reads from the "
                   "faster-whisper package, and it is not installed. Fix: pip install "
                   "\"zoo[vad]\" (faster-whisper and onnxruntime), or set ZOO_VAD_MODEL to a "
                   "silero_vad .onnx file.")


@functools.lru_cache(maxsize=2)
def _session(path: str):
    try:
        import onnxruntime
    except ImportError:
        raise VadError("vad=True runs the Silero VAD model with onnxruntime, which is not "
                       "installed. Fix: pip install \"zoo[vad]\" (or onnxruntime).") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # an LSTM: serial
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(path, sess_options=options,
                                        providers=["CPUExecutionProvider"])


def speech_probabilities(samples: np.ndarray) -> np.ndarray:
    """Speech probability of each 512-sample frame of 16 kHz mono `samples`
    (the last frame zero-padded), shape `(ceil(len / 512),)`."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    count = -(-len(samples) // FRAME)
    if count == 0:
        return np.zeros(0, np.float32)
    padded = np.zeros(CONTEXT + count * FRAME, np.float32)
    padded[CONTEXT:CONTEXT + len(samples)] = samples
    # row i: the 64 samples before frame i (zeros before the first), then frame i
    starts = np.arange(count) * FRAME
    rows = padded[starts[:, None] + np.arange(CONTEXT + FRAME)]
    session = _session(str(model_path()))
    state = np.zeros((1, 1, 128), np.float32)
    probs, _, _ = session.run(None, {"input": rows, "h": state, "c": state})
    return np.asarray(probs, np.float32).reshape(-1)[:count]


def speech_regions(probs: np.ndarray, num_samples: int,
                   options: VadOptions | None = None) -> list[tuple[int, int]]:
    """Speech regions `(start, end)` in samples from per-frame probabilities.

    A region opens at the first frame at or above `threshold` and closes at
    the first frame below `neg_threshold` that begins a silence at least
    `min_silence_s` long (or at the end). Regions longer than fits
    `max_region_s` once padded are cut at their least speech-like frame,
    again until they fit. Each region is then padded by `speech_pad_s`,
    without overlapping its neighbours or leaving `[0, num_samples]`.
    """
    options = options or VadOptions()
    probs = np.asarray(probs, dtype=np.float32).reshape(-1)
    rate = SAMPLING_RATE / FRAME  # frames per second
    silence_s = 2.0 if options.min_silence_s is None else options.min_silence_s
    min_silence = max(1, int(round(silence_s * rate)))
    regions: list[tuple[int, int]] = []  # in frames
    start, silent_since = None, None
    for i, p in enumerate(probs):
        if start is None:
            if p >= options.threshold:
                start, silent_since = i, None
            continue
        if p >= options.threshold:
            silent_since = None
        elif p < options.low and silent_since is None:
            silent_since = i
        if silent_since is not None and i + 1 - silent_since >= min_silence:
            regions.append((start, silent_since))
            start, silent_since = None, None
    if start is not None:
        regions.append((start, silent_since if silent_since is not None else len(probs)))

    pad = int(round(options.speech_pad_s * SAMPLING_RATE))
    longest = int((options.max_region_s * SAMPLING_RATE - 2 * pad) // FRAME)
    split: list[tuple[int, int]] = []
    for a, b in regions:
        split.extend(_split_long(probs, a, b, longest))
    min_frames = options.min_speech_s * rate
    kept = [(a * FRAME, min(b * FRAME, num_samples)) for a, b in split if b - a >= min_frames]
    kept = [(a, b) for a, b in kept if b > a]

    padded: list[tuple[int, int]] = []
    for i, (a, b) in enumerate(kept):
        low = 0 if i == 0 else kept[i - 1][1]
        high = num_samples if i == len(kept) - 1 else kept[i + 1][0]
        # half of a short gap to each side, so that neighbours never overlap
        left = min(pad, (a - low) // 2) if i else min(pad, a)
        right = min(pad, (high - b) // 2) if i < len(kept) - 1 else min(pad, num_samples - b)
        padded.append((a - left, b + right))
    return padded


def _split_long(probs: np.ndarray, a: int, b: int, longest: int) -> list[tuple[int, int]]:
    """Frames `[a, b)` cut into pieces of at most `longest` frames, each cut
    at the least speech-like frame of the second half of the allowed span."""
    pieces = []
    while b - a > longest:
        window = probs[a + longest // 2: a + longest]
        cut = a + longest // 2 + int(np.argmin(window))  # the first minimum
        pieces.append((a, cut))
        a = cut
    pieces.append((a, b))
    return pieces


@dataclasses.dataclass
class Chunk:
    """Regions of one recording concatenated into one piece of audio.

    `pieces`: `(start, end)` sample ranges of the recording, in order.
    """

    pieces: list[tuple[int, int]]

    @property
    def num_samples(self) -> int:
        return sum(b - a for a, b in self.pieces)

    def audio(self, samples: np.ndarray) -> np.ndarray:
        """The chunk's samples: its pieces of `samples`, joined."""
        return np.concatenate([samples[a:b] for a, b in self.pieces]).astype(np.float32)

    def recording_time(self, t: float, is_end: bool = False) -> float:
        """A time in seconds in the chunk, as a time in the recording. A time
        on the seam of two pieces belongs to the later one, or to the
        earlier one for an end time."""
        sample = t * SAMPLING_RATE
        offset = 0
        for i, (a, b) in enumerate(self.pieces):
            length = b - a
            last = i == len(self.pieces) - 1
            if last or sample < offset + length or (is_end and sample <= offset + length):
                # (Whisper may end its last segment after the chunk's audio)
                return (a + min(max(sample - offset, 0), length)) / SAMPLING_RATE
            offset += length
        return t  # no pieces


def pack_chunks(regions: Sequence[tuple[int, int]], max_samples: int) -> list[Chunk]:
    """Consecutive regions joined into chunks of at most `max_samples`
    (silence between them dropped); a region longer than that is its own
    chunk (`speech_regions` keeps them within `max_region_s`)."""
    chunks: list[Chunk] = []
    for a, b in regions:
        if chunks and chunks[-1].num_samples + (b - a) <= max_samples:
            chunks[-1].pieces.append((a, b))
        else:
            chunks.append(Chunk([(a, b)]))
    return chunks


def speech_chunks(samples: np.ndarray, options: VadOptions | None = None,
                  max_seconds: float | None = 30.0) -> list[Chunk]:
    """The speech of 16 kHz mono `samples` in chunks of at most `max_seconds`
    (None: one chunk of all the speech; no chunks when there is none)."""
    options = options or VadOptions()
    if options.min_silence_s is None and max_seconds is not None:
        options = dataclasses.replace(options, min_silence_s=0.16)
    regions = speech_regions(speech_probabilities(samples), len(samples), options)
    if max_seconds is None:
        return [Chunk(list(regions))] if regions else []
    return pack_chunks(regions, int(max_seconds * SAMPLING_RATE))
