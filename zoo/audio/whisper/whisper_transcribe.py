"""Long-form transcription: 30 s windows driven by timestamp tokens.

The loop follows openai-whisper's `transcribe` (and faster-whisper's, whose
transcripts zoo's tests compare against): a window starts at `seek`; its
decoded timestamp pairs split it into segments; the next window starts at
the last complete segment's end (or after the window when the text ended
with a lone timestamp). A window whose text is too repetitive (gzip
compression ratio) or too unlikely (average log probability) is decoded
again at the next temperature; a window the model calls silent (no-speech
probability) and that decoded poorly is skipped. Text decoded so far is
the prompt of the next window unless the temperature climbed above 0.5.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from zoo.audio.whisper.whisper_decoding import (
    TIME_PRECISION,
    DecodingOptions,
    DecodingResult,
    WhisperDecoder,
)

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
    # A window is silent when its no-speech probability is above this and it
    # also failed `log_prob_threshold`.
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
    # Beam search ends once beam_size * patience candidates have ended.
    patience: float = 1.0
    # Add per-word start/end times (cross-attention alignment; needs the
    # model's alignment heads).
    word_timestamps: bool = False


def compression_ratio(text: str) -> float:
    """Bytes of `text` over bytes of its zlib compression (repetitive text scores high)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def decode_with_fallback(decoder: WhisperDecoder, cross: Any, prompt: list[int], sot_index: int,
                         options: TranscribeOptions, decode_text: Callable[[list[int]], str],
                         seed: int = 0) -> tuple[DecodingResult, float, float]:
    """Decode one window, raising the temperature while the result looks wrong.

    Returns the result, its average log probability and the temperature used.
    """
    tried: list[tuple[DecodingResult, float, float, float]] = []
    for temperature in options.temperatures:
        decoding = DecodingOptions(
            temperature=temperature, timestamps=not options.without_timestamps,
            suppress_blank=options.suppress_blank,
            max_initial_timestamp=options.max_initial_timestamp)
        if temperature == 0 and options.beam_size > 1:
            result = decoder.beam_decode(cross, prompt, sot_index, decoding,
                                         options.beam_size, options.patience)
        else:
            result = decoder.decode(cross, [prompt], sot_index, decoding, seed=seed)
        avg = float(result.avg_logprob[0])
        ratio = compression_ratio(decode_text(result.tokens[0]).strip())
        tried.append((result, avg, temperature, ratio))
        too_repetitive = (options.compression_ratio_threshold is not None
                          and ratio > options.compression_ratio_threshold)
        too_unlikely = options.log_prob_threshold is not None and avg < options.log_prob_threshold
        silent = (options.no_speech_threshold is not None
                  and result.no_speech_prob[0] > options.no_speech_threshold and too_unlikely)
        if silent or not (too_repetitive or too_unlikely):
            return result, avg, temperature
    passing = [t for t in tried if options.compression_ratio_threshold is None
               or t[3] <= options.compression_ratio_threshold] or tried
    best = max(passing, key=lambda t: t[1])
    return best[0], best[1], options.temperatures[-1]


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


def transcribe_features(
    decoder: WhisperDecoder,
    mel: np.ndarray,
    content_frames: int,
    sot_sequence: Callable[[int | None], list[int]],
    tokenizer: Any,
    options: TranscribeOptions,
    initial_prompt: Sequence[int] = (),
    on_progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Transcribe one recording's log-mel `(num_mels, frames)`, window by window.

    Args:
        decoder: the model's compiled decoder.
        mel: features of the whole recording (frames beyond `content_frames`
            are ignored).
        content_frames: frames that hold audio.
        sot_sequence: returns the start-of-transcript ids for a window, given
            its encoded cross keys/values' language (None: fixed).
        tokenizer: the Whisper tokenizer (text and special ids).
        options: loop settings.
        initial_prompt: ids of text that precedes the recording.
        on_progress: called with the frames done after each window.

    Returns:
        Segments `{"start", "end", "text", "tokens", "avg_logprob",
        "no_speech_prob", "temperature"}` in time order.
    """
    seek, segments, all_tokens, last_speech = 0, [], list(initial_prompt), 0.0
    prompt_reset_since = 0
    max_prompt = decoder.backbone.max_decoder_sequence_length // 2 - 1
    ts_begin = tokenizer.timestamp_begin
    while seek < content_frames:
        segment_frames = min(WINDOW_FRAMES, content_frames - seek)
        window = np.zeros((mel.shape[0], WINDOW_FRAMES), "float32")
        window[:, :segment_frames] = mel[:, seek: seek + segment_frames]
        cross = decoder.encode(window[None])
        previous = all_tokens[prompt_reset_since:] if options.condition_on_previous_text else []
        start = sot_sequence(cross)
        prompt = ([tokenizer.sot_prev] + previous[-max_prompt:] if previous else []) + start
        if options.without_timestamps:
            prompt = prompt + [tokenizer.no_timestamps]
        sot_index = len(prompt) - len(start) - (1 if options.without_timestamps else 0)
        result, avg, temperature = decode_with_fallback(
            decoder, cross, prompt, sot_index, options, tokenizer.decode)
        no_speech = float(result.no_speech_prob[0])
        time_offset = seek / FRAMES_PER_SECOND
        previous_seek = seek
        if (options.no_speech_threshold is not None and no_speech > options.no_speech_threshold
                and not (options.log_prob_threshold is not None
                         and avg > options.log_prob_threshold)):
            seek += segment_frames  # silence: skip the window
        else:
            pieces, seek, single_ending = split_segments(result.tokens[0], ts_begin,
                                                         time_offset, segment_frames, seek)
            if options.word_timestamps:
                last_speech = _add_words(decoder, cross, tokenizer, start, pieces,
                                         segment_frames, time_offset, last_speech)
                ends = [w["end"] for p in pieces for w in p["words"]]
                if not single_ending and ends and ends[-1] > time_offset:
                    seek = round(ends[-1] * FRAMES_PER_SECOND)
            for piece in pieces:
                text = tokenizer.decode(piece["tokens"])
                if piece["start"] == piece["end"] or not text.strip():
                    continue
                all_tokens.extend(piece["tokens"])
                segments.append({
                    "start": round(piece["start"], 3), "end": round(piece["end"], 3),
                    "text": text, "tokens": piece["tokens"], "avg_logprob": avg,
                    "no_speech_prob": no_speech, "temperature": temperature,
                    **({"words": piece["words"]} if options.word_timestamps else {}),
                })
        if not options.condition_on_previous_text or (
                temperature > options.prompt_reset_on_temperature):
            prompt_reset_since = len(all_tokens)
        if on_progress is not None:
            on_progress(min(content_frames, seek) - previous_seek)
    return segments


def _add_words(decoder: WhisperDecoder, cross: Any, tokenizer: Any, sot_sequence: list[int],
               pieces: list[dict], segment_frames: int, time_offset: float,
               last_speech: float) -> float:
    from zoo.audio.whisper.whisper_alignment import add_word_timestamps, find_alignment

    task = decoder.task
    if not task.alignment_heads:
        raise ValueError("word_timestamps=True needs the model's alignment heads, which this "
                         "preset does not list. Fix: convert the model from a source that "
                         "has them (transformers generation_config.json or CTranslate2 "
                         "config.json), or pass alignment_heads= to WhisperAudioToText.")
    text = [t for piece in pieces for t in piece["tokens"] if t < tokenizer.eot]
    alignment = find_alignment(decoder.backbone, task.logits_from_hidden, cross, tokenizer,
                               sot_sequence, text, segment_frames, task.alignment_heads)
    return add_word_timestamps(pieces, alignment, tokenizer.eot, time_offset, last_speech)
