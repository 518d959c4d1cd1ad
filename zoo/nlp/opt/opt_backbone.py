"""OPT backbone: token + learned position embeddings and causal decoder blocks."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from zoo import layout
from zoo.core.backbone import Backbone
from zoo.layers.embeddings import TokenEmbedding
from zoo.layers.transformer_decoder import TransformerDecoderLayer
from zoo.layout.activations import CACHE_AXES, HIDDEN_AXES, shard_activation

#: OPT's position table starts with 2 unused rows (fairseq's padding offset).
POSITION_OFFSET = 2


def position_ids(padding_mask: Any) -> Any:
    """OPT positions: 0, 1, ... over real tokens only (left padding aware), offset by 2."""
    mask = ops.cast(padding_mask, "int32")
    return ops.maximum(ops.cumsum(mask, axis=1) * mask - 1, 0) + POSITION_OFFSET


@keras.saving.register_keras_serializable(package="zoo")
class OPTBackbone(Backbone):
    """OPT decoder (Zhang et al., 2022), as transformers' `OPTModel` computes it.

    Inputs: `token_ids` and `padding_mask` (1 on real tokens), `(batch,
    length)`; left or right padding both work. Output: `sequence_output`
    `(batch, length, embedding_dim)`, the hidden states after the final layer
    norm and the output projection, ready for the tied LM head.

    Args:
        vocabulary_size: number of token ids.
        num_layers: number of decoder blocks.
        num_heads: attention heads per block.
        hidden_dim: model width.
        intermediate_dim: MLP width.
        max_sequence_length: number of learned positions.
        embedding_dim: token embedding width; when it differs from
            `hidden_dim`, `project_in`/`project_out` map between them (opt-350m).
        normalize_first: pre-layer-norm blocks (`do_layer_norm_before`).
        final_layer_norm: layer norm after the last block (pre-LN models).
        dropout: dropout rate.
        activation: MLP activation.
        layer_norm_epsilon: epsilon of every layer norm.
        use_bias: whether attention projections have biases.
        dtype: dtype or dtype policy.

    Example:

    >>> import numpy as np
    >>> from zoo.models import OPTBackbone
    >>> backbone = OPTBackbone(vocabulary_size=50, num_layers=2, num_heads=2,
    ...                        hidden_dim=8, intermediate_dim=16, max_sequence_length=32)
    >>> ids = np.array([[2, 7, 9]], "int32")
    >>> tuple(backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)}).shape)
    (1, 3, 8)
    """

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        max_sequence_length: int = 2048,
        embedding_dim: int | None = None,
        normalize_first: bool = True,
        final_layer_norm: bool = True,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_epsilon: float = 1e-5,
        use_bias: bool = True,
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        embedding_dim = embedding_dim or hidden_dim
        init = keras.initializers.RandomNormal(stddev=0.02)
        policy = keras.dtype_policies.get(dtype) if dtype is not None else None

        def named(name: str) -> dict:
            return {"dtype": policy, "name": name}

        # === Layers ===
        token_embedding = TokenEmbedding(
            vocabulary_size, embedding_dim, embeddings_initializer=init,
            **named("token_embedding"))
        position_embedding = keras.layers.Embedding(
            max_sequence_length + POSITION_OFFSET, hidden_dim, embeddings_initializer=init,
            **named("position_embedding"))
        project_in = project_out = None
        if embedding_dim != hidden_dim:
            project_in = keras.layers.Dense(hidden_dim, use_bias=False,
                                            kernel_initializer=init, **named("project_in"))
            project_out = keras.layers.Dense(embedding_dim, use_bias=False,
                                             kernel_initializer=init, **named("project_out"))
        transformer_layers = [
            TransformerDecoderLayer(
                hidden_dim, num_heads, intermediate_dim, activation=activation,
                dropout=dropout, attention_dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon, normalize_first=normalize_first,
                kernel_initializer=keras.initializers.serialize(init), use_bias=use_bias,
                **named(f"transformer_layer_{i}"),
            )
            for i in range(num_layers)
        ]
        output_layer_norm = (
            keras.layers.LayerNormalization(epsilon=layer_norm_epsilon,
                                            **named("output_layer_norm"))
            if final_layer_norm else None
        )
        embeddings_dropout = keras.layers.Dropout(dropout, **named("embeddings_dropout"))

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = token_embedding(token_ids)
        if project_in is not None:
            x = project_in(x)
        x = embeddings_dropout(x + position_embedding(position_ids(padding_mask)))
        for layer in transformer_layers:
            x = layer(x, padding_mask=padding_mask)
        if output_layer_norm is not None:
            x = output_layer_norm(x)
        if project_out is not None:
            x = project_out(x)
        super().__init__(inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                         outputs=x, dtype=policy, **kwargs)

        # === Layers, reachable by name ===
        self.token_embedding = token_embedding
        self.position_embedding = position_embedding
        self.project_in = project_in
        self.project_out = project_out
        self.transformer_layers = transformer_layers
        self.output_layer_norm = output_layer_norm

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.embedding_dim = embedding_dim
        self.normalize_first = normalize_first
        self.final_layer_norm = final_layer_norm
        self.dropout = dropout
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_bias = use_bias

    def cache_shape(self, batch_size: int, max_length: int) -> tuple[int, ...]:
        """Shape of each cached key or value tensor: `(batch, heads, max_length, head_dim)`."""
        head_dim = self.hidden_dim // self.num_heads
        return (batch_size, self.num_heads, max_length, head_dim)

    def init_cache(self, batch_size: int, max_length: int) -> tuple:
        """An empty cache: one `(keys, values)` pair of zeros per layer."""
        shape = self.cache_shape(batch_size, max_length)
        # sharded generation: heads along the model axis, rows along the batch axis
        return tuple(tuple(shard_activation(ops.zeros(shape, self.compute_dtype), CACHE_AXES)
                           for _ in range(2)) for _ in range(self.num_layers))

    def call_with_cache(self, token_ids: Any, padding_mask: Any, cache: Any,
                        cache_update_index: Any) -> tuple[Any, Any]:
        """Run `token_ids` (positions `cache_update_index...`) against a cache.

        Args:
            token_ids: `(batch, length)` new tokens.
            padding_mask: `(batch, max_length)`, the mask of the whole cache.
            cache: from `init_cache`: per layer a `(keys, values)` pair,
                each `(batch, heads, max_length, head_dim)`.
            cache_update_index: position of `token_ids[:, 0]` (int scalar).

        Returns:
            `(sequence_output, updated_cache)`; the cache is an explicit value,
            never hidden state.
        """
        length = ops.shape(token_ids)[1]
        positions = ops.slice(position_ids(padding_mask), (0, cache_update_index),
                              (ops.shape(token_ids)[0], length))
        x = self.token_embedding(token_ids)
        if self.project_in is not None:
            x = self.project_in(x)
        x = shard_activation(x + self.position_embedding(positions), HIDDEN_AXES)
        caches = []
        for i, layer in enumerate(self.transformer_layers):
            x, layer_cache = layer(x, padding_mask=padding_mask, cache=cache[i],
                                   cache_update_index=cache_update_index)
            caches.append(tuple(shard_activation(c, CACHE_AXES) for c in layer_cache))
        if self.output_layer_norm is not None:
            x = self.output_layer_norm(x)
        if self.project_out is not None:
            x = self.project_out(x)
        return x, tuple(caches)

    @classmethod
    def layout_rules(cls) -> list[layout.ShardRule]:
        """Transformer blocks split Megatron-style; the token embedding (and
        the tied LM head with it) by vocabulary rows, positions by hidden
        columns; `project_in`/`project_out` (only when `embedding_dim !=
        hidden_dim`, as in opt-350m) column- and row-parallel."""
        return [
            *layout.transformer_block_rules(),
            layout.embedding("token_embedding", "vocabulary"),
            layout.embedding("position_embedding", "hidden"),
            layout.column_parallel("project_in", optional=True),
            layout.row_parallel("project_out", optional=True),
        ]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "max_sequence_length": self.max_sequence_length,
            "embedding_dim": self.embedding_dim,
            "normalize_first": self.normalize_first,
            "final_layer_norm": self.final_layer_norm,
            "dropout": self.dropout,
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "use_bias": self.use_bias,
        }
