"""`CausalLM`: next-token prediction, with cached, compiled generation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from zoo import samplers
from zoo.core.compiled_loop import compile_step
from zoo.core.errors import InputError
from zoo.core.task import Task, check_inputs, positive_int
from zoo.core.tokenizer import bucket_length


class CausalLM(Task):
    """Base class for decoder-only language models.

    Subclasses build `logits = head(backbone(inputs))` and implement
    `logits_from_hidden`. The backbone provides `init_cache(batch, length)`
    (a nested tuple of tensors) and `call_with_cache(token_ids, padding_mask,
    cache, index)`.
    `generate()` runs over a static key/value cache: on JAX and TensorFlow
    the whole generation (prefill and a while loop of decode steps) is one
    compiled program; on PyTorch, with a `stream` callback, and for beam
    search, one compiled step runs per token.
    """

    def compile(self, *args: Any, sampler: str | samplers.Sampler = "greedy",
                **kwargs: Any) -> None:
        """Keras `compile`, plus `sampler=` choosing the default decoding strategy."""
        super().compile(*args, **kwargs)
        self.sampler = samplers.get(sampler)
        self._generate_steps: dict = {}

    def logits_from_hidden(self, hidden: Any, head_inputs: tuple = ()) -> Any:
        """Logits from the backbone's last hidden states; `head_inputs` are
        what `generation_head_inputs()` returned (during `generate`)."""
        raise NotImplementedError

    def generation_head_inputs(self) -> tuple:
        """Tensors passed to `logits_from_hidden` during `generate` (default
        none): a head can precompute a faster layout of its weights here."""
        return ()

    # -- compiled steps -------------------------------------------------------
    def _steps(self, sampler: samplers.Sampler) -> dict[str, Callable]:
        """Compiled `prefill`, `decode` and (jax, tensorflow) the whole `loop`.

        Cached per sampler and per set of variables, so adding LoRA adapters
        after a first `generate` builds fresh steps that read them.
        """
        variables = self.variables
        key = (sampler, tuple(id(v) for v in variables))
        if key in self._generate_steps:
            return self._generate_steps[key]
        backbone = self.backbone

        def prefill(token_ids: Any, padding_mask: Any, cache: Any, seed: Any,
                    head: tuple) -> Any:
            hidden, cache = backbone.call_with_cache(token_ids, padding_mask, cache, 0)
            logits = self.logits_from_hidden(hidden[:, -1, :], head)
            step = ops.cast(ops.shape(token_ids)[1], "int32")
            return sampler(logits, seed, step), cache

        def decode(token: Any, padding_mask: Any, cache: Any, index: Any, seed: Any,
                   head: tuple) -> Any:
            hidden, cache = backbone.call_with_cache(token[:, None], padding_mask, cache, index)
            logits = self.logits_from_hidden(hidden[:, -1, :], head)
            return sampler(logits, seed, index + 1), cache

        def loop(token_ids: Any, padding_mask: Any, cache: Any, seed: Any, head: tuple,
                 stops: Any, pad_id: Any) -> Any:
            # The whole generation in one compiled function: prefill, then a
            # while loop of decode steps that ends when every row has stopped.
            batch, length = ops.shape(token_ids)
            max_new = ops.shape(padding_mask)[1] - length

            def record(i: Any, token: Any, out: Any, done: Any) -> tuple:
                new = ops.where(done, pad_id, ops.cast(token, "int32"))
                out = ops.slice_update(out, (0, i), new[:, None])
                hit = ops.any(ops.equal(new[:, None], stops[None, :]), axis=1)
                return new, out, ops.logical_or(done, hit)

            first, cache = prefill(token_ids, padding_mask, cache, seed, head)
            out = ops.full((batch, max_new), pad_id, dtype="int32")
            token, out, done = record(0, first, out, ops.zeros((batch,), dtype="bool"))

            def cond(i: Any, token: Any, cache: Any, out: Any, done: Any) -> Any:
                return ops.logical_and(i < max_new, ops.logical_not(ops.all(done)))

            def body(i: Any, token: Any, cache: Any, out: Any, done: Any) -> tuple:
                nxt, cache = decode(token, padding_mask, cache, length + i - 1, seed, head)
                token, out, done = record(i, nxt, out, done)
                return i + 1, token, cache, out, done

            state = (ops.convert_to_tensor(1, "int32"), token, cache, out, done)
            return ops.while_loop(cond, body, state)[3]

        steps = {"prefill": compile_step(prefill, variables),
                 "decode": compile_step(decode, variables)}
        if keras.backend.backend() != "torch":
            steps["loop"] = compile_step(loop, variables)
        self._generate_steps[key] = steps
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
        token_ids, full_mask, length = self._pad_prompts(token_ids, padding_mask,
                                                         max_new_tokens, pad_id)
        chosen = samplers.get(sampler or self.sampler)
        run = self._beam_search if isinstance(chosen, samplers.BeamSampler) else self._sample
        out = run(chosen, token_ids, full_mask, length, max_new_tokens,
                  np.asarray(list(stop_token_ids), "int32"), pad_id, np.int32(seed), stream)
        if not from_text:
            return out
        texts = self.preprocessor.generate_postprocess(inputs, out)
        return texts[0] if single else texts

    def _pad_prompts(self, token_ids: np.ndarray, padding_mask: np.ndarray,
                     max_new_tokens: int, pad_id: int) -> tuple[np.ndarray, np.ndarray, int]:
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
        return token_ids, full_mask, length

    def _new_cache(self, batch: int, length: int) -> Any:
        return self.backbone.init_cache(batch, length)

    def _sample(self, sampler: samplers.Sampler, token_ids: np.ndarray, full_mask: np.ndarray,
                length: int, max_new_tokens: int, stops: np.ndarray, pad_id: int,
                seed: np.int32, stream: Callable | None) -> np.ndarray:
        """Greedy / random sampling: one compiled decode step per token."""
        batch = token_ids.shape[0]
        steps = self._steps(sampler)
        cache = self._new_cache(batch, full_mask.shape[1])
        head = self.generation_head_inputs()
        if stream is None and "loop" in steps:
            out = steps["loop"](token_ids, full_mask, cache, seed, head, stops,
                                np.int32(pad_id))
            return np.asarray(ops.convert_to_numpy(out), "int32")
        prefill, decode = steps["prefill"], steps["decode"]
        mask = ops.convert_to_tensor(full_mask)
        token, cache = prefill(ops.convert_to_tensor(token_ids), mask, cache, seed, head)
        out = np.full((batch, max_new_tokens), pad_id, "int32")
        done = np.zeros(batch, bool)
        for i in range(max_new_tokens):
            new = np.where(done, pad_id, np.asarray(ops.convert_to_numpy(token), "int32"))
            out[:, i] = new
            done |= np.isin(new, stops)
            if stream is not None:
                stream(new)
            if done.all() or i == max_new_tokens - 1:
                break
            token, cache = decode(ops.convert_to_tensor(new), mask, cache,
                                  np.int32(length + i), seed, head)
        return out

    def _beam_search(self, sampler: samplers.BeamSampler, token_ids: np.ndarray,
                     full_mask: np.ndarray, length: int, max_new_tokens: int,
                     stops: np.ndarray, pad_id: int, seed: np.int32,
                     stream: Callable | None) -> np.ndarray:
        """Beam search; the model step is compiled, beam bookkeeping is numpy."""
        batch, beams = token_ids.shape[0], sampler.num_beams
        steps = self._steps(sampler)
        prefill, decode = steps["prefill"], steps["decode"]
        rows = np.repeat(np.arange(batch), beams)  # beam b of prompt p is row p*beams+b
        mask = ops.convert_to_tensor(full_mask[rows])
        cache = self._new_cache(batch * beams, full_mask.shape[1])
        head = self.generation_head_inputs()
        (values, indices), cache = prefill(ops.convert_to_tensor(token_ids[rows]), mask,
                                           cache, seed, head)
        scores = np.full((batch, beams), -1e9, "float64")
        scores[:, 0] = 0.0  # all beams start identical: expand only the first
        history = np.full((batch, beams, max_new_tokens), pad_id, "int32")
        finished: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(batch)]
        for i in range(max_new_tokens):
            values = np.asarray(ops.convert_to_numpy(values), "float64")
            indices = np.asarray(ops.convert_to_numpy(indices), "int32")
            total = scores[:, :, None] + values.reshape(batch, beams, -1)
            total = total.reshape(batch, -1)  # (batch, beams * candidates)
            candidate_tokens = indices.reshape(batch, -1)
            order = np.argsort(-total, axis=1, kind="stable")
            parents = np.zeros((batch, beams), "int64")
            tokens = np.full((batch, beams), pad_id, "int32")
            for p in range(batch):
                scores[p] = -1e9  # slots left unfilled stay dead
                kept = 0
                for c in order[p]:
                    parent, token = c // (2 * beams), candidate_tokens[p, c]
                    if total[p, c] < -1e8:
                        break
                    if token in stops:
                        seq = history[p, parent].copy()
                        seq[i] = token
                        norm = total[p, c] / (i + 1) ** sampler.length_penalty
                        finished[p].append((norm, seq))
                        continue
                    parents[p, kept], tokens[p, kept] = parent, token
                    scores[p, kept] = total[p, c]
                    kept += 1
                    if kept == beams:
                        break
            history = np.take_along_axis(history, parents[:, :, None], axis=1)
            history[:, :, i] = tokens
            if stream is not None:
                stream(history[:, 0, i].copy())
            if i == max_new_tokens - 1:
                break
            flat = (np.arange(batch)[:, None] * beams + parents).reshape(-1)
            flat = ops.convert_to_tensor(flat.astype("int32"))
            cache = keras.tree.map_structure(lambda c: ops.take(c, flat, axis=0), cache)
            (values, indices), cache = decode(ops.convert_to_tensor(tokens.reshape(-1)), mask,
                                              cache, np.int32(length + i), seed, head)
        out = np.zeros((batch, max_new_tokens), "int32")
        for p in range(batch):
            norm = scores[p] / max_new_tokens ** sampler.length_penalty
            candidates = finished[p] + [(norm[b], history[p, b]) for b in range(beams)]
            out[p] = max(candidates, key=lambda item: item[0])[1]
        return out

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
