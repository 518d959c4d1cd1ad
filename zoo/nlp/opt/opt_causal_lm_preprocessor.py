"""OPT preprocessing for training (shifted labels) and generation (left padding)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from zoo.core.errors import InputError
from zoo.core.preprocessor import Preprocessor
from zoo.core.tokenizer import as_text_list, bucket_length
from zoo.nlp.opt.opt_tokenizer import OPTTokenizer


@keras.saving.register_keras_serializable(package="zoo")
class OPTCausalLMPreprocessor(Preprocessor):
    """Strings to causal-LM batches: `</s> text </s>`, inputs and next-token labels.

    For `fit`: `x = {"token_ids", "padding_mask"}` (right-padded), `y` the
    same ids shifted by one, `sample_weight` 1 on real label positions, so the
    loss ignores padding. For `generate`: prompts become left-padded ids
    starting with `</s>` (as transformers' OPT tokenizer does).

    Args:
        tokenizer: an `OPTTokenizer`.
        sequence_length: maximum training length (longer texts are truncated).
        padding: `"bucket"` (power of two, bounded recompilation),
            `"max_length"` or `"longest"`.
        add_end_token: append `</s>` to training texts (teaches the model to stop).

    Example:

    >>> from zoo.models import OPTCausalLMPreprocessor  # doctest: +SKIP
    >>> pre = OPTCausalLMPreprocessor.from_preset("opt_125m_en")  # doctest: +SKIP
    >>> x, y, weights = pre(["The quick brown fox"])  # doctest: +SKIP
    """

    tokenizer_cls = OPTTokenizer

    def __init__(self, tokenizer: OPTTokenizer, sequence_length: int = 1024,
                 padding: str = "bucket", add_end_token: bool = True) -> None:
        super().__init__(tokenizer)
        self.sequence_length = sequence_length
        self.padding = padding
        self.add_end_token = add_end_token

    def _ids(self, texts: Any, what: str) -> tuple[list[list[int]], bool]:
        batch, single = as_text_list(texts, what)
        start = self.tokenizer.start_token_id
        return [[start] + ids for ids in self.tokenizer.tokenize(batch)], single

    def __call__(self, x: Any, y: Any = None, sample_weight: Any = None) -> Any:
        if y is not None:
            raise InputError("Causal-LM preprocessing makes its own labels. Fix: pass only "
                             "text (y=None).")
        rows, _ = self._ids(x, "x")
        end, pad = self.tokenizer.end_token_id, self.tokenizer.pad_token_id
        limit = self.sequence_length + 1
        rows = [(r + [end] if self.add_end_token else r)[:limit] for r in rows]
        longest = max(len(r) for r in rows)
        length = {"max_length": limit, "longest": longest,
                  "bucket": bucket_length(longest - 1, self.sequence_length) + 1}[self.padding]
        ids = np.full((len(rows), length), pad, "int32")
        mask = np.zeros((len(rows), length), "int32")
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        weights = mask[:, 1:].astype("float32")
        if sample_weight is not None:
            weights = weights * np.asarray(sample_weight, "float32")[:, None]
        return {"token_ids": ids[:, :-1], "padding_mask": mask[:, :-1]}, ids[:, 1:], weights

    def generate_preprocess(self, prompts: Any) -> dict[str, np.ndarray]:
        """Prompts to left-padded `{"token_ids", "padding_mask"}`.

        Raises:
            InputError: no prompts, or an empty prompt (there is nothing to continue).
        """
        batch, _ = as_text_list(prompts, "prompts")
        if not batch or any(not text for text in batch):
            raise InputError("A prompt is empty (or there are none); there is nothing to "
                             "continue. Fix: give each prompt at least one character of text.")
        rows, _ = self._ids(batch, "prompts")
        length = max(len(r) for r in rows)
        ids = np.full((len(rows), length), self.tokenizer.pad_token_id, "int32")
        mask = np.zeros((len(rows), length), "int32")
        for i, r in enumerate(rows):
            ids[i, length - len(r):] = r
            mask[i, length - len(r):] = 1
        return {"token_ids": ids, "padding_mask": mask}

    def generate_postprocess(self, inputs: dict, generated: np.ndarray) -> list[str]:
        """Prompt plus generated text for each row (special tokens dropped)."""
        pad = self.tokenizer.pad_token_id
        texts = []
        for ids, mask, new in zip(inputs["token_ids"], inputs["padding_mask"], generated):
            row = [int(t) for t in ids[mask == 1]] + [int(t) for t in new if t != pad]
            texts.append(self.tokenizer.detokenize(row))
        return texts

    def get_config(self) -> dict:
        return {"sequence_length": self.sequence_length, "padding": self.padding,
                "add_end_token": self.add_end_token}
