"""Text model families (currently BERT)."""

from zoo.nlp.bert import (
    BertBackbone,
    BertMaskedLM,
    BertMaskedLMPreprocessor,
    BertPreprocessor,
    BertTextClassifier,
    BertTextEmbedder,
    BertTokenizer,
)

__all__ = [
    "BertBackbone", "BertMaskedLM", "BertMaskedLMPreprocessor", "BertPreprocessor",
    "BertTextClassifier", "BertTextEmbedder", "BertTokenizer",
]
