"""Whisper decoding: compiled steps over an explicit cache, with Whisper's logit rules.

One window of audio is encoded once; its cross-attention keys and values
(per decoder layer) are computed once too and then read by every decoding
step. The prompt (previous text, start of transcript, language, task) goes
through the decoder in one prefill call; then one token per step. On JAX and
TensorFlow the whole decode (prefill plus a while loop that stops when every
row has ended) is one compiled program; on PyTorch a traced step runs per
token (see `zoo/core/compiled_loop.py`).

The logit rules are openai-whisper's and CTranslate2's: suppressed tokens,
a blank/end suppression at the first step, and the timestamp rules
(timestamps in pairs, never decreasing, a first timestamp no later than
`max_initial_timestamp`, and a timestamp whenever all timestamps together
are more likely than any single text token).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
from keras import ops

from zoo import samplers
from zoo.core.compiled_loop import compile_step
from zoo.core.errors import InputError
from zoo.core.tokenizer import bucket_length

#: seconds per timestamp token
TIME_PRECISION = 0.02
NEG_INF = -1e9


@dataclasses.dataclass(frozen=True)
class DecodingOptions:
    """How one window is decoded."""

    # 0: greedy; above 0: sampling at this temperature.
    temperature: float = 0.0
    # Predict timestamp tokens (segments); False adds <|notimestamps|> to the prompt.
    timestamps: bool = True
    # Forbid a blank or the end token as the very first token.
    suppress_blank: bool = True
    # Latest allowed first timestamp, in seconds.
    max_initial_timestamp: float = 1.0
    # Tokens to generate at most (None: half the decoder context, 224).
    max_new_tokens: int | None = None


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """The ids the logit rules need (from the tokenizer and the model size)."""

    eot: int
    no_timestamps: int
    timestamp_begin: int
    no_speech: int
    vocabulary_size: int
    suppress: tuple[int, ...]
    suppress_begin: tuple[int, ...]


@dataclasses.dataclass
class DecodingResult:
    """Per row: generated ids (without the end token), the summed log
    probability (end token included), and the no-speech probability."""

    tokens: list[list[int]]
    sum_logprob: np.ndarray
    no_speech_prob: np.ndarray

    @property
    def avg_logprob(self) -> np.ndarray:
        lengths = np.array([len(t) for t in self.tokens], "float64")
        return self.sum_logprob / (lengths + 1)


def _mask(ids: tuple[int, ...], size: int) -> np.ndarray:
    out = np.zeros((size,), bool)
    out[[i for i in ids if 0 <= i < size]] = True
    return out


class WhisperDecoder:
    """Compiled encode/decode steps of one `WhisperAudioToText` model.

    Args:
        task: the `WhisperAudioToText` whose backbone and head run.
        special: token ids of the logit rules.
    """

    def __init__(self, task: Any, special: SpecialTokens) -> None:
        self.task = task
        self.backbone = task.backbone
        self.special = special
        size = special.vocabulary_size
        self._suppress = _mask(special.suppress + (special.no_timestamps,), size)
        self._suppress_begin = _mask(special.suppress_begin, size)
        self._steps: dict = {}

    # -- the logit rules (keras.ops, inside compiled code) ---------------------
    def _filter(self, logits: Any, step: Any, last: Any, penultimate_ts: Any, last_ts: Any,
                options: DecodingOptions) -> Any:
        """Logits with every forbidden token at -1e9 (`(batch, vocabulary)`).

        `step` counts generated tokens; per row `last` is the previous token,
        `penultimate_ts` whether the one before it was a timestamp (True at
        step 1), `last_ts` the latest timestamp token (-1: none yet).
        """
        sp = self.special
        ids = ops.arange(sp.vocabulary_size, dtype="int32")[None, :]
        first = ops.equal(step, 0)
        disable = ops.convert_to_tensor(self._suppress)[None, :]
        if options.suppress_blank:
            begin = ops.convert_to_tensor(self._suppress_begin)[None, :]
            disable = ops.logical_or(disable, ops.logical_and(first, begin))
        if not options.timestamps:
            return ops.where(disable, NEG_INF, logits)
        is_ts = ids >= sp.timestamp_begin
        max_initial = sp.timestamp_begin + int(round(options.max_initial_timestamp
                                                     / TIME_PRECISION))
        at_start = ops.logical_or(ops.logical_not(is_ts), ids > max_initial)
        last = last[:, None]
        last_is_ts = last >= sp.timestamp_begin
        pair_done = ops.logical_and(last_is_ts, penultimate_ts[:, None])
        pair_open = ops.logical_and(last_is_ts, ops.logical_not(penultimate_ts[:, None]))
        rules = ops.where(pair_done, is_ts, False)
        rules = ops.logical_or(rules, ops.logical_and(
            pair_open, ops.logical_or(ids < sp.eot, ops.logical_and(is_ts, ids < last))))
        after_text = ops.logical_and(ops.logical_not(last_is_ts), last_ts[:, None] >= 0)
        rules = ops.logical_or(rules, ops.logical_and(
            after_text, ops.logical_and(is_ts, ids <= last_ts[:, None])))
        disable = ops.logical_or(disable, ops.where(first, at_start, rules))
        logits = ops.where(disable, NEG_INF, logits)
        # Sample a timestamp when all timestamps together beat every text token.
        log_probs = ops.log_softmax(logits, axis=-1)
        ts_mass = ops.logsumexp(ops.where(is_ts, log_probs, NEG_INF), axis=-1)
        text_best = ops.max(ops.where(is_ts, NEG_INF, log_probs), axis=-1)
        check = ops.logical_and(ops.logical_not(first),
                                ops.logical_not(pair_done[:, 0]))
        force_ts = ops.logical_and(check, ts_mass > text_best)[:, None]
        return ops.where(ops.logical_and(force_ts, ops.logical_not(is_ts)), NEG_INF, logits)

    def _choose(self, logits: Any, state: tuple, step: Any, seed: Any, inverse_t: Any,
                sampler: samplers.Sampler, options: DecodingOptions) -> tuple[Any, tuple]:
        """Next token per row and the updated state `(last, penultimate_ts,
        last_ts, done, sum_logprob)`.

        The sampler draws from `softmax(logits * inverse_t)` (1 / temperature,
        a runtime input so every temperature shares one compiled program), but
        the summed log probability is of the untempered distribution, as
        CTranslate2 scores sampled tokens (faster-whisper's `avg_logprob`).
        """
        last, penultimate_ts, last_ts, done, sum_lp = state
        logits = self._filter(ops.cast(logits, "float32"), step, last, penultimate_ts,
                              last_ts, options)
        token = sampler(logits * inverse_t, seed, step)
        log_probs = ops.log_softmax(logits, axis=-1)
        picked = ops.take_along_axis(log_probs, token[:, None], axis=1)[:, 0]
        sum_lp = sum_lp + ops.where(done, 0.0, picked)
        sp = self.special
        is_ts = token >= sp.timestamp_begin
        new_state = (
            ops.where(done, last, token),
            ops.where(done, penultimate_ts,
                      ops.logical_or(ops.equal(step, 0), last >= sp.timestamp_begin)),
            ops.where(ops.logical_and(ops.logical_not(done), is_ts), token, last_ts),
            ops.logical_or(done, ops.equal(token, sp.eot)),
            sum_lp,
        )
        return ops.where(done, sp.eot, token), new_state

    # -- compiled steps -------------------------------------------------------
    def _get_steps(self, sampler: samplers.Sampler, options: DecodingOptions) -> dict:
        options = dataclasses.replace(options, temperature=0.0)  # a runtime input
        variables = self.task.variables
        key = (sampler, options, tuple(id(v) for v in variables))
        if key in self._steps:
            return self._steps[key]
        backbone, task, sp = self.backbone, self.task, self.special

        def encode(features: Any) -> Any:
            return backbone.cross_key_values(backbone.encode(features))

        def prefill(prompt: Any, mask: Any, cache: Any, cross: Any, sot_index: Any,
                    seed: Any, inverse_t: Any, head: tuple) -> Any:
            hidden, cache = backbone.call_decoder_with_cache(prompt, mask, cache, cross, 0)
            logits = task.logits_from_hidden(hidden[:, -1, :], head)
            sot_hidden = ops.take(hidden, sot_index, axis=1)
            sot_probs = ops.softmax(ops.cast(task.logits_from_hidden(sot_hidden, head),
                                             "float32"))
            no_speech = sot_probs[:, sp.no_speech]
            batch = ops.shape(prompt)[0]
            state = (ops.full((batch,), -1, "int32"), ops.ones((batch,), "bool"),
                     ops.full((batch,), -1, "int32"), ops.zeros((batch,), "bool"),
                     ops.zeros((batch,), "float32"))
            token, state = self._choose(logits, state, ops.convert_to_tensor(0, "int32"),
                                        seed, inverse_t, sampler, options)
            return token, state, cache, no_speech

        def decode(token: Any, mask: Any, cache: Any, cross: Any, index: Any, step: Any,
                   state: tuple, seed: Any, inverse_t: Any, head: tuple) -> Any:
            hidden, cache = backbone.call_decoder_with_cache(token[:, None], mask, cache, cross,
                                                             index)
            logits = task.logits_from_hidden(hidden[:, -1, :], head)
            token, state = self._choose(logits, state, step, seed, inverse_t, sampler, options)
            return token, state, cache

        def loop(prompt: Any, mask: Any, cache: Any, cross: Any, sot_index: Any,
                 seed: Any, inverse_t: Any, head: tuple) -> Any:
            batch, length = ops.shape(prompt)
            max_new = ops.shape(mask)[1] - length
            token, state, cache, no_speech = prefill(prompt, mask, cache, cross, sot_index, seed,
                                                     inverse_t, head)
            out = ops.full((batch, max_new), sp.eot, dtype="int32")
            out = ops.slice_update(out, (0, 0), token[:, None])

            def cond(i: Any, token: Any, state: tuple, cache: Any, out: Any) -> Any:
                return ops.logical_and(i < max_new, ops.logical_not(ops.all(state[3])))

            def body(i: Any, token: Any, state: tuple, cache: Any, out: Any) -> tuple:
                token, state, cache = decode(token, mask, cache, cross, length + i - 1, i,
                                             state, seed, inverse_t, head)
                out = ops.slice_update(out, (0, i), token[:, None])
                return i + 1, token, state, cache, out

            start = (ops.convert_to_tensor(1, "int32"), token, state, cache, out)
            _, _, state, _, out = ops.while_loop(cond, body, start)
            return out, state[4], no_speech

        steps = {"encode": compile_step(encode, variables),
                 "prefill": compile_step(prefill, variables),
                 "decode": compile_step(decode, variables)}
        if keras.backend.backend() != "torch":
            steps["loop"] = compile_step(loop, variables)
        self._steps[key] = steps
        return steps

    # -- public ---------------------------------------------------------------
    def encode(self, features: np.ndarray) -> Any:
        """Cross-attention keys/values of `(batch, num_mels, frames)` features."""
        steps = self._get_steps(samplers.GreedySampler(), DecodingOptions())
        return steps["encode"](np.asarray(features, self.backbone.compute_dtype))

    def decode(self, cross: Any, prompts: list[list[int]], sot_index: int,
               options: DecodingOptions = DecodingOptions(), seed: int = 0) -> DecodingResult:
        """Decode one window per row from equal-length `prompts`.

        Args:
            cross: `encode()`'s output for these rows, or for one row that
                every prompt reads (e.g. several samples of one window).
            prompts: token ids per row, all the same length, each ending with
                the start-of-transcript sequence.
            sot_index: position of <|startoftranscript|> in the prompts (the
                no-speech probability is read there).
            options: decoding options.
            seed: seed of sampling (temperature > 0); rows draw different samples.
        """
        prompt, mask, sot_index, max_new = self._prepare(prompts, sot_index, options)
        batch, padded = prompt.shape
        if batch > 1 and ops.shape(keras.tree.flatten(cross)[0])[0] == 1:
            rows = np.zeros(batch, "int32")
            cross = keras.tree.map_structure(lambda c: ops.take(c, rows, axis=0), cross)
        greedy = options.temperature == 0
        sampler = samplers.GreedySampler() if greedy else samplers.CategoricalSampler()
        steps = self._get_steps(sampler, options)
        cache = self.backbone.init_cache(batch, mask.shape[1])
        sot, seed_ = np.int32(sot_index), np.int32(seed)
        inverse_t = np.float32(1.0 if greedy else 1.0 / options.temperature)
        head = self.task.lm_head.inference_weights()
        if "loop" in steps:
            out, sum_lp, no_speech = steps["loop"](prompt, mask, cache, cross, sot, seed_,
                                                   inverse_t, head)
            out = np.asarray(ops.convert_to_numpy(out), "int32")
        else:
            out, sum_lp, no_speech = self._python_loop(steps, prompt, mask, cache, cross,
                                                       sot, seed_, inverse_t, head, max_new)
        tokens = []
        for row in out:
            ends = np.flatnonzero(row == self.special.eot)
            tokens.append(row[: ends[0] if ends.size else len(row)].tolist())
        return DecodingResult(tokens, np.asarray(ops.convert_to_numpy(sum_lp), "float64"),
                              np.asarray(ops.convert_to_numpy(no_speech), "float64"))

    def _prepare(self, prompts: list[list[int]], sot_index: int, options: DecodingOptions
                 ) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Left-pad the prompts to a bucketed length, so the prompts of
        successive windows (growing with the previous text) share a few
        compiled programs (positions count real tokens only, so padding
        changes no result). Returns prompt, mask, sot index, new tokens."""
        prompt = np.asarray(prompts, "int32")
        batch, length = prompt.shape
        limit = self.backbone.max_decoder_sequence_length
        max_new = min(options.max_new_tokens or limit // 2, limit - length)
        if max_new < 1:
            raise InputError(f"The prompt ({length} tokens) leaves no room in the decoder's "
                             f"context of {limit} tokens. Fix: use a shorter prompt.")
        pad = bucket_length(length, max(limit, length)) - length
        prompt = np.concatenate([np.full((batch, pad), self.special.eot, "int32"), prompt], 1)
        mask = np.ones((batch, prompt.shape[1] + max_new), "int32")
        mask[:, :pad] = 0
        return prompt, mask, sot_index + pad, max_new

    # -- beam search ----------------------------------------------------------
    def _beam_steps(self, options: DecodingOptions, width: int) -> dict:
        variables = self.task.variables
        key = ("beam", options, width, tuple(id(v) for v in variables))
        if key in self._steps:
            return self._steps[key]
        backbone, task, sp = self.backbone, self.task, self.special

        def candidates(hidden: Any, step: Any, last: Any, pen: Any, last_ts: Any,
                       head: tuple) -> Any:
            logits = self._filter(ops.cast(task.logits_from_hidden(hidden, head), "float32"),
                                  step, last, pen, last_ts, options)
            values, indices = ops.top_k(ops.log_softmax(logits, axis=-1), width)
            return values, ops.cast(indices, "int32")

        def prefill(prompt: Any, mask: Any, cache: Any, cross: Any, sot_index: Any,
                    last: Any, pen: Any, last_ts: Any, head: tuple) -> Any:
            hidden, cache = backbone.call_decoder_with_cache(prompt, mask, cache, cross, 0)
            sot_hidden = ops.take(hidden, sot_index, axis=1)
            sot_probs = ops.softmax(ops.cast(task.logits_from_hidden(sot_hidden, head),
                                             "float32"))
            values, indices = candidates(hidden[:, -1, :], ops.convert_to_tensor(0, "int32"),
                                         last, pen, last_ts, head)
            return values, indices, cache, sot_probs[:, sp.no_speech]

        def decode(token: Any, mask: Any, cache: Any, cross: Any, index: Any, step: Any,
                   last: Any, pen: Any, last_ts: Any, head: tuple) -> Any:
            hidden, cache = backbone.call_decoder_with_cache(token[:, None], mask, cache, cross,
                                                             index)
            values, indices = candidates(hidden[:, -1, :], step, last, pen, last_ts, head)
            return values, indices, cache

        steps = {"prefill": compile_step(prefill, variables),
                 "decode": compile_step(decode, variables)}
        self._steps[key] = steps
        return steps

    def beam_decode(self, cross: Any, prompt: list[int], sot_index: int,
                    options: DecodingOptions = DecodingOptions(), beam_size: int = 5,
                    patience: float = 1.0) -> DecodingResult:
        """Beam search over one window (openai-whisper's rules): each step
        extends every live beam by its `beam_size + 1` best tokens, keeps the
        `beam_size` best non-final candidates, and collects candidates ending
        in <|endoftext|> until `beam_size * patience` have ended; the result
        is the ended sequence with the best summed log probability per token.

        Args:
            cross: `encode()`'s output for one window (batch 1).
            prompt: the prompt ids (as for `decode`).
            sot_index: position of <|startoftranscript|> in the prompt.
            options: decoding options (temperature is ignored).
            beam_size: beams kept.
            patience: finished candidates wanted, as a multiple of `beam_size`.
        """
        sp = self.special
        ids, mask, sot, max_new = self._prepare([prompt], sot_index, options)
        rows = np.zeros(beam_size, "int32")
        ids, mask = ids[rows], mask[rows]
        cross = keras.tree.map_structure(lambda c: ops.take(c, rows, axis=0), cross)
        cache = self.backbone.init_cache(beam_size, mask.shape[1])
        steps = self._beam_steps(options, beam_size + 1)
        mask_t = ops.convert_to_tensor(mask)

        def state(seqs: list[list[int]]) -> tuple[np.ndarray, ...]:
            last = np.array([s[-1] if s else -1 for s in seqs], "int32")
            pen = np.array([len(s) < 2 or s[-2] >= sp.timestamp_begin for s in seqs])
            stamps = [[t for t in s if t >= sp.timestamp_begin] for s in seqs]
            return last, pen, np.array([st[-1] if st else -1 for st in stamps], "int32")

        seqs: list[list[int]] = [[] for _ in range(beam_size)]
        scores = np.full(beam_size, -np.inf)
        scores[0] = 0.0  # the beams start identical: expand one
        head = self.task.lm_head.inference_weights()
        values, indices, cache, no_speech = steps["prefill"](ids, mask_t, cache, cross,
                                                             np.int32(sot), *state(seqs), head)
        finished: list[tuple[list[int], float]] = []
        wanted = max(1, round(beam_size * patience))
        for i in range(max_new):
            values = np.asarray(ops.convert_to_numpy(values), "float64")
            indices = np.asarray(ops.convert_to_numpy(indices), "int64")
            ranked = sorted(((scores[b] + values[b, k], b, int(indices[b, k]))
                             for b in range(beam_size) if np.isfinite(scores[b])
                             for k in range(beam_size + 1)), key=lambda c: -c[0])
            kept: list[tuple[float, int, int]] = []
            for score, b, token in ranked:
                if token == sp.eot:
                    if len(finished) < wanted:
                        finished.append((seqs[b], score))
                elif len(kept) < beam_size:
                    kept.append((score, b, token))
            if len(finished) >= wanted or not kept or i == max_new - 1:
                break
            kept += [(-np.inf, kept[0][1], kept[0][2])] * (beam_size - len(kept))
            parents = np.array([b for _, b, _ in kept], "int32")
            seqs = [seqs[b] + [t] for _, b, t in kept]
            scores = np.array([s for s, _, _ in kept])
            cache = keras.tree.map_structure(lambda c: ops.take(c, parents, axis=0), cache)
            tokens = np.array([t for _, _, t in kept], "int32")
            values, indices, cache = steps["decode"](
                tokens, mask_t, cache, cross, np.int32(ids.shape[1] + i), np.int32(i + 1),
                *state(seqs), head)
        if not finished:
            finished = [(seqs[b], scores[b]) for b in range(beam_size) if np.isfinite(scores[b])]
        best, score = max(finished, key=lambda f: f[1] / max(len(f[0]), 1))
        return DecodingResult([list(best)], np.array([score]),
                              np.asarray(ops.convert_to_numpy(no_speech), "float64")[:1])

    def _python_loop(self, steps: dict, prompt: np.ndarray, mask: np.ndarray, cache: Any,
                     cross: Any, sot: np.int32, seed: np.int32, inverse_t: np.float32,
                     head: tuple, max_new: int) -> tuple:
        length = prompt.shape[1]
        mask_t = ops.convert_to_tensor(mask)
        token, state, cache, no_speech = steps["prefill"](prompt, mask_t, cache, cross, sot, seed,
                                                          inverse_t, head)
        out = np.full((prompt.shape[0], max_new), self.special.eot, "int32")
        out[:, 0] = ops.convert_to_numpy(token)
        for i in range(1, max_new):
            if bool(np.all(ops.convert_to_numpy(state[3]))):
                break
            token, state, cache = steps["decode"](token, mask_t, cache, cross,
                                                  np.int32(length + i - 1), np.int32(i),
                                                  state, seed, inverse_t, head)
            out[:, i] = ops.convert_to_numpy(token)
        return out, state[4], no_speech
