"""BERT text classifier (transformers' `BertForSequenceClassification`)."""

from __future__ import annotations

import keras

from zoo.core.text_classifier import TextClassifier
from zoo.nlp.bert.bert_backbone import BertBackbone
from zoo.nlp.bert.bert_preprocessor import BertPreprocessor


@keras.saving.register_keras_serializable(package="zoo")
class BertTextClassifier(TextClassifier):
    """Classify text (or sentence pairs) from BERT's pooled `[CLS]` output.

    See `TextClassifier` for arguments.

    Example:

    >>> from zoo.models import BertTextClassifier
    >>> clf = BertTextClassifier.from_preset(  # doctest: +SKIP
    ...     "bert_tiny_en_uncased", num_classes=2)
    >>> clf.fit(["great film", "awful film"], [1, 0], epochs=3)  # doctest: +SKIP
    """

    backbone_cls = BertBackbone
    preprocessor_cls = BertPreprocessor
