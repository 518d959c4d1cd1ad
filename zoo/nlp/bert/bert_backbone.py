"""BERT backbone: embeddings, a stack of post-LN encoder blocks, a tanh pooler."""

from __future__ import annotations

from typing import Any

import keras

from zoo import layout

from zoo.core.backbone import Backbone
from zoo.layers.embeddings import PositionEmbedding, TokenEmbedding
from zoo.layers.transformer_encoder import TransformerEncoderLayer


@keras.saving.register_keras_serializable(package="zoo")
class BertBackbone(Backbone):
    """BERT encoder (Devlin et al., 2019), as transformers' `BertModel` computes it.

    Inputs (a dict of int arrays, `(batch, length)`): `token_ids`,
    `segment_ids`, `padding_mask` (1 on real tokens). Outputs a dict:
    `sequence_output` `(batch, length, hidden_dim)` and `pooled_output`
    `(batch, hidden_dim)` (tanh dense over the first token).

    Args:
        vocabulary_size: number of token ids.
        num_layers: number of encoder blocks.
        num_heads: attention heads per block.
        hidden_dim: model width.
        intermediate_dim: MLP width.
        dropout: dropout rate (embeddings, attention, block outputs).
        max_sequence_length: number of learned positions.
        num_segments: number of segment (token type) ids.
        layer_norm_epsilon: epsilon of every layer norm.
        activation: MLP activation (`"gelu"`: exact erf GELU).
        remove_padding: run each encoder block on the real tokens only, so
            padding costs no matrix products (TensorFlow graphs and PyTorch;
            JAX's compiled shapes cannot depend on the mask, so it keeps the
            padded layout). `sequence_output` is then zero at padded
            positions; real positions are unchanged.
        dtype: dtype or dtype policy (e.g. `"bfloat16"`, `"mixed_bfloat16"`).

    Example:

    >>> import numpy as np
    >>> from zoo.models import BertBackbone
    >>> backbone = BertBackbone(vocabulary_size=100, num_layers=2, num_heads=2,
    ...                         hidden_dim=8, intermediate_dim=16)
    >>> ones = np.ones((1, 5), "int32")
    >>> out = backbone({"token_ids": ones, "segment_ids": 0 * ones, "padding_mask": ones})
    >>> tuple(out["sequence_output"].shape), tuple(out["pooled_output"].shape)
    ((1, 5, 8), (1, 8))
    """

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        dropout: float = 0.1,
        max_sequence_length: int = 512,
        num_segments: int = 2,
        layer_norm_epsilon: float = 1e-12,
        activation: str = "gelu",
        remove_padding: bool = True,
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        policy = keras.dtype_policies.get(dtype) if dtype is not None else None

        def layer_kwargs(name: str) -> dict:
            return {"dtype": policy, "name": name}

        # === Layers ===
        token_embedding = TokenEmbedding(
            vocabulary_size, hidden_dim, embeddings_initializer=init,
            **layer_kwargs("token_embedding"))
        position_embedding = PositionEmbedding(
            max_sequence_length, hidden_dim, initializer=init,
            **layer_kwargs("position_embedding"))
        segment_embedding = keras.layers.Embedding(
            num_segments, hidden_dim, embeddings_initializer=init,
            **layer_kwargs("segment_embedding"))
        embeddings_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, **layer_kwargs("embeddings_layer_norm"))
        embeddings_dropout = keras.layers.Dropout(
            dropout, **layer_kwargs("embeddings_dropout"))
        transformer_layers = [
            TransformerEncoderLayer(
                hidden_dim, num_heads, intermediate_dim, activation=activation,
                dropout=dropout, attention_dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon, normalize_first=False,
                remove_padding=remove_padding,
                kernel_initializer=keras.initializers.serialize(init),
                **layer_kwargs(f"transformer_layer_{i}"),
            )
            for i in range(num_layers)
        ]
        pooled_dense = keras.layers.Dense(
            hidden_dim, activation="tanh", kernel_initializer=init,
            **layer_kwargs("pooled_dense"))

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        segment_ids = keras.Input(shape=(None,), dtype="int32", name="segment_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = token_embedding(token_ids)
        x = x + position_embedding(x) + segment_embedding(segment_ids)
        x = embeddings_dropout(embeddings_layer_norm(x))
        for layer in transformer_layers:
            x = layer(x, padding_mask=padding_mask)
        pooled = pooled_dense(x[:, 0, :])
        super().__init__(
            inputs={"token_ids": token_ids, "segment_ids": segment_ids,
                    "padding_mask": padding_mask},
            outputs={"sequence_output": x, "pooled_output": pooled},
            dtype=policy,
            **kwargs,
        )

        # === Layers, reachable by name (converters, layout maps) ===
        self.token_embedding = token_embedding
        self.position_embedding = position_embedding
        self.segment_embedding = segment_embedding
        self.embeddings_layer_norm = embeddings_layer_norm
        self.transformer_layers = transformer_layers
        self.pooled_dense = pooled_dense

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.remove_padding = remove_padding

    @classmethod
    def layout_rules(cls) -> list[layout.ShardRule]:
        """Transformer blocks split Megatron-style; token and position
        embeddings by hidden columns (BERT's 30522-word vocabulary divides
        no even mesh axis); the pooler column-parallel."""
        return [
            *layout.transformer_block_rules(),
            layout.embedding("token_embedding", "hidden"),
            layout.embedding("position_embedding", "hidden"),
            layout.column_parallel("pooled_dense"),
        ]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "max_sequence_length": self.max_sequence_length,
            "num_segments": self.num_segments,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation": self.activation,
            "remove_padding": self.remove_padding,
        }
