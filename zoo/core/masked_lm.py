"""`MaskedLM`: predict masked tokens; training and `fill_mask` inference."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from zoo.core.errors import InputError
from zoo.core.task import Task, check_inputs, positive_int


class MaskedLM(Task):
    """Base class for masked language models.

    Inputs are the backbone's plus `mask_positions` `(batch, slots)`; the
    output is logits `(batch, slots, vocabulary_size)`. Compiled with Adam
    (5e-5) and a sample-weighted sparse cross-entropy, so `fit(list_of_strings)`
    trains with the preprocessor's random masking.
    """

    export_names = ("masked_lm", "logits")

    def _compile_defaults(self) -> None:
        self.compile(
            optimizer=keras.optimizers.Adam(5e-5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )

    def fill_mask(self, texts: str | list[str], top_k: int = 5) -> list[list[list[tuple[str, float]]]]:
        """Rank the likeliest tokens for each mask token in each text.

        Args:
            texts: strings containing the tokenizer's mask token (e.g. `[MASK]`).
            top_k: candidates returned per mask.

        Returns:
            Per text, per mask (in order), a list of `(token, probability)`.
        """
        if self.preprocessor is None:
            raise InputError("fill_mask needs a preprocessor. Fix: load the task with "
                             "from_preset(), or pass preprocessor=... when building it.")
        check_inputs(texts, "texts")
        top_k = positive_int(top_k, "top_k", 5)
        single = isinstance(texts, str)
        tokenizer = self.preprocessor.tokenizer
        mask_id = tokenizer.token_to_id(tokenizer.special_tokens["mask"])
        inputs = self.preprocessor.encode([texts] if single else list(texts))
        found = [np.flatnonzero(row == mask_id) for row in inputs["token_ids"]]
        if not any(len(f) for f in found):
            raise InputError(
                f"No {tokenizer.special_tokens['mask']} token in the input. Fix: put it where "
                "a word should be predicted."
            )
        slots = max(len(f) for f in found)
        positions = np.zeros((len(found), slots), "int32")
        for row, f in enumerate(found):
            positions[row, : len(f)] = f
        logits = np.asarray(self.predict_on_batch({**inputs, "mask_positions": positions}),
                            "float32")
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        results = []
        for row, f in enumerate(found):
            per_mask = []
            for slot in range(len(f)):
                best = np.argsort(-probs[row, slot])[:top_k]
                per_mask.append([(tokenizer.id_to_token(i), float(probs[row, slot, i]))
                                 for i in best])
            results.append(per_mask)
        return results[0] if single else results

    def get_config(self) -> dict[str, Any]:
        return super().get_config()
