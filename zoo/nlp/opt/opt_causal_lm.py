"""OPT causal language model (transformers' `OPTForCausalLM`)."""

from __future__ import annotations

from typing import Any

import keras

from zoo.core.causal_lm import CausalLM
from zoo.layers.tied_logits import TiedLogits
from zoo.nlp.opt.opt_backbone import OPTBackbone
from zoo.nlp.opt.opt_causal_lm_preprocessor import OPTCausalLMPreprocessor


@keras.saving.register_keras_serializable(package="zoo")
class OPTCausalLM(CausalLM):
    """Next-token logits from an OPT backbone; the LM head is the tied embedding.

    Inputs are the backbone's (`token_ids`, `padding_mask`); the output is
    logits `(batch, length, vocabulary_size)`.

    Args:
        backbone: an `OPTBackbone`.
        preprocessor: turns raw strings into inputs (None: arrays only).

    Example:

    >>> import numpy as np
    >>> from zoo.models import OPTBackbone, OPTCausalLM
    >>> lm = OPTCausalLM(OPTBackbone(vocabulary_size=50, num_layers=1, num_heads=2,
    ...                              hidden_dim=8, intermediate_dim=16))
    >>> ids = np.array([[2, 7, 9]], "int32")
    >>> lm.predict_on_batch({"token_ids": ids, "padding_mask": np.ones_like(ids)}).shape
    (1, 3, 50)
    """

    backbone_cls = OPTBackbone
    preprocessor_cls = OPTCausalLMPreprocessor

    def __init__(self, backbone: OPTBackbone,
                 preprocessor: OPTCausalLMPreprocessor | None = None, **kwargs: Any) -> None:
        head = TiedLogits(backbone.token_embedding, dtype=backbone.dtype_policy, name="lm_head")
        inputs = backbone.input
        outputs = head(backbone(inputs))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.lm_head = head
        self.compile(
            optimizer=keras.optimizers.Adam(2e-5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )

    def logits_from_hidden(self, hidden: Any, head_inputs: tuple = ()) -> Any:
        return self.lm_head(hidden, *head_inputs)

    def generation_head_inputs(self) -> tuple:
        return self.lm_head.inference_weights()
