"""BERT masked language model (transformers' `BertForMaskedLM`)."""

from __future__ import annotations

from typing import Any

import keras

from zoo.core.masked_lm import MaskedLM
from zoo.layers.masked_lm_head import MaskedLMHead
from zoo.nlp.bert.bert_backbone import BertBackbone
from zoo.nlp.bert.bert_masked_lm_preprocessor import BertMaskedLMPreprocessor


@keras.saving.register_keras_serializable(package="zoo")
class BertMaskedLM(MaskedLM):
    """Predict masked tokens with BERT; the decoder is tied to the token embedding.

    Args:
        backbone: a `BertBackbone`.
        preprocessor: a `BertMaskedLMPreprocessor`, or None for array inputs.

    Example:

    >>> from zoo.models import BertMaskedLM
    >>> mlm = BertMaskedLM.from_preset("bert_base_en_uncased")  # doctest: +SKIP
    >>> mlm.fill_mask("Paris is the [MASK] of France.")[0][0]  # doctest: +SKIP
    ('capital', 0.99...)
    """

    backbone_cls = BertBackbone
    preprocessor_cls = BertMaskedLMPreprocessor

    def __init__(self, backbone: BertBackbone,
                 preprocessor: BertMaskedLMPreprocessor | None = None, **kwargs: Any) -> None:
        head = MaskedLMHead(
            backbone.token_embedding, activation=backbone.activation,
            layer_norm_epsilon=backbone.layer_norm_epsilon,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=backbone.dtype_policy, name="mlm_head",
        )
        inputs = {**backbone.input,
                  "mask_positions": keras.Input(shape=(None,), dtype="int32",
                                                name="mask_positions")}
        sequence = backbone({k: v for k, v in inputs.items() if k != "mask_positions"})
        outputs = head(sequence["sequence_output"], inputs["mask_positions"])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.mlm_head = head
        self._compile_defaults()
