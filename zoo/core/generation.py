"""One generation engine for every decoder: OPT's `generate` and Whisper's decoding.

A family describes its decoder with two functions of tensors, and the engine
does everything else, once:

- `forward(tokens, mask, cache, index, context) -> (hidden, cache)`: run
  `tokens` (`(batch, n)`, written at cache position `index`) through the
  decoder over an explicit key/value cache;
- `logits(hidden, context) -> logits`: the head, on the last hidden state
  `(batch, hidden_dim)`;
- (optional) `prefill_outputs(hidden, context) -> tuple`: tensors read once
  from the prompt's hidden states (Whisper's no-speech probability).

`context` is whatever the decoder reads at every step (Whisper's
cross-attention keys and values, a faster layout of the head's weights): a
structure of tensors passed through unchanged.

How the next token is picked is a `TokenRule`: a sampler, plus the logit
rules and per-row state a family needs (Whisper's timestamp rules and summed
log probability). Stop tokens and the id written after a row stops are
runtime inputs.

What the engine owns:
- compiled `prefill` and `decode` steps, cached per rule and per set of
  variables (adding LoRA adapters after a first call builds fresh steps);
- on JAX and TensorFlow, the whole generation as one compiled program
  (prefill, then a while loop of decode steps that ends when every row has
  stopped); on PyTorch and when the caller streams tokens, one compiled
  (traced) step per token in a Python loop (see `zoo/core/compiled_loop.py`);
- beam search (`beam_search`): compiled steps return each beam's best
  candidates, the bookkeeping runs on the host under a `BeamPolicy`
  (transformers' rules or openai-whisper's / CTranslate2's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from zoo import samplers
from zoo.core.compiled_loop import CompiledStep, compile_step, has_compiled_loops
from zoo.core.processes import host_value

Forward = Callable[[Any, Any, Any, Any, Any], tuple[Any, Any]]


@dataclasses.dataclass(frozen=True)
class TokenRule:
    """How the next token is chosen from a step's logits.

    The default draws from `sampler` at the generated token's position (so a
    seed gives the same tokens whatever the prompt's padding); subclasses add
    logit rules (`filter`) and per-row state (`start`, `choose`, `beam_state`).
    Rules are frozen dataclasses: they key the cache of compiled steps.
    """

    # Draws the token from the (filtered) logits.
    sampler: samplers.Sampler = samplers.GreedySampler()

    def start(self, batch: Any) -> tuple:
        """The per-row state before the first token (tensors; default none)."""
        return ()

    def filter(self, logits: Any, state: tuple, step: Any) -> Any:
        """`logits` (float32) with forbidden tokens pushed down (default: all allowed)."""
        return logits

    def choose(self, logits: Any, state: tuple, done: Any, step: Any, position: Any,
               seed: Any, params: Any) -> tuple[Any, tuple]:
        """The next token per row `(batch,)` int32 and the updated state.

        Args:
            logits: `(batch, vocabulary)`.
            state: the rule's per-row state.
            done: `(batch,)` bool, rows that have already stopped (their token
                is replaced by the fill id afterwards).
            step: how many tokens were generated before this one (int32 scalar).
            position: the new token's position in the sequence (prompt
                length plus `step`).
            seed: the sampling seed.
            params: runtime values of the rule (e.g. an inverse temperature).
        """
        return self.sampler(self.filter(ops.cast(logits, "float32"), state, step), seed,
                            position), state

    def beam_state(self, sequences: Sequence[Sequence[int]]) -> tuple:
        """The state `filter` reads, per beam, from each beam's tokens so far
        (numpy; beam search keeps no state on the device). Default none."""
        return ()


@dataclasses.dataclass(frozen=True)
class BeamPolicy:
    """How beam search ranks, stops and picks.

    Every step each live beam proposes its `candidates` best tokens; per
    prompt the candidates are ranked by summed log probability, a candidate
    ending in a stop token becomes a finished hypothesis, and the `beams`
    best others live on. A hypothesis is scored by its summed log
    probability over `length ** length_penalty` (at least 1), where the
    length counts the stop token when `count_stop_token`.

    With `finished_wanted=None` (transformers' rules) the search runs the
    whole `max_new` steps, only candidates ranked above the last kept beam
    can finish, and the answer is the best of the finished and the
    surviving beams. With a number (openai-whisper's and CTranslate2's), a
    prompt is done once that many hypotheses finished (candidates ranked
    below the kept beams count too), and surviving beams count only when
    none finished.
    """

    beams: int
    candidates: int
    length_penalty: float = 1.0
    finished_wanted: int | None = None
    count_stop_token: bool = True

    def normalized(self, score: float, length: int) -> float:
        return score / max(length, 1) ** self.length_penalty


@dataclasses.dataclass
class Generated:
    """What `Generator.generate` returns (numpy)."""

    # (batch, max_new) int32; the fill id after a row stopped.
    tokens: np.ndarray
    # The rule's final per-row state.
    state: tuple
    # `prefill_outputs`.
    prefill: tuple


@dataclasses.dataclass
class Hypothesis:
    """The answer of beam search for one prompt."""

    # Generated ids, without the stop token.
    tokens: list[int]
    # The stop token that ended it (None: it ran to `max_new`).
    stop: int | None
    # Summed log probability (the stop token included).
    score: float


class Generator:
    """The compiled generation of one model (see the module docstring).

    Args:
        model: the Keras model whose variables the steps read.
        forward: the decoder over an explicit cache.
        logits: the head.
        prefill_outputs: extra outputs read from the prompt's hidden states.

    Example (a `CausalLM` builds its own as `lm.generator`):

    >>> import numpy as np
    >>> from keras import ops
    >>> table = np.eye(4, dtype="float32")[[1, 2, 3, 0]]  # a toy decoder: i -> i + 1
    >>> def forward(tokens, mask, cache, index, context):
    ...     return ops.take(table, tokens, axis=0), cache  # hidden = one-hot of the next
    >>> engine = Generator(keras.Sequential(), forward, lambda hidden, context: hidden)
    >>> ids = np.array([[0, 1]], "int32")
    >>> engine.generate(TokenRule(), ids, np.ones((1, 5), "int32"), (), (), stops=[0],
    ...                 fill=-1).tokens
    array([[2, 3, 0]], dtype=int32)
    """

    def __init__(self, model: keras.Model, forward: Forward,
                 logits: Callable[[Any, Any], Any],
                 prefill_outputs: Callable[[Any, Any], tuple] | None = None) -> None:
        self.model = model
        self.forward = forward
        self.logits = logits
        self.prefill_outputs = prefill_outputs or (lambda hidden, context: ())
        self._compiled: dict[tuple, dict[str, CompiledStep]] = {}

    def compiled_steps(self) -> dict[str, CompiledStep]:
        """Every compiled step so far, by `"<rule> <name>"` (for tests that
        count traces)."""
        return {f"{key[0]!r} {key[1]} {name}": step
                for key, steps in self._compiled.items() for name, step in steps.items()}

    def _cached(self, key: tuple, build: Callable[[], dict[str, Callable]]
                ) -> dict[str, CompiledStep]:
        variables = self.model.variables
        key = key + (tuple(id(v) for v in variables),)
        if key not in self._compiled:
            self._compiled[key] = {name: compile_step(fn, variables)
                                   for name, fn in build().items()}
        return self._compiled[key]

    # -- sampling -------------------------------------------------------------
    def _sampling_steps(self, rule: TokenRule) -> dict[str, CompiledStep]:
        def prefill(tokens: Any, mask: Any, cache: Any, context: Any, stops: Any, fill: Any,
                    seed: Any, params: Any) -> tuple:
            hidden, cache = self.forward(tokens, mask, cache, 0, context)
            logits = self.logits(hidden[:, -1, :], context)
            batch, length = ops.shape(tokens)
            done = ops.zeros((batch,), "bool")
            token, state = rule.choose(logits, rule.start(batch), done,
                                       ops.convert_to_tensor(0, "int32"),
                                       ops.convert_to_tensor(length, "int32"), seed, params)
            token, done = _stopped(token, done, stops, fill)
            return token, done, state, cache, self.prefill_outputs(hidden, context)

        def decode(token: Any, mask: Any, cache: Any, index: Any, step: Any, done: Any,
                   state: tuple, context: Any, stops: Any, fill: Any, seed: Any,
                   params: Any) -> tuple:
            hidden, cache = self.forward(token[:, None], mask, cache, index, context)
            logits = self.logits(hidden[:, -1, :], context)
            token, state = rule.choose(logits, state, done, step, index + 1, seed, params)
            token, done = _stopped(token, done, stops, fill)
            return token, done, state, cache

        def loop(tokens: Any, mask: Any, cache: Any, context: Any, stops: Any, fill: Any,
                 seed: Any, params: Any) -> tuple:
            batch, length = ops.shape(tokens)
            max_new = ops.shape(mask)[1] - length
            token, done, state, cache, extra = prefill(tokens, mask, cache, context, stops,
                                                       fill, seed, params)
            out = ops.full((batch, max_new), fill, dtype="int32")
            out = ops.slice_update(out, (0, 0), token[:, None])

            def cond(i: Any, token: Any, done: Any, state: tuple, cache: Any, out: Any) -> Any:
                return ops.logical_and(i < max_new, ops.logical_not(ops.all(done)))

            def body(i: Any, token: Any, done: Any, state: tuple, cache: Any, out: Any
                     ) -> tuple:
                token, done, state, cache = decode(token, mask, cache, length + i - 1, i, done,
                                                   state, context, stops, fill, seed, params)
                out = ops.slice_update(out, (0, i), token[:, None])
                return i + 1, token, done, state, cache, out

            start = (ops.convert_to_tensor(1, "int32"), token, done, state, cache, out)
            _, _, _, state, _, out = ops.while_loop(cond, body, start)
            return out, state, extra

        def build() -> dict[str, Callable]:
            steps: dict[str, Callable] = {"prefill": prefill, "decode": decode}
            if has_compiled_loops():
                steps["loop"] = loop
            return steps

        return self._cached((rule, "sample"), build)

    def generate(self, rule: TokenRule, tokens: np.ndarray, mask: np.ndarray, cache: Any,
                 context: Any, stops: Sequence[int], fill: int, seed: int = 0,
                 params: Any = (), stream: Callable[[np.ndarray], None] | None = None
                 ) -> Generated:
        """Generate `mask.shape[1] - tokens.shape[1]` tokens per row.

        Args:
            rule: picks each token.
            tokens: `(batch, length)` int32 prompts, left-padded.
            mask: `(batch, length + max_new)`: the prompts' padding mask, then ones.
            cache: an empty cache for `batch` rows and `mask.shape[1]` positions.
            context: what `forward` and `logits` read at every step.
            stops: a row stops once it produces one of these.
            fill: the id written after a row stopped.
            seed: sampling seed.
            params: the rule's runtime values.
            stream: called with each step's new ids `(batch,)`; streaming (and
                PyTorch) runs one compiled step per token.
        """
        steps = self._sampling_steps(rule)
        stops_ = np.asarray(list(stops), "int32")
        fill_, seed_ = np.int32(fill), np.int32(seed)
        if stream is None and "loop" in steps:
            out, state, extra = steps["loop"](tokens, mask, cache, context, stops_, fill_,
                                              seed_, params)
            return Generated(np.asarray(host_value(out), "int32"),
                             _to_numpy(state), _to_numpy(extra))
        batch, length = tokens.shape
        max_new = mask.shape[1] - length
        mask = ops.convert_to_tensor(mask)
        token, done_t, state, cache, extra = steps["prefill"](tokens, mask, cache, context,
                                                              stops_, fill_, seed_, params)
        out = np.full((batch, max_new), fill, "int32")
        done = np.zeros(batch, bool)  # mirrors done_t, without reading it back
        for i in range(max_new):
            if i:
                token, done_t, state, cache = steps["decode"](
                    token, mask, cache, np.int32(length + i - 1), np.int32(i), done_t, state,
                    context, stops_, fill_, seed_, params)
            new = np.asarray(host_value(token), "int32")
            out[:, i] = new
            done |= np.isin(new, stops_)
            if stream is not None:
                stream(new.copy())
            if done.all():
                break
        return Generated(out, _to_numpy(state), _to_numpy(extra))

    # -- beam search ----------------------------------------------------------
    def _beam_steps(self, rule: TokenRule, width: int) -> dict[str, CompiledStep]:
        def candidates(hidden: Any, state: tuple, step: Any, context: Any) -> tuple:
            logits = rule.filter(ops.cast(self.logits(hidden, context), "float32"), state, step)
            return samplers.beam_candidates(logits, width)

        def prefill(tokens: Any, mask: Any, cache: Any, state: tuple, context: Any) -> tuple:
            hidden, cache = self.forward(tokens, mask, cache, 0, context)
            values, indices = candidates(hidden[:, -1, :], state,
                                         ops.convert_to_tensor(0, "int32"), context)
            return values, indices, cache, self.prefill_outputs(hidden, context)

        def decode(token: Any, mask: Any, cache: Any, index: Any, step: Any, state: tuple,
                   context: Any) -> tuple:
            hidden, cache = self.forward(token[:, None], mask, cache, index, context)
            values, indices = candidates(hidden[:, -1, :], state, step, context)
            return values, indices, cache

        return self._cached((rule, "beam", width),
                            lambda: {"prefill": prefill, "decode": decode})

    def beam_search(self, rule: TokenRule, policy: BeamPolicy, tokens: np.ndarray,
                    mask: np.ndarray, new_cache: Callable[[int], Any], context: Any,
                    stops: Sequence[int], fill: int,
                    stream: Callable[[np.ndarray], None] | None = None
                    ) -> tuple[list[Hypothesis], tuple]:
        """Beam search for each prompt; returns its best hypothesis per prompt
        and `prefill_outputs` (one row per beam).

        Args:
            rule: its `filter` (and `beam_state`) shape the candidates.
            policy: beams, candidates and the ranking rules.
            tokens: `(batch, length)` prompts; each is repeated `policy.beams`
                times (beam `b` of prompt `p` is row `p * beams + b`).
            mask: `(batch, length + max_new)`.
            new_cache: builds an empty cache for a number of rows.
            context: as for `generate`, already with `batch * beams` rows
                where it has a batch axis.
            stops: tokens that end a hypothesis.
            fill: the token fed to rows without a live beam.
            stream: called each step with the newest token of every prompt's
                best live beam (`fill` when none lives).
        """
        batch, length = tokens.shape
        max_new = mask.shape[1] - length
        beams, width = policy.beams, policy.candidates
        wanted = policy.finished_wanted
        steps = self._beam_steps(rule, width)
        rows = np.repeat(np.arange(batch), beams)
        mask_t = ops.convert_to_tensor(mask[rows])
        stop_set = {int(s) for s in stops}
        sequences: list[list[int]] = [[] for _ in range(batch * beams)]
        scores = np.full((batch, beams), -np.inf)
        scores[:, 0] = 0.0  # a prompt's beams start identical: expand one
        finished: list[list[tuple[float, Hypothesis]]] = [[] for _ in range(batch)]
        live = np.ones(batch, bool)
        values, indices, cache, extra = steps["prefill"](
            tokens[rows], mask_t, new_cache(batch * beams), rule.beam_state(sequences), context)
        for i in range(max_new):
            values = np.asarray(host_value(values), "float64").reshape(batch, beams, -1)
            indices = np.asarray(host_value(indices), "int64").reshape(batch, beams, -1)
            parents = np.zeros((batch, beams), "int64")
            chosen = np.full((batch, beams), fill, "int32")
            kept_scores = np.full((batch, beams), -np.inf)
            for p in np.flatnonzero(live):
                ranked = sorted(((scores[p, b] + values[p, b, c], b, int(indices[p, b, c]))
                                 for b in range(beams) if np.isfinite(scores[p, b])
                                 for c in range(width)), key=lambda r: -r[0])
                kept = 0
                for total, b, token in ranked:
                    if token in stop_set:
                        if wanted is None or len(finished[p]) < wanted:
                            seq = sequences[p * beams + b]
                            length_ = len(seq) + int(policy.count_stop_token)
                            finished[p].append((policy.normalized(total, length_),
                                                Hypothesis(list(seq), token, total)))
                    elif kept < beams:
                        parents[p, kept], chosen[p, kept] = b, token
                        kept_scores[p, kept] = total
                        kept += 1
                    if kept == beams and (wanted is None or len(finished[p]) >= wanted):
                        break
                if kept == 0 or (wanted is not None and len(finished[p]) >= wanted):
                    live[p] = False
                parents[p, kept:] = parents[p, 0]  # dead slots: any valid parent
            flat = (np.arange(batch)[:, None] * beams + parents).reshape(-1)
            sequences = [sequences[r] + [int(t)] for r, t in zip(flat, chosen.reshape(-1))]
            scores = kept_scores
            if stream is not None:
                stream(chosen[:, 0].copy())
            if not live.any() or i == max_new - 1:
                break
            cache = keras.tree.map_structure(lambda c: ops.take(c, flat.astype("int32"), axis=0),
                                             cache)
            values, indices, cache = steps["decode"](
                chosen.reshape(-1), mask_t, cache, np.int32(length + i), np.int32(i + 1),
                rule.beam_state(sequences), context)
        best = []
        for p in range(batch):
            pool = list(finished[p])
            if wanted is None or not pool:
                pool += [(policy.normalized(scores[p, b], len(sequences[p * beams + b])),
                          Hypothesis(sequences[p * beams + b], None, float(scores[p, b])))
                         for b in range(beams) if np.isfinite(scores[p, b])]
            best.append(max(pool, key=lambda item: item[0])[1])
        return best, _to_numpy(extra)


def _stopped(token: Any, done: Any, stops: Any, fill: Any) -> tuple[Any, Any]:
    """The fill id where a row had stopped, and which rows have stopped now."""
    token = ops.where(done, fill, ops.cast(token, "int32"))
    hit = ops.any(ops.equal(token[:, None], stops[None, :]), axis=1)
    return token, ops.logical_or(done, hit)


def _to_numpy(tree: Any) -> Any:
    return keras.tree.map_structure(lambda t: np.asarray(host_value(t)), tree)
