"""`TextClassifier`: a backbone feature, dropout and a dense layer of logits."""

from __future__ import annotations

from typing import Any

import keras

from zoo.core.backbone import Backbone
from zoo.core.errors import InputError
from zoo.core.preprocessor import Preprocessor
from zoo.core.task import Task


class TextClassifier(Task):
    """Base class for text classifiers; families pick the feature to classify.

    By default the head reads the backbone's `pooled_output`. Outputs are
    logits (`activation=None`) unless an activation is given. The model is
    compiled with Adam (5e-5), sparse categorical cross-entropy and accuracy;
    call `compile()` again to change that.

    Args:
        backbone: the family backbone.
        num_classes: number of output classes.
        preprocessor: turns raw strings (or pairs) into backbone inputs;
            `None` means inputs are already preprocessed.
        activation: activation of the output layer (`None`: logits).
        dropout: dropout rate before the output layer.
    """

    export_names = ("classifier", "logits")

    #: the backbone output the head reads
    feature_key: str = "pooled_output"

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        preprocessor: Preprocessor | None = None,
        activation: str | None = None,
        dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise InputError(f"num_classes must be a positive int, got {num_classes!r}. "
                             "Fix: pass e.g. num_classes=2.")
        output_dropout = keras.layers.Dropout(
            dropout, dtype=backbone.dtype_policy, name="output_dropout"
        )
        output_dense = keras.layers.Dense(
            num_classes, activation=activation, dtype=backbone.dtype_policy, name="classifier"
        )
        inputs = backbone.input
        x = backbone(inputs)[self.feature_key]
        outputs = output_dense(output_dropout(x))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout = output_dropout
        self.output_dense = output_dense
        self.num_classes = num_classes
        self.activation = activation
        self.dropout = dropout
        self.compile(
            optimizer=keras.optimizers.Adam(5e-5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=activation is None),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "activation": self.activation,
            "dropout": self.dropout,
        }
