"""`CausalLM`: next-token prediction, with cached, compiled generation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from zoo import samplers
from zoo.core.compiled_loop import compile_step
from zoo.core.task import Task
from zoo.core.tokenizer import bucket_length


class CausalLM(Task):
    """Base class for decoder-only language models.

    Subclasses build `logits = head(backbone(inputs))` and implement
    `logits_from_hidden`. The backbone provides `cache_shape(batch, length)`
    and `call_with_cache(token_ids, padding_mask, cache, index)`.
    `generate()` runs a prefill step and then one compiled decode step per
    token over a static key/value cache.
    """

    def compile(self, *args: Any, sampler: str | samplers.Sampler = "greedy",
                **kwargs: Any) -> None:
        """Keras `compile`, plus `sampler=` choosing the default decoding strategy."""
        super().compile(*args, **kwargs)
        self.sampler = samplers.get(sampler)
        self._generate_steps: dict = {}

    def logits_from_hidden(self, hidden: Any) -> Any:
        raise NotImplementedError

    # -- compiled steps -------------------------------------------------------
    def _steps(self, sampler: samplers.Sampler) -> tuple[Callable, Callable]:
        if sampler in self._generate_steps:
            return self._generate_steps[sampler]
        backbone = self.backbone

        def prefill(token_ids: Any, padding_mask: Any, cache: Any, seed: Any) -> Any:
            hidden, cache = backbone.call_with_cache(token_ids, padding_mask, cache, 0)
            logits = self.logits_from_hidden(hidden[:, -1, :])
            step = ops.cast(ops.shape(token_ids)[1], "int32")
            return sampler(logits, seed, step), cache

        def decode(token: Any, padding_mask: Any, cache: Any, index: Any, seed: Any) -> Any:
            hidden, cache = backbone.call_with_cache(token[:, None], padding_mask, cache, index)
            logits = self.logits_from_hidden(hidden[:, -1, :])
            return sampler(logits, seed, index + 1), cache

        steps = (compile_step(prefill, self.variables), compile_step(decode, self.variables))
        self._generate_steps[sampler] = steps
        return steps

    # -- generation -----------------------------------------------------------
    def generate(
        self,
        inputs: str | Sequence[str] | dict[str, np.ndarray],
        max_new_tokens: int = 32,
        stop_token_ids: Sequence[int] | None = None,
        seed: int = 0,
        sampler: str | samplers.Sampler | None = None,
        stream: Callable[[np.ndarray], None] | None = None,
    ) -> Any:
        """Generate continuations.

        Args:
            inputs: a prompt string, a list of prompts (any lengths), or
                preprocessed `{"token_ids", "padding_mask"}` arrays, left-padded.
            max_new_tokens: number of tokens to generate per row.
            stop_token_ids: a row stops once it produces one of these; later
                positions hold the tokenizer's padding id (0 without a
                tokenizer). Default: the tokenizer's end token, if any.
            seed: seed of random samplers (same seed, same output).
            sampler: override the sampler set by `compile(sampler=...)`.
            stream: called with each step's new token ids `(batch,)` as numpy.

        Returns:
            With string prompts, the prompt plus generated text per prompt
            (a string for a single prompt). With arrays, the generated ids
            `(batch, max_new_tokens)`.
        """
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}.")
        from_text = not isinstance(inputs, dict)
        if from_text:
            if self.preprocessor is None:
                raise ValueError("generate() on text needs a preprocessor; load the model "
                                 "with from_preset() or pass token arrays.")
            single = isinstance(inputs, str)
            inputs = self.preprocessor.generate_preprocess(inputs)
        token_ids = np.asarray(inputs["token_ids"], "int32")
        padding_mask = np.asarray(inputs["padding_mask"], "int32")
        if token_ids.ndim != 2 or token_ids.shape[1] == 0 or (padding_mask.sum(1) == 0).any():
            raise ValueError("Every prompt needs at least one token; got an empty prompt.")
        pad_id = self._pad_token_id()
        if stop_token_ids is None:
            stop_token_ids = self._default_stop_ids()
        # Left-pad the prompt to a bucketed length so similar prompts share one
        # compiled function, then reserve room for the new tokens.
        batch, prompt_len = token_ids.shape
        limit = self.backbone.max_sequence_length
        length = bucket_length(prompt_len, max(limit - max_new_tokens, prompt_len))
        if length + max_new_tokens > limit:
            raise ValueError(
                f"The prompt ({prompt_len} tokens) plus max_new_tokens ({max_new_tokens}) "
                f"exceeds the model's context of {limit} tokens. Fix: shorten the prompt "
                "or ask for fewer tokens."
            )
        extra = length - prompt_len
        token_ids = np.concatenate([np.full((batch, extra), pad_id, "int32"), token_ids], 1)
        padding_mask = np.concatenate([np.zeros((batch, extra), "int32"), padding_mask], 1)
        full_mask = np.concatenate([padding_mask, np.ones((batch, max_new_tokens), "int32")], 1)
        prefill, decode = self._steps(samplers.get(sampler or self.sampler))
        cache = ops.zeros(self.backbone.cache_shape(batch, length + max_new_tokens),
                          dtype=self.backbone.compute_dtype)
        seed_t = np.int32(seed)
        mask_t = ops.convert_to_tensor(full_mask)
        token, cache = prefill(ops.convert_to_tensor(token_ids), mask_t, cache, seed_t)
        out = np.full((batch, max_new_tokens), pad_id, "int32")
        done = np.zeros(batch, bool)
        stops = np.asarray(list(stop_token_ids), "int32")
        for i in range(max_new_tokens):
            new = np.asarray(ops.convert_to_numpy(token)).astype("int32")
            new = np.where(done, pad_id, new)
            out[:, i] = new
            done |= np.isin(new, stops)
            if stream is not None:
                stream(new)
            if done.all() or i == max_new_tokens - 1:
                break
            token, cache = decode(ops.convert_to_tensor(new), mask_t, cache,
                                  np.int32(length + i), seed_t)
        if not from_text:
            return out
        texts = self.preprocessor.generate_postprocess(inputs, out)
        return texts[0] if single else texts

    def _pad_token_id(self) -> int:
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        return int(tokenizer.pad_token_id) if tokenizer is not None else 0

    def _default_stop_ids(self) -> tuple[int, ...]:
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        end = getattr(tokenizer, "end_token_id", None)
        return (int(end),) if end is not None else ()
