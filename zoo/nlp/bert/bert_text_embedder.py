"""BERT sentence embedder (sentence-transformers' mean pooling + normalisation)."""

from __future__ import annotations

import keras

from zoo.core.text_embedder import TextEmbedder
from zoo.nlp.bert.bert_backbone import BertBackbone
from zoo.nlp.bert.bert_preprocessor import BertPreprocessor


@keras.saving.register_keras_serializable(package="zoo")
class BertTextEmbedder(TextEmbedder):
    """Sentence embeddings from a BERT backbone (e.g. all-MiniLM-L6-v2).

    See `TextEmbedder` for arguments.

    Example:

    >>> from zoo.models import BertTextEmbedder
    >>> embedder = BertTextEmbedder.from_preset("all_minilm_l6_v2")  # doctest: +SKIP
    >>> vectors = embedder.embed(["A man is eating.", "Someone eats food."])  # doctest: +SKIP
    >>> float(vectors[0] @ vectors[1]) > 0.5  # doctest: +SKIP
    True
    """

    backbone_cls = BertBackbone
    preprocessor_cls = BertPreprocessor
