"""The flat public namespace: every public zoo class, like `keras_hub.models`.

Example:

>>> from zoo.models import Backbone, BertBackbone
>>> issubclass(BertBackbone, Backbone)
True
"""

from zoo.audio.whisper import (
    WhisperAudioConverter,
    WhisperAudioToText,
    WhisperAudioToTextPreprocessor,
    WhisperBackbone,
    WhisperTokenizer,
)
from zoo.core.backbone import Backbone
from zoo.core.causal_lm import CausalLM
from zoo.core.masked_lm import MaskedLM
from zoo.core.preprocessor import Preprocessor
from zoo.core.task import Task
from zoo.core.text_classifier import TextClassifier
from zoo.core.text_embedder import TextEmbedder
from zoo.core.tokenizer import Tokenizer
from zoo.nlp.bert import (
    BertBackbone,
    BertMaskedLM,
    BertMaskedLMPreprocessor,
    BertPreprocessor,
    BertTextClassifier,
    BertTextEmbedder,
    BertTokenizer,
)
from zoo.nlp.opt import OPTBackbone, OPTCausalLM, OPTCausalLMPreprocessor, OPTTokenizer

__all__ = [
    "Backbone", "CausalLM", "MaskedLM", "Preprocessor", "Task", "TextClassifier", "TextEmbedder",
    "Tokenizer",
    "BertBackbone", "BertMaskedLM", "BertMaskedLMPreprocessor", "BertPreprocessor",
    "BertTextClassifier", "BertTextEmbedder", "BertTokenizer",
    "OPTBackbone", "OPTCausalLM", "OPTCausalLMPreprocessor", "OPTTokenizer",
    "WhisperAudioConverter", "WhisperAudioToText", "WhisperAudioToTextPreprocessor",
    "WhisperBackbone", "WhisperTokenizer",
]
