"""Language detection and multilingual prompts on a small random multilingual
Whisper made by transformers (no multilingual weights are available offline;
the vocabulary is the multilingual layout rebuilt in test_whisper_tokenizer)."""

import numpy as np
import pytest
import torch
import transformers

from tests.audio.whisper.test_whisper_tokenizer import _multilingual_json
from zoo.audio.whisper.whisper_transcribe import TranscribeOptions
from zoo.models import (
    WhisperAudioConverter,
    WhisperAudioToText,
    WhisperAudioToTextPreprocessor,
    WhisperTokenizer,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilingual")
    tokenizer = WhisperTokenizer.from_huggingface(_multilingual_json(root, v3=False))
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=tokenizer.vocabulary_size(), num_mel_bins=80, encoder_layers=1,
        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, d_model=16,
        encoder_ffn_dim=32, decoder_ffn_dim=32, init_std=0.5,
        decoder_start_token_id=tokenizer.sot, eos_token_id=tokenizer.eot,
        pad_token_id=tokenizer.eot, bos_token_id=tokenizer.eot)
    reference = transformers.WhisperForConditionalGeneration(config).eval()
    reference.save_pretrained(root / "hf")
    model = WhisperAudioToText.from_preset(str(root / "hf"))
    model.preprocessor = WhisperAudioToTextPreprocessor(WhisperAudioConverter(), tokenizer)
    return model, reference, tokenizer


def test_detect_language_equals_reference_probabilities(models, zoo_home):
    model, reference, tokenizer = models
    audio = np.random.default_rng(0).normal(scale=0.1, size=16000).astype("float32")
    code, probs = model.detect_language(audio, sampling_rate=16000)
    features = WhisperAudioConverter()(audio, sampling_rate=16000)
    with torch.no_grad():
        logits = reference(input_features=torch.tensor(features),
                           decoder_input_ids=torch.tensor([[tokenizer.sot]])).logits[0, 0]
    ids = [tokenizer.language_tokens[c] for c in tokenizer.language_codes]
    expected = torch.softmax(logits[ids], dim=-1).numpy()
    ours = np.array([probs[c] for c in tokenizer.language_codes])
    assert np.abs(ours - expected).max() < 1e-4
    assert code == tokenizer.language_codes[int(expected.argmax())]


def test_transcribe_reports_detected_or_given_language(models, zoo_home):
    model, _, tokenizer = models
    audio = np.random.default_rng(1).normal(scale=0.1, size=8000).astype("float32")
    options = TranscribeOptions(temperatures=(0.0,))
    detected, _ = model.detect_language(audio, sampling_rate=16000)
    result = model.transcribe(audio, sampling_rate=16000, options=options)
    assert result["language"] == detected
    given = model.transcribe(audio, sampling_rate=16000, language="de", options=options)
    assert given["language"] == "de"
    with pytest.raises(ValueError, match="language"):
        model.transcribe(audio, sampling_rate=16000, language="xx", options=options)
