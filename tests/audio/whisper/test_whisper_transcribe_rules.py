"""The window loop's decisions (fallback, silence, segments), driven by a
scripted decoder so each rule is exercised exactly."""

import numpy as np

from zoo.audio.whisper.whisper_decoding import DecodingResult
from zoo.audio.whisper.whisper_transcribe import (
    TranscribeOptions,
    compression_ratio,
    decode_with_fallback,
    split_segments,
)

TS = 100  # timestamp_begin of the scripted vocabulary


class ScriptedDecoder:
    """Returns one scripted (tokens, avg_logprob, no_speech) per temperature."""

    def __init__(self, script):
        self.script = script
        self.temperatures = []

    def decode(self, cross, prompts, sot_index, options, seed=0):
        self.temperatures.append(options.temperature)
        tokens, avg, no_speech = self.script[len(self.temperatures) - 1]
        return DecodingResult([tokens], np.array([avg * (len(tokens) + 1)]),
                              np.array([no_speech]))


def text(tokens):
    return " ".join(f"w{t}" for t in tokens if t < TS)


def test_low_probability_falls_back_to_the_next_temperature():
    decoder = ScriptedDecoder([([1, 2], -2.0, 0.1), ([3, 4], -0.5, 0.1)])
    result, avg, temperature = decode_with_fallback(decoder, None, [0], 0,
                                                    TranscribeOptions(), text)
    assert decoder.temperatures == [0.0, 0.2]
    assert result.tokens[0] == [3, 4] and temperature == 0.2 and avg == -0.5


def test_repetitive_text_falls_back_and_the_best_passing_result_wins():
    repetitive = [7] * 60
    assert compression_ratio(text(repetitive)) > 2.4
    script = [(repetitive, -0.1, 0.0)] + [([5], -1.5, 0.0)] * 5
    decoder = ScriptedDecoder(script)
    result, _, temperature = decode_with_fallback(decoder, None, [0], 0,
                                                  TranscribeOptions(), text)
    assert len(decoder.temperatures) == 6  # every temperature failed
    assert result.tokens[0] == [5] and temperature == 1.0  # the compressible one


def test_silence_stops_the_fallback():
    decoder = ScriptedDecoder([([1], -3.0, 0.9)])
    _, _, temperature = decode_with_fallback(decoder, None, [0], 0, TranscribeOptions(), text)
    assert decoder.temperatures == [0.0] and temperature == 0.0


def test_split_segments_at_timestamp_pairs():
    # <0.00> a b <1.00><1.00> c <2.00>: two segments, a lone final timestamp.
    tokens = [TS, 1, 2, TS + 50, TS + 50, 3, TS + 100]
    segments, seek, single = split_segments(tokens, TS, 10.0, 3000, 1000)
    assert [(s["start"], s["end"]) for s in segments] == [(10.0, 11.0), (11.0, 12.0)]
    assert single and seek == 4000  # the whole window was consumed
    # Unfinished last segment: seek to the last complete timestamp.
    segments, seek, single = split_segments(tokens[:-1], TS, 10.0, 3000, 1000)
    assert not single and len(segments) == 1 and seek == 1000 + 50 * 2
