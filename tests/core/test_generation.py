"""The generation engine on a toy decoder whose answers can be enumerated.

The toy decoder is a bigram table: the next token's logits depend only on
the last token. Greedy decoding is then a numpy walk, and beam search with
more beams than there are live sequences is exhaustive, so it must return the
best sequence over all of them under the policy's scoring. The tables are
random (several seeds), so the cases are not hand-picked.
"""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from zoo.core.generation import BeamPolicy, Generator, TokenRule

VOCAB = 4


def bigram_engine(table):
    def forward(tokens, mask, cache, index, context):
        return ops.take(ops.convert_to_tensor(table), tokens, axis=0), cache

    return Generator(keras.Sequential(), forward, lambda hidden, context: hidden)


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def exhaustive_best(table, first, stops, max_new, policy):
    """The best hypothesis by brute force: every sequence that ends at its
    first stop token, and every stop-free sequence of `max_new` tokens."""
    lp = log_softmax(table.astype("float64"))
    finished, survivors = [], []
    for length in range(1, max_new + 1):
        for seq in itertools.product(range(VOCAB), repeat=length):
            if any(t in stops for t in seq[:-1]):
                continue
            prev, score = first, 0.0
            for t in seq:
                score, prev = score + lp[prev, t], t
            if seq[-1] in stops:
                counted = length if policy.count_stop_token else length - 1
                finished.append((policy.normalized(score, counted), list(seq[:-1]), seq[-1]))
            elif length == max_new:
                survivors.append((policy.normalized(score, length), list(seq), None))
    pool = finished if policy.finished_wanted is not None and finished else finished + survivors
    best = max(pool, key=lambda item: item[0])
    return best[1], best[2]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("policy", [
    BeamPolicy(beams=64, candidates=VOCAB, length_penalty=1.3),  # transformers' rules
    BeamPolicy(beams=64, candidates=VOCAB, finished_wanted=10_000, count_stop_token=False),
], ids=["transformers", "whisper"])
def test_exhaustive_beam_search_finds_the_best_sequence(seed, policy):
    rng = np.random.default_rng(seed)
    table = rng.normal(scale=2.0, size=(VOCAB, VOCAB)).astype("float32")
    prompts = np.array([[1, 2], [0, 3]], "int32")
    stops, max_new = [int(rng.integers(VOCAB))], 3
    table[:, stops[0]] += seed % 3  # from rarely stopping to mostly stopping
    engine = bigram_engine(table)
    best, _ = engine.beam_search(TokenRule(), policy, prompts,
                                 np.ones((2, 2 + max_new), "int32"), lambda rows: (), (),
                                 stops, fill=0)
    for row, hypothesis in enumerate(best):
        tokens, stop = exhaustive_best(table, prompts[row, -1], stops, max_new, policy)
        assert (hypothesis.tokens, hypothesis.stop) == (tokens, stop)


@pytest.mark.parametrize("seed", range(3))
def test_greedy_generation_equals_a_numpy_walk_on_every_path(seed):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(VOCAB, VOCAB)).astype("float32")
    prompts = rng.integers(0, VOCAB, size=(3, 2)).astype("int32")
    stops, fill, max_new = [int(rng.integers(VOCAB))], -1, 6
    expected = np.full((3, max_new), fill, "int32")
    for row, prev in enumerate(prompts[:, -1]):
        for i in range(max_new):
            prev = int(np.argmax(table[prev]))
            expected[row, i] = prev
            if prev in stops:
                break
    engine = bigram_engine(table)
    mask = np.ones((3, 2 + max_new), "int32")
    streamed = []
    for stream in (None, streamed.append):
        out = engine.generate(TokenRule(), prompts, mask, (), (), stops, fill, stream=stream)
        np.testing.assert_array_equal(out.tokens, expected)
    assert len(streamed) == max(
        (row == fill).argmax() if (row == fill).any() else max_new for row in expected)
