"""Long-form transcription: 30 s windows driven by timestamp tokens.

The loop follows openai-whisper's `transcribe` (and faster-whisper's, whose
transcripts zoo's tests compare against): a window starts at `seek`; its
decoded timestamp pairs split it into segments; the next window starts at
the last complete segment's end (or after the window when the text ended
with a lone timestamp). A window whose text is too repetitive (gzip
compression ratio) or too unlikely (average log probability) is decoded
again at the next temperature, sampling `best_of` hypotheses and keeping
the best scored; a window the model calls silent (no-speech probability)
and that decoded poorly is skipped. Text decoded so far is the prompt of
the next window unless the temperature climbed above 0.5.

Every decision (which attempt is kept, when a window is silent, how
sampled tokens are scored) is faster-whisper's, the reference zoo's tests
compare with: see `needs_fallback`, `skip_as_silence`, `best_sample` and
`decode_with_fallback`.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from zoo.audio.whisper.whisper_decoding import (
    TIME_PRECISION,
    DecodingOptions,
    DecodingResult,
    WhisperDecoder,
)
from zoo.core.errors import InputError

#: mel frames per second (hop of 160 samples at 16 kHz) and per window
FRAMES_PER_SECOND = 100
WINDOW_FRAMES = 3000
#: frames per timestamp step: the encoder halves the frame rate
INPUT_STRIDE = 2


@dataclasses.dataclass(frozen=True)
class TranscribeOptions:
    """Settings of the window loop (defaults: openai-whisper's and faster-whisper's)."""

    # Temperatures tried in turn until a decode passes both thresholds.
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    # Fall back when the gzip compression ratio of the text is above this.
    compression_ratio_threshold: float | None = 2.4
    # Fall back when the average log probability is below this.
    log_prob_threshold: float | None = -1.0
    # A window is silent when its no-speech probability is above this and its
    # average log probability is not above `log_prob_threshold`.
    no_speech_threshold: float | None = 0.6
    # Prompt each window with the text decoded so far.
    condition_on_previous_text: bool = True
    # Stop prompting with earlier text once a window needed this temperature.
    prompt_reset_on_temperature: float = 0.5
    # Latest first timestamp of a window, in seconds.
    max_initial_timestamp: float = 1.0
    # Forbid a blank or the end token as a window's first token.
    suppress_blank: bool = True
    # Decode without timestamp tokens (one segment per window).
    without_timestamps: bool = False
    # Beams of the temperature-0 decode (1: greedy); sampling never uses beams.
    beam_size: int = 1
    # Hypotheses sampled at each temperature above 0; the best scored is kept.
    best_of: int = 5
    # Beam search ends once beam_size * patience candidates have ended.
    patience: float = 1.0
    # Add per-word start/end times (cross-attention alignment; needs the
    # model's alignment heads).
    word_timestamps: bool = False


def compression_ratio(text: str) -> float:
    """Bytes of `text` over bytes of its zlib compression (repetitive text scores high)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One decode of a window at one temperature."""

    # The temperature (0: greedy or beam search).
    temperature: float
    # Summed log probability (end token included) over generated tokens + 1.
    avg_logprob: float
    # `compression_ratio` of the decoded text.
    compression_ratio: float
    # Probability of <|nospeech|> at <|startoftranscript|>.
    no_speech_prob: float


@dataclasses.dataclass(frozen=True)
class WindowDecode:
    """What `decode_with_fallback` kept for one window, and every attempt."""

    # The kept decode (one row).
    result: DecodingResult
    # Its average log probability and compression ratio.
    avg_logprob: float
    compression_ratio: float
    # The last temperature tried (what decides the prompt reset), as in
    # faster-whisper: when every attempt failed, the kept decode may come
    # from a lower one.
    temperature: float
    # Every decode made, in order.
    attempts: tuple[Attempt, ...]


def needs_fallback(attempt: Attempt, options: TranscribeOptions) -> bool:
    """Whether the window must be decoded again at the next temperature.

    faster-whisper's rule (`generate_with_fallback`): a decode fails when its
    text compresses too well or its average log probability is too low, but
    a decode that is both unlikely and probably silence (no-speech probability
    above its threshold) ends the fallback: resampling silence is pointless.
    """
    ratio_limit, logprob_limit = options.compression_ratio_threshold, options.log_prob_threshold
    repetitive = ratio_limit is not None and attempt.compression_ratio > ratio_limit
    unlikely = logprob_limit is not None and attempt.avg_logprob < logprob_limit
    silent = (options.no_speech_threshold is not None
              and attempt.no_speech_prob > options.no_speech_threshold and unlikely)
    return (repetitive or unlikely) and not silent


def skip_as_silence(no_speech_prob: float, avg_logprob: float,
                    options: TranscribeOptions) -> bool:
    """Whether the window loop drops a window as silence.

    faster-whisper's rule (in `generate_segments`, after the fallback): the
    kept decode's no-speech probability is above the threshold, unless its
    average log probability is above `log_prob_threshold` (confident text is
    kept whatever the no-speech probability says). Both numbers are the kept
    decode's; the no-speech probability does not depend on the temperature
    (it is read at <|startoftranscript|>, before any sampling).
    """
    if options.no_speech_threshold is None or no_speech_prob <= options.no_speech_threshold:
        return False
    return not (options.log_prob_threshold is not None
                and avg_logprob > options.log_prob_threshold)


def best_sample(result: DecodingResult) -> int:
    """The row CTranslate2 returns first among sampled hypotheses.

    CTranslate2 sorts hypotheses by their score: the summed log probability
    (end token included) divided by the length without the end token
    (`length_penalty=1`, faster-whisper's default); faster-whisper keeps the
    first. An empty hypothesis scores -inf (CTranslate2 divides by zero).
    """
    scores = [float(s) / len(t) if t else -np.inf
              for s, t in zip(result.sum_logprob, result.tokens)]
    return int(np.argmax(scores))


def choose_attempt(attempts: Sequence[Attempt], options: TranscribeOptions) -> int:
    """Index of the attempt a window keeps, given the attempts made so far.

    faster-whisper's choice: the first attempt that does not `needs_fallback`;
    when every attempt needed it, the most likely one (highest average log
    probability, the first on a tie) among those whose compression ratio was
    within the threshold, or among all of them when none was.
    """
    for i, attempt in enumerate(attempts):
        if not needs_fallback(attempt, options):
            return i
    limit = options.compression_ratio_threshold
    candidates = [i for i, a in enumerate(attempts)
                  if limit is not None and a.compression_ratio <= limit]
    return max(candidates or range(len(attempts)), key=lambda i: attempts[i].avg_logprob)


def _decoding(options: TranscribeOptions, temperature: float) -> DecodingOptions:
    """The decoder's options for one attempt of a window at `temperature`."""
    return DecodingOptions(temperature=temperature, timestamps=not options.without_timestamps,
                           suppress_blank=options.suppress_blank,
                           max_initial_timestamp=options.max_initial_timestamp)


def _one_row(result: DecodingResult, row: int) -> DecodingResult:
    """Row `row` of a batched decode, as a decode of one row."""
    return DecodingResult([result.tokens[row]], result.sum_logprob[row: row + 1],
                          result.no_speech_prob[row: row + 1])


def decode_with_fallback(decoder: WhisperDecoder, cross: Any, prompt: list[int], sot_index: int,
                         options: TranscribeOptions, decode_text: Callable[[list[int]], str],
                         seed: int = 0, first: DecodingResult | None = None) -> WindowDecode:
    """Decode one window, raising the temperature while the result looks wrong.

    The temperature-0 decode is greedy (or beam search); above 0,
    `options.best_of` hypotheses are sampled and the best scored one is the
    attempt (see `best_sample`). Temperatures are tried in turn until an
    attempt does not `needs_fallback`; `choose_attempt` picks the kept one.
    `first`: the first temperature's greedy decode, already made (a batched
    decode of several recordings' windows), used instead of decoding again.
    """
    if not options.temperatures:
        raise InputError("TranscribeOptions.temperatures is empty. Fix: pass at least one "
                         "temperature, e.g. temperatures=(0.0,).")
    if options.best_of < 1:
        raise InputError(f"TranscribeOptions.best_of must be at least 1, got "
                         f"{options.best_of!r}. Fix: pass e.g. best_of=5.")
    results: list[DecodingResult] = []
    attempts: list[Attempt] = []
    for temperature in options.temperatures:
        decoding = _decoding(options, temperature)
        if first is not None and not results:
            result = first
        elif temperature == 0 and options.beam_size > 1:
            result = decoder.beam_decode(cross, prompt, sot_index, decoding,
                                         options.beam_size, options.patience)
        elif temperature == 0:
            result = decoder.decode(cross, [prompt], sot_index, decoding, seed=seed)
        else:
            samples = decoder.decode(cross, [prompt] * options.best_of, sot_index, decoding,
                                     seed=seed)
            result = _one_row(samples, best_sample(samples))
        results.append(result)
        attempts.append(Attempt(temperature, float(result.avg_logprob[0]),
                                compression_ratio(decode_text(result.tokens[0]).strip()),
                                float(result.no_speech_prob[0])))
        if not needs_fallback(attempts[-1], options):
            break
    kept = choose_attempt(attempts, options)
    return WindowDecode(results[kept], attempts[kept].avg_logprob,
                        attempts[kept].compression_ratio, attempts[-1].temperature,
                        tuple(attempts))


@dataclasses.dataclass(frozen=True)
class WindowRecord:
    """One window of the loop, as `transcribe_features` reports it to `on_window`."""

    # First mel frame of the window, and frames of audio in it.
    seek: int
    frames: int
    # The decode kept and every attempt.
    decode: WindowDecode
    # Dropped by the no-speech rule (`skip_as_silence`).
    skipped: bool


def split_segments(tokens: list[int], timestamp_begin: int, time_offset: float,
                   segment_frames: int, seek: int) -> tuple[list[dict], int, bool]:
    """Cut one window's tokens at timestamp pairs; return segments, the next
    seek, and whether the text ended with a lone timestamp.

    Each segment is `{"start", "end", "tokens"}` (tokens keep their timestamps).
    """
    segments = []
    single_ending = (len(tokens) >= 2 and tokens[-2] < timestamp_begin <= tokens[-1])
    pairs = [i for i in range(1, len(tokens))
             if tokens[i] >= timestamp_begin and tokens[i - 1] >= timestamp_begin]
    if pairs:
        cuts = pairs + ([len(tokens)] if single_ending else [])
        last = 0
        for cut in cuts:
            piece = tokens[last:cut]
            segments.append({
                "start": time_offset + (piece[0] - timestamp_begin) * TIME_PRECISION,
                "end": time_offset + (piece[-1] - timestamp_begin) * TIME_PRECISION,
                "tokens": piece,
            })
            last = cut
        if single_ending:
            seek += segment_frames
        else:
            seek += (tokens[last - 1] - timestamp_begin) * INPUT_STRIDE
    else:
        duration = segment_frames / FRAMES_PER_SECOND
        stamps = [t for t in tokens if t >= timestamp_begin]
        if stamps and stamps[-1] != timestamp_begin:
            duration = (stamps[-1] - timestamp_begin) * TIME_PRECISION
        segments.append({"start": time_offset, "end": time_offset + duration, "tokens": tokens})
        seek += segment_frames
    return segments, seek, single_ending


class RecordingLoop:
    """The window loop of one recording, one window at a time, so that
    several recordings can share each encoder call and greedy decode
    (`transcribe_batch`) and still take every decision alone.

    `window()` gives the next window's features; `prompt(cross)` the
    decoder's prompt for it, given its encoded cross keys/values (one row);
    `finish(cross, decode)` takes the window's `WindowDecode`, cuts it into
    segments and moves on. `segments` holds the result once `done`.
    """

    def __init__(self, decoder: WhisperDecoder, mel: np.ndarray, content_frames: int,
                 sot_sequence: Callable[[Any], list[int]], tokenizer: Any,
                 options: TranscribeOptions, initial_prompt: Sequence[int] = (),
                 on_progress: Callable[[int], None] | None = None,
                 on_window: Callable[[WindowRecord], None] | None = None) -> None:
        self.decoder, self.mel, self.content_frames = decoder, mel, content_frames
        self.sot_sequence, self.tokenizer, self.options = sot_sequence, tokenizer, options
        self.on_progress, self.on_window = on_progress, on_window
        self.seek, self.segments, self.all_tokens = 0, [], list(initial_prompt)
        self.last_speech, self.prompt_reset_since = 0.0, 0
        self.max_prompt = decoder.backbone.max_decoder_sequence_length // 2 - 1
        self._start: list[int] = []

    @property
    def done(self) -> bool:
        return self.seek >= self.content_frames

    def window(self) -> np.ndarray:
        """The next window's features, `(num_mels, WINDOW_FRAMES)`, zero-padded."""
        frames = min(WINDOW_FRAMES, self.content_frames - self.seek)
        window = np.zeros((self.mel.shape[0], WINDOW_FRAMES), "float32")
        window[:, :frames] = self.mel[:, self.seek: self.seek + frames]
        return window

    def prompt(self, cross: Any) -> tuple[list[int], int]:
        """The prompt of the next window (earlier text, then the start
        sequence) and the index of its <|startoftranscript|>."""
        options, tokenizer = self.options, self.tokenizer
        previous = (self.all_tokens[self.prompt_reset_since:]
                    if options.condition_on_previous_text else [])
        self._start = start = self.sot_sequence(cross)
        prompt = ([tokenizer.sot_prev] + previous[-self.max_prompt:] if previous else []) + start
        if options.without_timestamps:
            prompt = prompt + [tokenizer.no_timestamps]
        return prompt, len(prompt) - len(start) - (1 if options.without_timestamps else 0)

    def finish(self, cross: Any, window: WindowDecode) -> None:
        """Turn the window's kept decode into segments and move to the next."""
        options, tokenizer = self.options, self.tokenizer
        seek = self.seek
        segment_frames = min(WINDOW_FRAMES, self.content_frames - seek)
        result, avg, temperature = window.result, window.avg_logprob, window.temperature
        no_speech = float(result.no_speech_prob[0])
        time_offset = seek / FRAMES_PER_SECOND
        previous_seek = seek
        skipped = skip_as_silence(no_speech, avg, options)
        if self.on_window is not None:
            self.on_window(WindowRecord(seek, segment_frames, window, skipped))
        if skipped:
            seek += segment_frames  # silence: skip the window
        else:
            pieces, seek, single_ending = split_segments(
                result.tokens[0], tokenizer.timestamp_begin, time_offset, segment_frames, seek)
            if options.word_timestamps:
                self.last_speech = _add_words(self.decoder, cross, tokenizer, self._start,
                                              pieces, segment_frames, time_offset,
                                              self.last_speech)
                ends = [w["end"] for p in pieces for w in p["words"]]
                if not single_ending and ends and ends[-1] > time_offset:
                    seek = round(ends[-1] * FRAMES_PER_SECOND)
            for piece in pieces:
                text = tokenizer.decode(piece["tokens"])
                if piece["start"] == piece["end"] or not text.strip():
                    continue
                self.all_tokens.extend(piece["tokens"])
                self.segments.append({
                    "start": round(piece["start"], 3), "end": round(piece["end"], 3),
                    "text": text, "tokens": piece["tokens"], "avg_logprob": avg,
                    "no_speech_prob": no_speech, "temperature": temperature,
                    "compression_ratio": window.compression_ratio, "seek": previous_seek,
                    **({"words": piece["words"]} if options.word_timestamps else {}),
                })
        if not options.condition_on_previous_text or (
                temperature > options.prompt_reset_on_temperature):
            self.prompt_reset_since = len(self.all_tokens)
        self.seek = seek
        if self.on_progress is not None:
            self.on_progress(min(self.content_frames, seek) - previous_seek)


def transcribe_features(
    decoder: WhisperDecoder,
    mel: np.ndarray,
    content_frames: int,
    sot_sequence: Callable[[Any], list[int]],
    tokenizer: Any,
    options: TranscribeOptions,
    initial_prompt: Sequence[int] = (),
    on_progress: Callable[[int], None] | None = None,
    on_window: Callable[[WindowRecord], None] | None = None,
) -> list[dict]:
    """Transcribe one recording's log-mel `(num_mels, frames)`, window by window.

    Args:
        decoder: the model's compiled decoder.
        mel: features of the whole recording (frames beyond `content_frames`
            are ignored).
        content_frames: frames that hold audio.
        sot_sequence: returns the start-of-transcript ids for a window, given
            its encoded cross keys/values (it may detect the language there).
        tokenizer: the Whisper tokenizer (text and special ids).
        options: loop settings.
        initial_prompt: ids of text that precedes the recording.
        on_progress: called with the frames done after each window.
        on_window: called with each window's `WindowRecord` (its decisions).

    Returns:
        Segments `{"start", "end", "text", "tokens", "avg_logprob",
        "no_speech_prob", "temperature", "compression_ratio", "seek"}` in time
        order (`seek`: the first frame of the segment's window).
    """
    loop = RecordingLoop(decoder, mel, content_frames, sot_sequence, tokenizer, options,
                         initial_prompt, on_progress, on_window)
    return transcribe_batch(decoder, [loop], 1)[0]


def transcribe_batch(decoder: WhisperDecoder, loops: Iterable[RecordingLoop],
                     batch_size: int) -> list[list[dict]]:
    """Run several recordings' window loops together: each round encodes up
    to `batch_size` recordings' next windows in one call and decodes them
    greedily in one batched loop (each row stops at its own end); a window
    that needs a higher temperature, beam search or word timestamps goes on
    alone from there (`decode_with_fallback`). A recording that finishes
    frees its row for the next one waiting. Each recording takes exactly the
    decisions it takes alone; returns each loop's segments.
    """
    waiting, started = iter(loops), []  # (loops are made as rows free up: lazily)
    active: list[RecordingLoop] = []
    while True:
        while len(active) < batch_size:
            loop = next(waiting, None)
            if loop is None:
                break
            started.append(loop)
            if not loop.done:
                active.append(loop)
        if not active:
            break
        cross = decoder.encode(np.stack([loop.window() for loop in active]))
        rows = [cross if len(active) == 1 else _row(cross, i) for i in range(len(active))]
        prompts = [loop.prompt(row) for loop, row in zip(active, rows)]
        first = None
        options = active[0].options
        if options.temperatures and options.temperatures[0] == 0 and options.beam_size == 1:
            first = decoder.decode(cross, [p for p, _ in prompts], [i for _, i in prompts],
                                   _decoding(options, 0.0))
        for i, (loop, row, (prompt, sot)) in enumerate(zip(active, rows, prompts)):
            mine = None if first is None else _one_row(first, i)
            loop.finish(row, decode_with_fallback(decoder, row, prompt, sot, loop.options,
                                                  loop.tokenizer.decode, first=mine))
        active = [loop for loop in active if not loop.done]
    return [loop.segments for loop in started]


def _row(cross: Any, i: int) -> Any:
    """Row `i` of every tensor of an encoder output (a batch of one)."""
    import keras

    return keras.tree.map_structure(lambda c: c[i: i + 1], cross)


def _add_words(decoder: WhisperDecoder, cross: Any, tokenizer: Any, sot_sequence: list[int],
               pieces: list[dict], segment_frames: int, time_offset: float,
               last_speech: float) -> float:
    from zoo.audio.whisper.whisper_alignment import add_word_timestamps, find_alignment

    task = decoder.task
    if not task.alignment_heads:
        raise InputError("word_timestamps=True needs the model's alignment heads, which this "
                         "preset does not list. Fix: convert the model from a source that "
                         "has them (transformers generation_config.json or CTranslate2 "
                         "config.json), or pass alignment_heads= to WhisperAudioToText.")
    text = [t for piece in pieces for t in piece["tokens"] if t < tokenizer.eot]
    alignment = find_alignment(decoder.backbone, task.logits_from_hidden, cross, tokenizer,
                               sot_sequence, text, segment_frames, task.alignment_heads)
    return add_word_timestamps(pieces, alignment, tokenizer.eot, time_offset, last_speech)
