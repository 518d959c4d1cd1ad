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
from zoo.core.object_detector import ObjectDetector
from zoo.core.preprocessor import Preprocessor
from zoo.core.task import Task
from zoo.core.text_classifier import TextClassifier
from zoo.core.text_embedder import TextEmbedder
from zoo.core.tokenizer import Tokenizer
from zoo.core.text_to_image import TextToImage
from zoo.cv.yolov8 import (
    YOLOV8Backbone,
    YOLOV8Detector,
    YOLOV8ImageConverter,
    YOLOV8ObjectDetectorPreprocessor,
)
from zoo.diffusion.stable_diffusion import (
    StableDiffusion,
    StableDiffusionBackbone,
    StableDiffusionPreprocessor,
)
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
from zoo.tokenizers.clip import CLIPTokenizer

__all__ = [
    "Backbone", "CausalLM", "MaskedLM", "ObjectDetector", "Preprocessor", "Task",
    "TextClassifier", "TextEmbedder", "TextToImage",
    "Tokenizer", "CLIPTokenizer",
    "BertBackbone", "BertMaskedLM", "BertMaskedLMPreprocessor", "BertPreprocessor",
    "BertTextClassifier", "BertTextEmbedder", "BertTokenizer",
    "OPTBackbone", "OPTCausalLM", "OPTCausalLMPreprocessor", "OPTTokenizer",
    "StableDiffusion", "StableDiffusionBackbone", "StableDiffusionPreprocessor",
    "WhisperAudioConverter", "WhisperAudioToText", "WhisperAudioToTextPreprocessor",
    "WhisperBackbone", "WhisperTokenizer",
    "YOLOV8Backbone", "YOLOV8Detector", "YOLOV8ImageConverter", "YOLOV8ObjectDetectorPreprocessor",
]
