"""Sharding rules: which weights split along the model axis, and how.

One rule describes one kind of layer (a regex over its path) the way
Megatron-style tensor parallelism splits it:

- column-parallel `Dense` (attention query/key/value, the MLP's first
  projection): kernel `(in, out)` split on `out`, bias split with it, so
  each device computes whole heads / a slice of the MLP's hidden units;
- row-parallel `Dense` (attention output, the MLP's second projection):
  kernel split on `in`, bias replicated; XLA adds the one all-reduce;
- embeddings `(vocabulary, hidden)`: split on the vocabulary (the tied LM
  head then produces vocabulary-sharded logits) or on the hidden axis
  (when the vocabulary size does not divide the mesh, as BERT's 30522).

`transformer_block_rules` is the one rule set every transformer family uses
(OPT, BERT, Whisper's encoder and decoder); a family adds its embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

#: placeholder for the mesh axis that splits weights (the `model_dim` name)
MODEL = "model"


@dataclass(frozen=True)
class ShardRule:
    """How to split one kind of layer's weights along the model axis."""

    layer: str  # regex over the layer's path, e.g. r"transformer_layer_\d+/intermediate_dense"
    weight: str  # the main weight's name: "kernel" or "embeddings"
    weight_axes: tuple[str | None, ...]  # one entry per weight dimension; MODEL or None
    bias_axes: tuple[str | None, ...] | None = None  # the bias' axes, if the layer has one
    optional: bool = False  # the layer exists only in some configurations
    splits_heads: bool = False  # the split runs over attention heads: whole heads per device

    def weight_key(self) -> str:
        """The `LayoutMap` key (a full-match regex over variable paths)."""
        return rf"(?:.*/)?{self.layer}/{self.weight}"

    def bias_key(self) -> str:
        return rf"(?:.*/)?{self.layer}/bias"


def column_parallel(layer: str, splits_heads: bool = False,
                    optional: bool = False) -> ShardRule:
    """A Dense layer whose output units are split across the model axis."""
    return ShardRule(layer, "kernel", (None, MODEL), (MODEL,), optional, splits_heads)


def row_parallel(layer: str, splits_heads: bool = False, optional: bool = False) -> ShardRule:
    """A Dense layer whose input units are split (its bias is replicated)."""
    return ShardRule(layer, "kernel", (MODEL, None), (None,), optional, splits_heads)


def embedding(layer: str, split: str = "vocabulary") -> ShardRule:
    """An Embedding split by rows (`"vocabulary"`) or columns (`"hidden"`)."""
    if split not in ("vocabulary", "hidden"):
        raise ValueError(f"split must be 'vocabulary' or 'hidden', got {split!r}.")
    axes = (MODEL, None) if split == "vocabulary" else (None, MODEL)
    return ShardRule(layer, "embeddings", axes)


def transformer_block_rules(block: str = r"transformer_layer_\d+",
                            attention: tuple[str, ...] = ("self_attention",)) -> list[ShardRule]:
    """The rules for zoo's transformer blocks (`zoo/layers/transformer_*`).

    Args:
        block: regex of the blocks' layer names.
        attention: names of the attention sublayers in a block
            (`"self_attention"`, plus `"cross_attention"` in a decoder that
            attends to an encoder).
    """
    prefix = f"{block}/(?:{'|'.join(attention)})"
    return [
        column_parallel(prefix + "/(?:query|key|value)", splits_heads=True),
        row_parallel(prefix + "/output", splits_heads=True),
        column_parallel(f"{block}/intermediate_dense"),
        row_parallel(f"{block}/output_dense"),
    ]
