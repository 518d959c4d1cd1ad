"""BERT: backbone, tokenizer, preprocessors, classifier, masked LM, embedder.

Classes are imported on first use, so reading the catalog data in
`bert_presets` does not import Keras.
"""

import importlib

import zoo.presets  # noqa: F401  (installs the preset resolver zoo.core's from_preset uses)

_EXPORTS = {
    "BertBackbone": "bert_backbone",
    "BertMaskedLM": "bert_masked_lm",
    "BertMaskedLMPreprocessor": "bert_masked_lm_preprocessor",
    "BertPreprocessor": "bert_preprocessor",
    "BertTextClassifier": "bert_text_classifier",
    "BertTextEmbedder": "bert_text_embedder",
    "BertTokenizer": "bert_tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
