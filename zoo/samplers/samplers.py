"""Token samplers: pure functions from logits to the next token ids.

Randomness comes from a counter-based hash of `(seed, step, row, token)` in
int32 `keras.ops`, so sampling is reproducible run to run and identical on
JAX, TensorFlow and PyTorch, and needs no random state inside compiled loops.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from keras import ops


def _mix(x: Any) -> Any:
    """A 32-bit integer hash (xorshift-multiply), in wrapping int32 arithmetic."""
    x = ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 16), 0xFFFF))
    x = x * 0x7FEB352D
    x = ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 15), 0x1FFFF))
    x = x * -2069978485  # 0x846CA68B as int32
    return ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 16), 0xFFFF))


def uniform_noise(seed: Any, step: Any, shape: tuple[int, int]) -> Any:
    """Uniform floats in (0, 1) of `shape` (batch, vocabulary), fixed by (seed, step)."""
    rows = ops.arange(shape[0], dtype="int32")[:, None] * shape[1]
    counter = rows + ops.arange(shape[1], dtype="int32")[None, :]
    key = _mix(ops.cast(seed, "int32") * 1000003 + ops.cast(step, "int32"))
    bits = _mix(counter + key)
    # 23 random bits: (m + 0.5) / 2**23 is exact in float32 and at most
    # 1 - 2**-24, so u never rounds to 1.0 (24 bits did, once in 2**24 draws:
    # an infinite Gumbel value that picked a filtered-out token).
    mantissa = ops.cast(ops.bitwise_and(ops.right_shift(bits, 9), 0x7FFFFF), "float32")
    return (mantissa + 0.5) / 8388608.0


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Base sampler: samples from the (filtered) softmax of `logits / temperature`."""

    # Divide logits by this before sampling; lower is greedier.
    temperature: float = 1.0

    def filter(self, logits: Any) -> Any:
        """Return logits with excluded tokens set to -inf (subclasses)."""
        return logits

    def __call__(self, logits: Any, seed: Any, step: Any) -> Any:
        """Next token ids `(batch,)` from float32 logits `(batch, vocabulary)`."""
        logits = self.filter(ops.cast(logits, "float32") / self.temperature)
        u = uniform_noise(seed, step, tuple(logits.shape))
        gumbel = -ops.log(-ops.log(u))  # argmax(logits + Gumbel) ~ softmax(logits)
        return ops.cast(ops.argmax(logits + gumbel, axis=-1), "int32")


@dataclasses.dataclass(frozen=True)
class GreedySampler(Sampler):
    """Always the most likely token (temperature is irrelevant)."""

    def __call__(self, logits: Any, seed: Any, step: Any) -> Any:
        return ops.cast(ops.argmax(logits, axis=-1), "int32")


@dataclasses.dataclass(frozen=True)
class RandomSampler(Sampler):
    """Sample from the whole distribution."""


@dataclasses.dataclass(frozen=True)
class CategoricalSampler(Sampler):
    """Samples `softmax(logits)` by inverting its cumulative distribution,
    with one `uniform_noise` value per row (reproducible and the
    same on every backend, like zoo's samplers).

    One uniform per row instead of Gumbel noise per vocabulary entry: the
    noise hash over a 51,864-token vocabulary (Whisper's) cost a third of a
    sampling step.
    A token the logit rules forbid (probability 0) is never picked, whatever
    the uniform (Gumbel-max breaks there: in float32 the largest noise value
    rounds to 1.0, whose Gumbel noise is +inf and beats any logit).
    """

    def __call__(self, logits: Any, seed: Any, step: Any) -> Any:
        logits = ops.cast(logits, "float32")
        probs = ops.softmax(logits, axis=-1)  # (batch, vocabulary)
        cdf = ops.cumsum(probs, axis=-1)
        uniform = uniform_noise(seed, step, (tuple(logits.shape)[0], 1))
        target = uniform * cdf[:, -1:]  # (batch, 1)
        index = ops.minimum(ops.sum(ops.cast(cdf <= target, "int32"), axis=-1),
                            ops.shape(logits)[-1] - 1)
        allowed = ops.take_along_axis(probs, index[:, None], axis=1)[:, 0] > 0
        return ops.cast(ops.where(allowed, index, ops.argmax(logits, axis=-1)), "int32")


@dataclasses.dataclass(frozen=True)
class TopKSampler(Sampler):
    """Sample among the `k` most likely tokens."""

    # Number of candidate tokens kept.
    k: int = 5

    def filter(self, logits: Any) -> Any:
        kth = ops.top_k(logits, self.k, sorted=True)[0][:, -1:]
        return ops.where(logits >= kth, logits, -float("inf"))


@dataclasses.dataclass(frozen=True)
class TopPSampler(Sampler):
    """Nucleus sampling: the smallest set of tokens whose probability reaches `p`."""

    # Cumulative probability kept.
    p: float = 0.9

    def filter(self, logits: Any) -> Any:
        ordered = -ops.sort(-logits, axis=-1)  # descending
        probs = ops.softmax(ordered, axis=-1)
        before = ops.cumsum(probs, axis=-1) - probs  # mass of strictly better tokens
        cutoff = ops.min(ops.where(before < self.p, ordered, float("inf")), axis=-1,
                         keepdims=True)
        return ops.where(logits >= cutoff, logits, -float("inf"))


def get(sampler: str | Sampler | BeamSampler) -> Sampler | BeamSampler:
    """A sampler from a name (`"greedy"`, `"random"`, `"top_k"`, `"top_p"`,
    `"beam"`) or an instance."""
    if isinstance(sampler, (Sampler, BeamSampler)):
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; use one of {sorted(SAMPLERS)} "
                         "or a zoo.samplers.Sampler instance.")
    return SAMPLERS[sampler]()


@dataclasses.dataclass(frozen=True)
class BeamSampler:
    """Beam search: keep the `num_beams` most likely continuations.

    Scores are summed log-probabilities. A beam that emits a stop token is
    finished; the result per prompt is the finished or running beam with the
    best score divided by `generated_length ** length_penalty`. Without stop
    tokens this is exactly transformers' beam search.
    """

    # Number of beams kept per prompt.
    num_beams: int = 3
    # Exponent of the length normalisation of finished beams.
    length_penalty: float = 1.0

    def __call__(self, logits: Any, seed: Any, step: Any) -> Any:
        """Top `2 * num_beams` log-probabilities and their token ids per row."""
        return beam_candidates(logits, 2 * self.num_beams)


def beam_candidates(logits: Any, k: int) -> tuple[Any, Any]:
    """The `k` best log-probabilities per row (descending) and their token
    ids (int32): what each beam proposes in a beam-search step."""
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    values, indices = ops.top_k(log_probs, k, sorted=True)
    return values, ops.cast(indices, "int32")


SAMPLERS = {"greedy": GreedySampler, "random": RandomSampler, "top_k": TopKSampler,
            "top_p": TopPSampler, "beam": BeamSampler}
