"""`TextEmbedder`: sentence embeddings from a backbone's token states."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from zoo.core.backbone import Backbone
from zoo.core.errors import InputError
from zoo.core.preprocessor import Preprocessor
from zoo.core.task import Task
from zoo.layers.pooling import MaskedPooling


class TextEmbedder(Task):
    """Base class for sentence embedders (as sentence-transformers builds them).

    Token states are pooled over real tokens (mean by default, or the first
    token with `pooling="cls"`) and L2-normalised, so the dot product of two
    embeddings is their cosine similarity.

    Args:
        backbone: the family backbone (must output `sequence_output`).
        preprocessor: turns raw strings into backbone inputs.
        pooling: `"mean"` (masked mean over real tokens) or `"cls"`.
        normalize: L2-normalise the embeddings.
    """

    export_names = ("embedder", "embeddings")

    def __init__(
        self,
        backbone: Backbone,
        preprocessor: Preprocessor | None = None,
        pooling: str = "mean",
        normalize: bool = True,
        **kwargs: Any,
    ) -> None:
        pooler = MaskedPooling(mode=pooling, dtype=backbone.dtype_policy, name="pooler")
        normalizer = (
            keras.layers.UnitNormalization(axis=-1, dtype=backbone.dtype_policy,
                                           name="normalizer")
            if normalize else None
        )
        inputs = backbone.input
        x = pooler(backbone(inputs)["sequence_output"], inputs["padding_mask"])
        if normalizer is not None:
            x = normalizer(x)
        super().__init__(inputs=inputs, outputs=x, **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.pooler = pooler
        self.normalizer = normalizer
        self.pooling = pooling
        self.normalize = normalize

    def embed(self, texts: str | list[str], batch_size: int = 32) -> np.ndarray:
        """Embed raw strings; returns float32 numpy of shape `(n, hidden_dim)`.

        Example:

        >>> from zoo.models import BertTextEmbedder
        >>> embedder = BertTextEmbedder.from_preset("all_minilm_l6_v2")  # doctest: +SKIP
        >>> embedder.embed(["a cat", "a dog"]).shape  # doctest: +SKIP
        (2, 384)
        """
        if isinstance(texts, str):
            texts = [texts]
        if self.preprocessor is None:
            raise InputError(
                "This embedder has no preprocessor, so it cannot embed raw strings. "
                "Fix: load it with from_preset(), or pass preprocessed arrays to predict()."
            )
        return np.asarray(self.predict(texts, batch_size=batch_size), dtype="float32")

    def get_config(self) -> dict:
        return {**super().get_config(), "pooling": self.pooling, "normalize": self.normalize}
