"""The window loop's decisions (fallback, silence, segments), driven by a
scripted decoder so each rule is exercised exactly. The rules are
faster-whisper's (`generate_with_fallback` and the no-speech check of
`generate_segments`); test_whisper_fallback.py checks them against
faster-whisper's own decisions on real recordings."""

import numpy as np
import pytest
from keras import ops

from zoo.audio.whisper.whisper_decoding import NEG_INF, DecodingResult
from zoo.samplers import CategoricalSampler
from zoo.audio.whisper.whisper_transcribe import (
    Attempt,
    TranscribeOptions,
    best_sample,
    choose_attempt,
    compression_ratio,
    decode_with_fallback,
    needs_fallback,
    skip_as_silence,
    split_segments,
)

TS = 100  # timestamp_begin of the scripted vocabulary
REPETITIVE = [7] * 60


class ScriptedDecoder:
    """Per call (one per temperature), scripted rows `(tokens, sum_logprob)`
    and a no-speech probability; one scripted row answers every prompt."""

    def __init__(self, script):
        self.script = script
        self.calls = []  # (temperature, number of prompts)

    def decode(self, cross, prompts, sot_index, options, seed=0):
        self.calls.append((options.temperature, len(prompts)))
        rows, no_speech = self.script[len(self.calls) - 1]
        rows = rows if len(rows) == len(prompts) else rows[:1] * len(prompts)
        return DecodingResult([list(t) for t, _ in rows], np.array([s for _, s in rows]),
                              np.full(len(rows), no_speech))


def row(tokens, avg):
    """A scripted row with this average log probability (sum over tokens + 1)."""
    return [(tokens, avg * (len(tokens) + 1))]


def text(tokens):
    return " ".join(f"w{t}" for t in tokens if t < TS)


def fallback(script, **options):
    decoder = ScriptedDecoder(script)
    window = decode_with_fallback(decoder, None, [0], 0, TranscribeOptions(**options), text)
    return decoder, window


def test_low_probability_falls_back_to_the_next_temperature():
    decoder, window = fallback([(row([1, 2], -2.0), 0.1), (row([3, 4], -0.5), 0.1)])
    assert decoder.calls == [(0.0, 1), (0.2, 5)]  # greedy once, then best_of samples
    assert window.result.tokens[0] == [3, 4]
    assert window.temperature == 0.2 and window.avg_logprob == pytest.approx(-0.5)
    assert [a.temperature for a in window.attempts] == [0.0, 0.2]


def test_repetitive_text_falls_back_and_the_best_passing_result_wins():
    assert compression_ratio(text(REPETITIVE)) > 2.4
    script = ([(row(REPETITIVE, -0.1), 0.0)] + [(row([5], -1.5), 0.0)] * 3
              + [(row([6], -1.2), 0.0), (row(REPETITIVE, -0.05), 0.0)])
    decoder, window = fallback(script)
    assert len(decoder.calls) == 6  # every temperature failed
    # The most likely among the attempts within the compression threshold
    # (not the more likely repetitive ones); the temperature is the last one.
    assert window.result.tokens[0] == [6] and window.temperature == 1.0
    assert window.avg_logprob == pytest.approx(-1.2)


def test_when_every_attempt_is_repetitive_the_most_likely_wins():
    script = [(row(REPETITIVE, -0.3), 0.0), (row(REPETITIVE, -0.1), 0.0)]
    _, window = fallback(script, temperatures=(0.0, 0.2))
    assert window.avg_logprob == pytest.approx(-0.1) and window.temperature == 0.2


def test_silence_stops_the_fallback():
    decoder, window = fallback([(row([1], -3.0), 0.9)])
    assert decoder.calls == [(0.0, 1)] and window.temperature == 0.0
    assert skip_as_silence(0.9, window.avg_logprob, TranscribeOptions())


def test_an_unlikely_sample_of_a_probably_silent_window_ends_the_fallback():
    # faster-whisper's rule, kept as is: the no-speech probability is the same
    # for every attempt, so once a sample is unlikely the window counts as
    # silent, even when its temperature-0 text was likely but repetitive.
    script = [(row(REPETITIVE, -0.2), 0.67), (row([1, 2], -1.5), 0.67)]
    decoder, window = fallback(script)
    assert len(decoder.calls) == 2 and window.result.tokens[0] == [1, 2]
    assert skip_as_silence(0.67, window.avg_logprob, TranscribeOptions())


def test_sampled_hypotheses_are_ranked_by_ctranslate2s_score():
    # Scores divide by the length without the end token: [1, 2, 3] scores
    # -2.4 / 3 = -0.8 and beats [1] (-1.0 / 1), although [1] has the better
    # average log probability (-0.5 against -0.6); an empty row scores -inf.
    samples = [([1], -1.0), ([1, 2, 3], -2.4), ([], -0.1), ([1], -1.0), ([4], -1.1)]
    assert best_sample(DecodingResult([t for t, _ in samples],
                                      np.array([s for _, s in samples]), np.zeros(5))) == 1
    decoder, window = fallback([(row([1], -2.0), 0.1), (samples, 0.1)])
    assert decoder.calls == [(0.0, 1), (0.2, 5)]
    assert window.result.tokens[0] == [1, 2, 3] and window.avg_logprob == pytest.approx(-0.6)
    _, window = fallback([(row([1], -2.0), 0.1), (samples[:2], 0.1)], best_of=2)
    assert window.result.tokens[0] == [1, 2, 3]


def test_beam_search_only_at_temperature_zero():
    class BeamDecoder(ScriptedDecoder):
        def beam_decode(self, cross, prompt, sot_index, options, beam_size, patience):
            self.calls.append(("beam", beam_size))
            return DecodingResult([[1, 2]], np.array([-6.0]), np.array([0.1]))

    decoder = BeamDecoder([None, (row([3], -0.2), 0.1)])
    window = decode_with_fallback(decoder, None, [0], 0, TranscribeOptions(beam_size=3), text)
    assert decoder.calls == [("beam", 3), (0.2, 5)] and window.result.tokens[0] == [3]


def test_the_decision_rules_at_their_thresholds():
    options = TranscribeOptions()

    def attempt(avg, ratio=1.0, no_speech=0.1):
        return Attempt(0.0, avg, ratio, no_speech)

    assert not needs_fallback(attempt(-1.0), options)  # "below" the threshold is strict
    assert needs_fallback(attempt(-1.01), options)
    assert not needs_fallback(attempt(-0.5, ratio=2.4), options)
    assert needs_fallback(attempt(-0.5, ratio=2.41), options)
    assert not needs_fallback(attempt(-1.5, no_speech=0.61), options)  # silent: stop
    assert needs_fallback(attempt(-1.5, no_speech=0.6), options)
    assert needs_fallback(attempt(-0.5, ratio=3.0, no_speech=0.9), options)  # likely text
    assert not needs_fallback(attempt(-5.0, ratio=9.0), TranscribeOptions(
        compression_ratio_threshold=None, log_prob_threshold=None))
    # The window check: skipped unless the log probability is strictly above.
    assert skip_as_silence(0.61, -1.0, options) and not skip_as_silence(0.61, -0.99, options)
    assert not skip_as_silence(0.6, -3.0, options)
    assert skip_as_silence(0.61, 0.0, TranscribeOptions(log_prob_threshold=None))
    assert not skip_as_silence(0.99, -3.0, TranscribeOptions(no_speech_threshold=None))
    # The kept attempt: the first that passes, else the most likely (first on
    # a tie) within the compression threshold, else the most likely of all.
    tried = [attempt(-0.2, 3.0), attempt(-1.2), attempt(-1.1), attempt(-1.1)]
    assert choose_attempt(tried, options) == 2
    assert choose_attempt(tried + [attempt(-0.9)], options) == 4
    assert choose_attempt([attempt(-0.4, 3.0), attempt(-0.3, 2.5)], options) == 1
    with pytest.raises(ValueError, match="temperatures"):
        fallback([], temperatures=())
    with pytest.raises(ValueError, match="best_of"):
        fallback([], best_of=0)


@pytest.mark.parametrize("uniform, expected", [(2.0**-25, 1), (0.5, 2), (1.0, 2)])
def test_sampling_never_picks_a_forbidden_token(monkeypatch, uniform, expected):
    # Tokens 1 and 2 are allowed (probabilities 0.27 and 0.73), the others
    # are forbidden by the logit rules, including the first and the last.
    logits = np.full((2, 6), NEG_INF, "float32")
    logits[:, 1:3] = [0.0, 1.0]
    monkeypatch.setattr("zoo.samplers.samplers.uniform_noise",
                        lambda seed, step, shape: ops.full(shape, uniform, "float32"))
    picked = ops.convert_to_numpy(CategoricalSampler()(logits, 0, 0))
    assert picked.tolist() == [expected, expected]


def test_gumbel_noise_can_be_infinite():
    # The bug behind issue 19's dropped window: zoo's hash noise once used 24
    # bits, and in float32 its largest value, (2**24 - 0.5) / 2**24, rounds to
    # exactly 1.0, whose Gumbel noise -log(-log(1.0)) is +inf and picks a token
    # whatever its logit, -1e9 (forbidden) included. uniform_noise now uses 23
    # bits (tests/samplers), and CategoricalSampler never picks probability 0.
    assert (np.float32(2**24 - 1) + np.float32(0.5)) / np.float32(2**24) == 1.0


def test_sampling_follows_the_distribution():
    logits = np.full((512, 8), NEG_INF, "float32")
    logits[:, 3:5] = [0.0, np.log(3.0)]  # probabilities 1/4 and 3/4
    picked = np.concatenate([ops.convert_to_numpy(CategoricalSampler()(logits, 3, step))
                             for step in range(4)])
    assert set(picked.tolist()) <= {3, 4}
    assert (picked == 4).mean() == pytest.approx(0.75, abs=0.04)  # about 4 sigma


def test_split_segments_at_timestamp_pairs():
    # <0.00> a b <1.00><1.00> c <2.00>: two segments, a lone final timestamp.
    tokens = [TS, 1, 2, TS + 50, TS + 50, 3, TS + 100]
    segments, seek, single = split_segments(tokens, TS, 10.0, 3000, 1000)
    assert [(s["start"], s["end"]) for s in segments] == [(10.0, 11.0), (11.0, 12.0)]
    assert single and seek == 4000  # the whole window was consumed
    # Unfinished last segment: seek to the last complete timestamp.
    segments, seek, single = split_segments(tokens[:-1], TS, 10.0, 3000, 1000)
    assert not single and len(segments) == 1 and seek == 1000 + 50 * 2
