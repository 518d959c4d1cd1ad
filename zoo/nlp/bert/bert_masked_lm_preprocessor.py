"""BERT masked-language-model preprocessing: random masking for pretraining."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from zoo.core.errors import InputError
from zoo.nlp.bert.bert_preprocessor import BertPreprocessor
from zoo.nlp.bert.bert_tokenizer import BertTokenizer


@keras.saving.register_keras_serializable(package="zoo")
class BertMaskedLMPreprocessor(BertPreprocessor):
    """Tokenize and randomly mask tokens, producing `(x, y, sample_weight)`.

    Of the real, non-special tokens, `mask_selection_rate` are selected (at
    least one, at most `mask_selection_length`); of those, `mask_token_rate`
    become `[MASK]`, `random_token_rate` a random token, the rest stay.
    `x` gains `mask_positions` `(batch, mask_selection_length)`; `y` holds the
    original ids there and `sample_weight` is 1 on real selections.

    Args:
        tokenizer, sequence_length, padding: as `BertPreprocessor`.
        mask_selection_rate: fraction of tokens selected for prediction.
        mask_selection_length: fixed number of prediction slots per example.
        mask_token_rate: fraction of selections replaced by `[MASK]`.
        random_token_rate: fraction replaced by a random token.
        seed: seed of the masking random generator.
    """

    def __init__(
        self,
        tokenizer: BertTokenizer,
        sequence_length: int = 512,
        padding: str = "bucket",
        mask_selection_rate: float = 0.15,
        mask_selection_length: int = 96,
        mask_token_rate: float = 0.8,
        random_token_rate: float = 0.1,
        seed: int | None = None,
    ) -> None:
        super().__init__(tokenizer, sequence_length, padding)
        if mask_token_rate + random_token_rate > 1:
            raise InputError("mask_token_rate + random_token_rate must be at most 1. Fix: "
                             "lower one of them (BERT's: 0.8 and 0.1).")
        self.mask_selection_rate = mask_selection_rate
        self.mask_selection_length = mask_selection_length
        self.mask_token_rate = mask_token_rate
        self.random_token_rate = random_token_rate
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __call__(self, x: Any, y: Any = None, sample_weight: Any = None) -> Any:
        if y is not None:
            raise InputError(
                "Masked-LM preprocessing makes its own labels. Fix: pass only text (y=None)."
            )
        inputs = self.encode(x)
        token_ids = inputs["token_ids"]
        special = {self.tokenizer.token_to_id(t) for t in self.tokenizer.special_tokens.values()}
        mask_id = self.tokenizer.token_to_id(self.tokenizer.special_tokens["mask"])
        vocab_size = self.tokenizer.vocabulary_size()
        ordinary = np.array(sorted(set(range(vocab_size)) - special))
        slots = self.mask_selection_length
        positions = np.zeros((len(token_ids), slots), "int32")
        labels = np.zeros((len(token_ids), slots), "int32")
        weights = np.zeros((len(token_ids), slots), "float32")
        masked = token_ids.copy()
        for row in range(len(token_ids)):
            candidates = np.flatnonzero(
                (inputs["padding_mask"][row] == 1) & ~np.isin(token_ids[row], list(special))
            )
            if len(candidates) == 0:
                continue
            count = min(slots, max(1, round(self.mask_selection_rate * len(candidates))))
            chosen = np.sort(self._rng.choice(candidates, size=count, replace=False))
            positions[row, :count] = chosen
            labels[row, :count] = token_ids[row, chosen]
            weights[row, :count] = 1.0
            draw = self._rng.random(count)
            to_mask = draw < self.mask_token_rate
            to_random = (draw >= self.mask_token_rate) & (
                draw < self.mask_token_rate + self.random_token_rate)
            masked[row, chosen[to_mask]] = mask_id
            masked[row, chosen[to_random]] = self._rng.choice(ordinary, size=to_random.sum())
        x_out = {**inputs, "token_ids": masked, "mask_positions": positions}
        if sample_weight is not None:
            weights = weights * np.asarray(sample_weight, "float32")[:, None]
        return x_out, labels, weights

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "mask_selection_rate": self.mask_selection_rate,
            "mask_selection_length": self.mask_selection_length,
            "mask_token_rate": self.mask_token_rate,
            "random_token_rate": self.random_token_rate,
            "seed": self.seed,
        }
