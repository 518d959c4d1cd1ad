"""Audio and transcripts -> Whisper's model inputs (features, decoder tokens, labels)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from zoo.audio.whisper.whisper_audio_converter import WhisperAudioConverter
from zoo.audio.whisper.whisper_tokenizer import WhisperTokenizer
from zoo.core.preprocessor import Preprocessor


@keras.saving.register_keras_serializable(package="zoo")
class WhisperAudioToTextPreprocessor(Preprocessor):
    """Turns audio (and, for training, transcripts) into `WhisperBackbone` inputs.

    Audio is a list of file paths or of 16 kHz sample arrays. Called as
    `preprocessor(audio, transcripts)` inside `fit`, it returns
    `(x, y, sample_weight)`: `x` holds the log-mel features of each clip's
    first 30 s and the decoder tokens `<|startoftranscript|>` (language, task)
    `<|notimestamps|>` + text; `y` is the same sequence shifted by one,
    ending with the end token; `sample_weight` masks padding.

    Args:
        audio_converter: computes log-mel features.
        tokenizer: Whisper's tokenizer.
        sequence_length: decoder tokens per training example (padded or cut).
        language: language code for multilingual models' training prompts.
        task: `"transcribe"` or `"translate"`.
    """

    tokenizer_cls = WhisperTokenizer

    def __init__(self, audio_converter: WhisperAudioConverter | dict | None = None,
                 tokenizer: WhisperTokenizer | None = None, sequence_length: int = 128,
                 language: str | None = None, task: str = "transcribe") -> None:
        super().__init__(tokenizer)
        if isinstance(audio_converter, dict):
            audio_converter = WhisperAudioConverter.from_config(audio_converter)
        self.audio_converter = audio_converter or WhisperAudioConverter()
        self.sequence_length = int(sequence_length)
        self.language = language
        self.task = task

    def __call__(self, x: Any, y: Any = None, sample_weight: Any = None) -> Any:
        features = self.audio_converter(list(x) if isinstance(x, (list, tuple, np.ndarray))
                                        else [x], sampling_rate=self.audio_converter.sampling_rate)
        if y is None:
            return {"encoder_features": features}
        texts = [y] if isinstance(y, str) else [str(t) for t in y]
        prefix = self.tokenizer.sot_sequence(self.language, self.task, timestamps=False)
        length = self.sequence_length + 1
        ids = np.full((len(texts), length), self.tokenizer.eot, "int32")
        weights = np.zeros((len(texts), length), "float32")
        for row, text in enumerate(self.tokenizer.tokenize(texts)):
            seq = (prefix + text + [self.tokenizer.eot])[:length]
            ids[row, : len(seq)] = seq
            weights[row, len(prefix) - 1 : len(seq) - 1] = 1.0  # predict text and end
        inputs = {"encoder_features": features, "decoder_token_ids": ids[:, :-1],
                  "decoder_padding_mask": (weights[:, :-1] > 0).astype("int32")}
        inputs["decoder_padding_mask"][:, : len(prefix)] = 1
        return inputs, ids[:, 1:], weights[:, :-1]

    def get_config(self) -> dict:
        return {
            "audio_converter": self.audio_converter.get_config(),
            "sequence_length": self.sequence_length,
            "language": self.language,
            "task": self.task,
        }
