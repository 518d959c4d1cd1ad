"""Whisper: speech recognition and translation (Radford et al., 2022)."""

import zoo.presets  # noqa: F401  (installs the preset resolver zoo.core's from_preset uses)

from zoo.audio.whisper.whisper_audio_converter import WhisperAudioConverter
from zoo.audio.whisper.whisper_audio_to_text import WhisperAudioToText
from zoo.audio.whisper.whisper_audio_to_text_preprocessor import WhisperAudioToTextPreprocessor
from zoo.audio.whisper.whisper_backbone import WhisperBackbone
from zoo.audio.whisper.whisper_tokenizer import WhisperTokenizer

__all__ = ["WhisperAudioConverter", "WhisperAudioToText", "WhisperAudioToTextPreprocessor",
           "WhisperBackbone", "WhisperTokenizer"]
