"""BERT preprocessing: raw strings (or pairs) to padded id arrays."""

from __future__ import annotations

from typing import Any

import keras

from zoo.core.errors import InputError
from zoo.core.preprocessor import Preprocessor
from zoo.nlp.bert.bert_tokenizer import BertTokenizer


@keras.saving.register_keras_serializable(package="zoo")
class BertPreprocessor(Preprocessor):
    """Tokenize, add `[CLS]`/`[SEP]`, truncate and pad for `BertBackbone`.

    Used by `BertTextClassifier` and `BertTextEmbedder`. `x` is a string, a
    list of strings, or a tuple `(first_segments, second_segments)` of two
    equally long lists for sentence pairs. Labels and sample weights pass
    through unchanged.

    Args:
        tokenizer: a `BertTokenizer`.
        sequence_length: maximum tokens per example, special tokens included;
            longer inputs are truncated (longest segment first).
        padding: `"bucket"` pads each batch to the next power of two (few
            shapes, so few recompilations; short batches stay fast),
            `"max_length"` always to `sequence_length`, `"longest"` to the
            longest example.

    Example:

    >>> from zoo.models import BertPreprocessor, BertTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]
    >>> pre = BertPreprocessor(BertTokenizer(vocabulary=vocab), sequence_length=8,
    ...                        padding="max_length")
    >>> pre(["hello world"])["token_ids"].tolist()
    [[2, 5, 6, 3, 0, 0, 0, 0]]
    """

    tokenizer_cls = BertTokenizer

    def __init__(
        self,
        tokenizer: BertTokenizer,
        sequence_length: int = 512,
        padding: str = "bucket",
    ) -> None:
        super().__init__(tokenizer)
        self.sequence_length = sequence_length
        self.padding = padding

    def encode(self, x: Any) -> dict:
        """Encode `x` (strings, or a tuple of two lists of strings) to arrays."""
        if isinstance(x, tuple):
            if len(x) != 2:
                raise InputError(
                    f"Sentence pairs are a tuple of 2 lists, got a tuple of {len(x)}. "
                    "Fix: pass (first_segments, second_segments)."
                )
            return self.tokenizer.encode(x[0], x[1], self.sequence_length, self.padding)
        return self.tokenizer.encode(x, None, self.sequence_length, self.padding)

    def __call__(self, x: Any, y: Any = None, sample_weight: Any = None) -> Any:
        return keras.utils.pack_x_y_sample_weight(self.encode(x), y, sample_weight)

    def get_config(self) -> dict:
        return {"sequence_length": self.sequence_length, "padding": self.padding}
