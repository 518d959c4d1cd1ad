"""`CausalLM`: next-token prediction, with cached, compiled generation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from zoo import samplers
from zoo.core.errors import InputError
from zoo.core.generation import BeamPolicy, Generator, TokenRule
from zoo.core.task import Task, check_inputs, positive_int
from zoo.core.tokenizer import bucket_length


class CausalLM(Task):
    """Base class for decoder-only language models.

    Subclasses build `logits = head(backbone(inputs))` and implement
    `logits_from_hidden`. The backbone provides `init_cache(batch, length)`
    (a nested tuple of tensors) and `call_with_cache(token_ids, padding_mask,
    cache, index)`.
    `generate()` runs on zoo's generation engine (`zoo.core.generation`,
    shared with Whisper) over a static key/value cache: on JAX and
    TensorFlow the whole generation (prefill and a while loop of decode
    steps) is one compiled program; on PyTorch, with a `stream` callback, and
    for beam search, one compiled step runs per token.
    """

    export_names = ("causal_lm", "logits")

    def compile(self, *args: Any, sampler: str | samplers.Sampler = "greedy",
                **kwargs: Any) -> None:
        """Keras `compile`, plus `sampler=` choosing the default decoding strategy."""
        super().compile(*args, **kwargs)
        self.sampler = samplers.get(sampler)
        object.__setattr__(self, "_generator", None)

    def logits_from_hidden(self, hidden: Any, head_inputs: tuple = ()) -> Any:
        """Logits from the backbone's last hidden states; `head_inputs` are
        what `generation_head_inputs()` returned (during `generate`)."""
        raise NotImplementedError

    def generation_head_inputs(self) -> tuple:
        """Tensors passed to `logits_from_hidden` during `generate` (default
        none): a head can precompute a faster layout of its weights here."""
        return ()

    @property
    def generator(self) -> Generator:
        """The compiled generation engine `generate` runs on (its steps are
        cached per sampler and per set of variables, so adding LoRA adapters
        after a first `generate` builds fresh steps that read them)."""
        if getattr(self, "_generator", None) is None:
            backbone = self.backbone
            object.__setattr__(self, "_generator", Generator(
                self,
                forward=lambda tokens, mask, cache, index, head: backbone.call_with_cache(
                    tokens, mask, cache, index),
                logits=self.logits_from_hidden))
        return self._generator

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
            stream: called with each step's new token ids `(batch,)` as numpy
                (with beam search: the newest token of the current best beam).

        Returns:
            With string prompts, the prompt plus generated text per prompt
            (a string for a single prompt). With arrays, the generated ids
            `(batch, max_new_tokens)`.
        """
        max_new_tokens = positive_int(max_new_tokens, "max_new_tokens", 32)
        from_text = not isinstance(inputs, dict)
        if from_text:
            check_inputs(inputs, "inputs")
            if self.preprocessor is None:
                raise InputError("generate() on text needs a preprocessor. Fix: load the "
                                 "model with from_preset(), or pass token arrays "
                                 "({'token_ids': ..., 'padding_mask': ...}).")
            single = isinstance(inputs, str)
            inputs = self.preprocessor.generate_preprocess(inputs)
        token_ids, padding_mask = _token_arrays(inputs)
        pad_id = self._pad_token_id()
        if stop_token_ids is None:
            stop_token_ids = self._default_stop_ids()
        token_ids, full_mask = self._pad_prompts(token_ids, padding_mask, max_new_tokens,
                                                 pad_id)
        chosen = samplers.get(sampler or self.sampler)
        stops = [int(s) for s in stop_token_ids]
        batch = token_ids.shape[0]
        head = self.generation_head_inputs()
        if isinstance(chosen, samplers.BeamSampler):
            policy = BeamPolicy(beams=chosen.num_beams, candidates=2 * chosen.num_beams,
                                length_penalty=chosen.length_penalty)
            best, _ = self.generator.beam_search(
                TokenRule(), policy, token_ids, full_mask,
                lambda rows: self.backbone.init_cache(rows, full_mask.shape[1]), head, stops,
                pad_id, stream)
            out = np.full((batch, max_new_tokens), pad_id, "int32")
            for row, hypothesis in enumerate(best):
                stop = [] if hypothesis.stop is None else [hypothesis.stop]
                ids = hypothesis.tokens + stop
                out[row, :len(ids)] = ids
        else:
            out = self.generator.generate(
                TokenRule(chosen), token_ids, full_mask,
                self.backbone.init_cache(batch, full_mask.shape[1]), head, stops, pad_id,
                seed=seed, stream=stream).tokens
        if not from_text:
            return out
        texts = self.preprocessor.generate_postprocess(inputs, out)
        return texts[0] if single else texts

    def _pad_prompts(self, token_ids: np.ndarray, padding_mask: np.ndarray,
                     max_new_tokens: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Left-pad prompts to a bucketed length (so similar prompts share one
        compiled function) and extend the mask over the tokens to generate."""
        batch, prompt_len = token_ids.shape
        limit = self.backbone.max_sequence_length
        length = bucket_length(prompt_len, max(limit - max_new_tokens, prompt_len))
        if length + max_new_tokens > limit:
            raise InputError(
                f"The prompt ({prompt_len} tokens) plus max_new_tokens ({max_new_tokens}) "
                f"exceeds the model's context of {limit} tokens. Fix: shorten the prompt "
                "or ask for fewer tokens."
            )
        extra = length - prompt_len
        token_ids = np.concatenate([np.full((batch, extra), pad_id, "int32"), token_ids], 1)
        padding_mask = np.concatenate([np.zeros((batch, extra), "int32"), padding_mask], 1)
        full_mask = np.concatenate([padding_mask, np.ones((batch, max_new_tokens), "int32")], 1)
        return token_ids, full_mask

    def _pad_token_id(self) -> int:
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        return int(tokenizer.pad_token_id) if tokenizer is not None else 0

    def _default_stop_ids(self) -> tuple[int, ...]:
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        end = getattr(tokenizer, "end_token_id", None)
        return (int(end),) if end is not None else ()


def _token_arrays(inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """`inputs["token_ids"]` and `inputs["padding_mask"]` as int32 `(batch,
    length)` arrays, or an `InputError` naming what is wrong with them."""
    missing = sorted({"token_ids", "padding_mask"} - set(inputs))
    if missing:
        raise InputError(f"The token arrays lack {missing} (got keys {sorted(inputs)}). Fix: "
                         "pass {'token_ids': ..., 'padding_mask': ...}, left-padded, or "
                         "prompt strings.")
    try:
        token_ids = np.asarray(inputs["token_ids"], "int32")
        padding_mask = np.asarray(inputs["padding_mask"], "int32")
    except (TypeError, ValueError) as e:
        raise InputError(f"token_ids and padding_mask must be integer arrays ({e}). Fix: pass "
                         "numpy int arrays of shape (batch, length).") from None
    if token_ids.ndim != 2 or token_ids.shape != padding_mask.shape:
        raise InputError(f"token_ids {token_ids.shape} and padding_mask {padding_mask.shape} "
                         "must both have shape (batch, length). Fix: add the batch axis, "
                         "e.g. ids[None].")
    if token_ids.shape[0] == 0 or token_ids.shape[1] == 0 or (padding_mask.sum(1) == 0).any():
        raise InputError("Every prompt needs at least one token; got an empty prompt. Fix: "
                         "give each row at least one token with padding_mask 1.")
    return token_ids, padding_mask
