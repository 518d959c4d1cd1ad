"""Whisper backbone: a convolutional audio encoder and a cross-attending text decoder."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from zoo import layout
from zoo.core.backbone import Backbone
from zoo.layers import activations
from zoo.layers.embeddings import PositionEmbedding, TokenEmbedding
from zoo.layers.transformer_decoder import TransformerDecoderLayer
from zoo.layers.transformer_encoder import TransformerEncoderLayer
from zoo.layout.activations import CACHE_AXES, HIDDEN_AXES, shard_activation


def decoder_position_ids(padding_mask: Any) -> Any:
    """Positions 0, 1, ... over real tokens only, so a left-padded prompt
    decodes exactly like the same prompt without padding."""
    mask = ops.cast(padding_mask, "int32")
    return ops.maximum(ops.cumsum(mask, axis=1) * mask - 1, 0)


def _encode(conv1: Any, conv2: Any, positions: Any, layers: list, layer_norm: Any,
            features: Any) -> Any:
    x = ops.transpose(features, (0, 2, 1))  # channels last
    # Symmetric padding of 1, as torch's Conv1d(padding=1); Keras' "same"
    # would pad a stride-2 convolution on the right only.
    x = conv1(ops.pad(x, ((0, 0), (1, 1), (0, 0))))
    x = conv2(ops.pad(x, ((0, 0), (1, 1), (0, 0))))
    x = x + ops.cast(positions(x), x.dtype)
    for layer in layers:
        x = layer(x)
    return layer_norm(x)


@keras.saving.register_keras_serializable(package="zoo")
class WhisperBackbone(Backbone):
    """Whisper (Radford et al., 2022), as transformers' `WhisperModel` computes it.

    The encoder reads a log-mel spectrogram through two convolutions (the
    second halves the frame rate) and pre-layer-norm transformer blocks; the
    decoder is a causal transformer whose blocks also attend to the encoder
    output. Keys of every attention have no bias, as in the original.

    Inputs: `encoder_features` `(batch, num_mels, frames)` (what
    `WhisperAudioConverter` returns; 3000 frames = 30 s for real models),
    `decoder_token_ids` and `decoder_padding_mask` `(batch, length)`.
    Outputs: `encoder_sequence_output` `(batch, frames // 2, hidden_dim)` and
    `decoder_sequence_output` `(batch, length, hidden_dim)` (after the final
    layer norms; logits are `decoder_sequence_output @ token_embeddingᵀ`).

    Args:
        vocabulary_size: number of token ids.
        num_encoder_layers: encoder blocks.
        num_decoder_layers: decoder blocks.
        num_heads: attention heads in every block.
        hidden_dim: model width.
        intermediate_dim: MLP width.
        num_mels: mel bins of the input (80; 128 for large-v3).
        max_encoder_sequence_length: encoder positions (1500 = 30 s).
        max_decoder_sequence_length: decoder positions (448).
        dropout: dropout rate (0 in every released model).
        layer_norm_epsilon: epsilon of every layer norm.
        dtype: dtype or dtype policy.

    Example:

    >>> import numpy as np
    >>> from zoo.models import WhisperBackbone
    >>> backbone = WhisperBackbone(vocabulary_size=64, num_encoder_layers=1,
    ...     num_decoder_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
    ...     num_mels=4, max_encoder_sequence_length=10, max_decoder_sequence_length=12)
    >>> out = backbone({"encoder_features": np.zeros((1, 4, 20), "float32"),
    ...                 "decoder_token_ids": np.array([[1, 5, 7]], "int32"),
    ...                 "decoder_padding_mask": np.ones((1, 3), "int32")})
    >>> tuple(out["encoder_sequence_output"].shape), tuple(out["decoder_sequence_output"].shape)
    ((1, 10, 8), (1, 3, 8))
    """

    def __init__(
        self,
        vocabulary_size: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        num_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        num_mels: int = 80,
        max_encoder_sequence_length: int = 1500,
        max_decoder_sequence_length: int = 448,
        dropout: float = 0.0,
        layer_norm_epsilon: float = 1e-5,
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        policy = keras.dtype_policies.get(dtype) if dtype is not None else None

        def named(name: str) -> dict:
            return {"dtype": policy, "name": name}

        def block(name: str, cls: type, **extra: Any) -> Any:
            return cls(hidden_dim, num_heads, intermediate_dim, activation="gelu",
                       dropout=dropout, attention_dropout=dropout,
                       layer_norm_epsilon=layer_norm_epsilon, normalize_first=True,
                       key_bias=False, **extra, **named(name))

        # === Layers ===
        conv1 = keras.layers.Conv1D(hidden_dim, 3, padding="valid", activation=activations.gelu,
                                    **named("encoder_conv1"))
        conv2 = keras.layers.Conv1D(hidden_dim, 3, strides=2, padding="valid",
                                    activation=activations.gelu, **named("encoder_conv2"))
        encoder_positions = PositionEmbedding(max_encoder_sequence_length, hidden_dim,
                                              trainable=False,
                                              **named("encoder_position_embedding"))
        encoder_layers = [block(f"encoder_layer_{i}", TransformerEncoderLayer)
                          for i in range(num_encoder_layers)]
        encoder_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, **named("encoder_layer_norm"))
        token_embedding = TokenEmbedding(
            vocabulary_size, hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            **named("token_embedding"))
        decoder_positions = keras.layers.Embedding(
            max_decoder_sequence_length, hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            **named("decoder_position_embedding"))
        decoder_layers = [block(f"decoder_layer_{i}", TransformerDecoderLayer,
                                cross_attention=True)
                          for i in range(num_decoder_layers)]
        decoder_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, **named("decoder_layer_norm"))

        # === Functional model ===
        features = keras.Input(shape=(num_mels, None), name="encoder_features")
        token_ids = keras.Input(shape=(None,), dtype="int32", name="decoder_token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="decoder_padding_mask")
        encoded = _encode(conv1, conv2, encoder_positions, encoder_layers, encoder_layer_norm,
                          features)
        x = token_embedding(token_ids) + decoder_positions(decoder_position_ids(padding_mask))
        for layer in decoder_layers:
            x = layer(x, padding_mask=padding_mask, encoder_output=encoded)
        x = decoder_layer_norm(x)
        super().__init__(
            inputs={"encoder_features": features, "decoder_token_ids": token_ids,
                    "decoder_padding_mask": padding_mask},
            outputs={"encoder_sequence_output": encoded, "decoder_sequence_output": x},
            dtype=policy, **kwargs)

        # === Layers, reachable by name ===
        self.encoder_conv1, self.encoder_conv2 = conv1, conv2
        self.encoder_position_embedding = encoder_positions
        self.encoder_layers, self.encoder_layer_norm = encoder_layers, encoder_layer_norm
        self.token_embedding = token_embedding
        self.decoder_position_embedding = decoder_positions
        self.decoder_layers, self.decoder_layer_norm = decoder_layers, decoder_layer_norm

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_mels = num_mels
        self.max_encoder_sequence_length = max_encoder_sequence_length
        self.max_decoder_sequence_length = max_decoder_sequence_length
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon

    @property
    def max_sequence_length(self) -> int:
        """Decoder context (tokens), the limit `generate` checks against."""
        return self.max_decoder_sequence_length

    # -- encoder --------------------------------------------------------------
    def encode(self, features: Any) -> Any:
        """Encoder output `(batch, frames // 2, hidden_dim)` of `(batch, num_mels, frames)`."""
        return _encode(self.encoder_conv1, self.encoder_conv2, self.encoder_position_embedding,
                       self.encoder_layers, self.encoder_layer_norm, features)

    # -- decoder --------------------------------------------------------------
    def _embed_tokens(self, token_ids: Any, positions: Any) -> Any:
        return self.token_embedding(token_ids) + self.decoder_position_embedding(positions)

    def cross_key_values(self, encoder_output: Any) -> tuple:
        """Per decoder layer, the cross-attention `(keys, values)` of the
        encoder output, each `(batch, heads, frames, head_dim)`: computed once
        per audio window, then reused by every decoding step."""
        return tuple(layer.cross_attention.project_key_value(encoder_output)
                     for layer in self.decoder_layers)

    def cache_shape(self, batch_size: int, max_length: int) -> tuple[int, ...]:
        """Shape of each cached self-attention key or value tensor."""
        return (batch_size, self.num_heads, max_length, self.hidden_dim // self.num_heads)

    def init_cache(self, batch_size: int, max_length: int) -> tuple:
        """An empty self-attention cache: one `(keys, values)` pair of zeros per layer."""
        shape = self.cache_shape(batch_size, max_length)
        # sharded generation: heads along the model axis, rows along the batch axis
        return tuple(tuple(shard_activation(ops.zeros(shape, self.compute_dtype), CACHE_AXES)
                           for _ in range(2)) for _ in range(self.num_decoder_layers))

    def call_decoder_with_cache(self, token_ids: Any, padding_mask: Any, cache: Any,
                                cross_key_values: Any, cache_update_index: Any) -> tuple:
        """Decode `token_ids` (positions `cache_update_index...`) against caches.

        Args:
            token_ids: `(batch, length)` new tokens.
            padding_mask: `(batch, max_length)`, the mask of the whole cache.
            cache: from `init_cache`.
            cross_key_values: from `cross_key_values(encoder_output)`.
            cache_update_index: position of `token_ids[:, 0]` (int scalar).

        Returns:
            `(decoder_sequence_output, updated_cache)`.
        """
        batch, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        positions = ops.slice(decoder_position_ids(padding_mask), (0, cache_update_index),
                              (batch, length))
        x = shard_activation(self._embed_tokens(token_ids, positions), HIDDEN_AXES)
        caches = []
        for i, layer in enumerate(self.decoder_layers):
            x, layer_cache = layer(x, padding_mask=padding_mask, cache=cache[i],
                                   cache_update_index=cache_update_index,
                                   cross_key_value=cross_key_values[i])
            caches.append(tuple(shard_activation(c, CACHE_AXES) for c in layer_cache))
        return self.decoder_layer_norm(x), tuple(caches)

    # -- sharding -------------------------------------------------------------
    @classmethod
    def layout_rules(cls) -> list[layout.ShardRule]:
        """The shared transformer-block rules on encoder and decoder blocks
        (self- and cross-attention), the token embedding (and the tied head)
        split by vocabulary, position tables by hidden columns, the
        convolutions replicated (small)."""
        return [
            *layout.transformer_block_rules(r"encoder_layer_\d+"),
            *layout.transformer_block_rules(r"decoder_layer_\d+",
                                            ("self_attention", "cross_attention")),
            layout.embedding("token_embedding", "vocabulary"),
            layout.embedding("decoder_position_embedding", "hidden"),
            layout.embedding("encoder_position_embedding", "hidden"),
        ]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "num_encoder_layers": self.num_encoder_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "num_mels": self.num_mels,
            "max_encoder_sequence_length": self.max_encoder_sequence_length,
            "max_decoder_sequence_length": self.max_decoder_sequence_length,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
