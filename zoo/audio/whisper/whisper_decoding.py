"""Whisper decoding: compiled steps over an explicit cache, with Whisper's logit rules.

One window of audio is encoded once; its cross-attention keys and values
(per decoder layer) are computed once too and then read by every decoding
step. The prompt (previous text, start of transcript, language, task) goes
through the decoder in one prefill call; then one token per step. The loop
itself is zoo's generation engine (`zoo/core/generation.py`, shared with
OPT): on JAX and TensorFlow the whole decode is one compiled program, on
PyTorch a traced step runs per token; beam search is the engine's under
openai-whisper's ranking rules. This module adds Whisper's logit rules as a
`TokenRule`.

The logit rules are openai-whisper's and CTranslate2's: suppressed tokens,
a blank/end suppression at the first step, and the timestamp rules
(timestamps in pairs, never decreasing, a first timestamp no later than
`max_initial_timestamp`, and a timestamp whenever all timestamps together
are more likely than any single text token).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from zoo import samplers
from zoo.core.compiled_loop import CompiledStep, compile_step
from zoo.core.errors import InputError
from zoo.core.generation import BeamPolicy, Generator, TokenRule
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


@dataclasses.dataclass(frozen=True)
class WhisperRule(TokenRule):
    """Whisper's logit rules and scoring, as the generation engine's token rule.

    The per-row state is `(last, penultimate_ts, last_ts, sum_logprob)`:
    the previous token, whether the one before it was a timestamp (True at
    step 1), the latest timestamp token (-1: none yet), and the summed log
    probability of the row's tokens. `params` is 1 / temperature (a runtime
    input, so every temperature shares one compiled program).
    """

    special: SpecialTokens | None = None
    options: DecodingOptions = DecodingOptions()

    def start(self, batch: Any) -> tuple:
        return (ops.full((batch,), -1, "int32"), ops.ones((batch,), "bool"),
                ops.full((batch,), -1, "int32"), ops.zeros((batch,), "float32"))

    def filter(self, logits: Any, state: tuple, step: Any) -> Any:
        """Logits with every forbidden token at -1e9 (`(batch, vocabulary)`)."""
        sp, options = self.special, self.options
        last, penultimate_ts, last_ts = state[:3]
        ids = ops.arange(sp.vocabulary_size, dtype="int32")[None, :]
        first = ops.equal(step, 0)
        size = sp.vocabulary_size
        disable = ops.convert_to_tensor(_mask(sp.suppress + (sp.no_timestamps,), size))[None, :]
        if options.suppress_blank:
            begin = ops.convert_to_tensor(_mask(sp.suppress_begin, size))[None, :]
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

    def choose(self, logits: Any, state: tuple, done: Any, step: Any, position: Any,
               seed: Any, params: Any) -> tuple[Any, tuple]:
        """The sampler draws from `softmax(logits * params)`, but the summed
        log probability is of the untempered distribution, as CTranslate2
        scores sampled tokens (faster-whisper's `avg_logprob`)."""
        last, penultimate_ts, last_ts, sum_lp = state
        logits = self.filter(ops.cast(logits, "float32"), state, step)
        token = self.sampler(logits * params, seed, step)
        log_probs = ops.log_softmax(logits, axis=-1)
        picked = ops.take_along_axis(log_probs, token[:, None], axis=1)[:, 0]
        begin = self.special.timestamp_begin
        is_ts = token >= begin
        return token, (
            ops.where(done, last, token),
            ops.where(done, penultimate_ts, ops.logical_or(ops.equal(step, 0), last >= begin)),
            ops.where(ops.logical_and(ops.logical_not(done), is_ts), token, last_ts),
            sum_lp + ops.where(done, 0.0, picked),
        )

    def beam_state(self, sequences: Any) -> tuple:
        begin = self.special.timestamp_begin
        last = np.array([s[-1] if s else -1 for s in sequences], "int32")
        pen = np.array([len(s) < 2 or s[-2] >= begin for s in sequences])
        stamps = [[t for t in s if t >= begin] for s in sequences]
        last_ts = np.array([st[-1] if st else -1 for st in stamps], "int32")
        return last, pen, last_ts, np.zeros(len(sequences), "float32")


class WhisperDecoder:
    """Encoding and decoding of one `WhisperAudioToText` model.

    Args:
        task: the `WhisperAudioToText` whose backbone and head run.
        special: token ids of the logit rules.
    """

    def __init__(self, task: Any, special: SpecialTokens) -> None:
        self.task = task
        self.backbone = task.backbone
        self.special = special
        self._encoders: dict[tuple, CompiledStep] = {}
        backbone = task.backbone

        def forward(tokens: Any, mask: Any, cache: Any, index: Any, context: tuple) -> Any:
            return backbone.call_decoder_with_cache(tokens, mask, cache, context[0], index)

        def logits(hidden: Any, context: tuple) -> Any:
            return task.logits_from_hidden(hidden, context[2])

        def no_speech(hidden: Any, context: tuple) -> tuple:
            sot_hidden = ops.take(hidden, context[1], axis=1)
            probs = ops.softmax(ops.cast(logits(sot_hidden, context), "float32"))
            return (probs[:, special.no_speech],)

        self.generator = Generator(task, forward, logits, no_speech)

    def _rule(self, options: DecodingOptions, sampler: samplers.Sampler) -> WhisperRule:
        # the temperature is a runtime input: one rule (and program) for all
        return WhisperRule(sampler, self.special, dataclasses.replace(options, temperature=0.0))

    # -- public ---------------------------------------------------------------
    def encode(self, features: np.ndarray) -> Any:
        """Cross-attention keys/values of `(batch, num_mels, frames)` features."""
        variables = self.task.variables
        key = tuple(id(v) for v in variables)
        if key not in self._encoders:
            backbone = self.backbone
            self._encoders[key] = compile_step(
                lambda f: backbone.cross_key_values(backbone.encode(f)), variables)
        return self._encoders[key](np.asarray(features, self.backbone.compute_dtype))

    def decode(self, cross: Any, prompts: list[list[int]], sot_index: int | Sequence[int],
               options: DecodingOptions = DecodingOptions(), seed: int = 0) -> DecodingResult:
        """Decode one window per row from `prompts`, each row stopping at its own end.

        Args:
            cross: `encode()`'s output for these rows, or for one row that
                every prompt reads (e.g. several samples of one window).
            prompts: token ids per row, each ending with the same-length
                start-of-transcript sequence (lengths may differ: shorter
                rows are padded on the left).
            sot_index: position of <|startoftranscript|> in the prompts, or
                in each prompt (the no-speech probability is read there).
            options: decoding options.
            seed: seed of sampling (temperature > 0); rows draw different samples.
        """
        prompt, mask, sot_index = self._prepare(prompts, sot_index, options)
        batch = prompt.shape[0]
        if batch > 1 and ops.shape(keras.tree.flatten(cross)[0])[0] == 1:
            cross = _rows(cross, np.zeros(batch, "int32"))
        greedy = options.temperature == 0
        sampler = samplers.GreedySampler() if greedy else samplers.CategoricalSampler()
        inverse_t = np.float32(1.0 if greedy else 1.0 / options.temperature)
        context = (cross, np.int32(sot_index), self.task.lm_head.inference_weights())
        eot = self.special.eot
        result = self.generator.generate(
            self._rule(options, sampler), prompt, mask,
            self.backbone.init_cache(batch, mask.shape[1]), context, [eot], eot, seed=seed,
            params=inverse_t)
        tokens = []
        for row in result.tokens:
            ends = np.flatnonzero(row == eot)
            tokens.append(row[: ends[0] if ends.size else len(row)].tolist())
        return DecodingResult(tokens, np.asarray(result.state[3], "float64"),
                              np.asarray(result.prefill[0], "float64"))

    def _prepare(self, prompts: list[list[int]], sot_index: int | Sequence[int],
                 options: DecodingOptions) -> tuple[np.ndarray, np.ndarray, int]:
        """Left-pad the prompts to a bucketed length, so the prompts of
        successive windows (growing with the previous text) share a few
        compiled programs (positions count real tokens only, so padding
        changes no result), and extend the mask over the tokens to generate.
        Prompts of different lengths (several recordings' windows decoded
        together) are each padded on the left; their <|startoftranscript|>
        must sit equally far from their ends. Returns prompt, mask and the
        sot index."""
        sot = [sot_index] * len(prompts) if isinstance(sot_index, (int, np.integer)) else list(
            sot_index)
        lengths = [len(p) for p in prompts]
        from_end = {n - i for n, i in zip(lengths, sot)}
        if len(from_end) != 1:
            raise ValueError("decode(): every prompt must end with a start-of-transcript "
                             f"sequence of the same length, got offsets {sorted(from_end)}")
        batch, length = len(prompts), max(lengths)
        limit = self.backbone.max_decoder_sequence_length
        max_new = min(options.max_new_tokens or limit // 2, limit - length)
        if max_new < 1:
            raise InputError(f"The prompt ({length} tokens) leaves no room in the decoder's "
                             f"context of {limit} tokens. Fix: use a shorter prompt.")
        padded = bucket_length(length, max(limit, length))
        prompt = np.full((batch, padded), self.special.eot, "int32")
        mask = np.ones((batch, padded + max_new), "int32")
        for row, ids in enumerate(prompts):
            prompt[row, padded - len(ids):] = ids
            mask[row, :padded - len(ids)] = 0
        return prompt, mask, padded - from_end.pop()

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
        ids, mask, sot = self._prepare([prompt], sot_index, options)
        policy = BeamPolicy(beams=beam_size, candidates=beam_size + 1,
                            finished_wanted=max(1, round(beam_size * patience)),
                            count_stop_token=False)
        context = (_rows(cross, np.zeros(beam_size, "int32")), np.int32(sot),
                   self.task.lm_head.inference_weights())
        eot = self.special.eot
        (best,), (no_speech,) = self.generator.beam_search(
            self._rule(options, samplers.GreedySampler()), policy, ids, mask,
            lambda rows: self.backbone.init_cache(rows, mask.shape[1]), context, [eot], eot)
        return DecodingResult([best.tokens], np.array([best.score]),
                              np.asarray(no_speech, "float64")[:1])


def _rows(tree: Any, rows: np.ndarray) -> Any:
    """Every tensor of `tree` at batch rows `rows`."""
    return keras.tree.map_structure(lambda c: ops.take(c, rows, axis=0), tree)
