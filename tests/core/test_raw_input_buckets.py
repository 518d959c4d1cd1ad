"""Raw-input `predict` / `evaluate` / `fit` with batches in different length buckets.

Preprocessors pad each batch to its own power-of-two bucket, so batches of
one call differ in shape. Keras' TensorFlow PyDataset adapter used to fix the
shapes from the first two batches and fail on a later batch of another bucket
(issue 19). Every task that takes raw text runs here on seeded texts whose
lengths span three buckets (16, 32 and 64 tokens), ordered short-first,
long-first and mixed (the first two batches always share a bucket, the last
batch is partial), and must equal one-at-a-time (per-text) results.

Every new (batch size, bucket) shape compiles, so evaluation and training
leave the partial last batch out (prediction keeps it: its shape is a
per-text one), and training runs unshuffled over the three buckets once.

Tolerances (float32 tiny models, outputs of order 1): per-text and batched
runs pad to different lengths, which moves results by about 1e-6 (different
reduction lengths); `ATOL`/`RTOL` allow 10x that. Per-text losses are computed
from per-text predictions with the task's own loss / metric.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import keras
import numpy as np
import pytest

from tests.nlp.bert.test_bert_tasks import VOCAB
from tests.nlp.opt.test_opt_tokenizer import OPT_SPECIALS
from tests.tokenizers.test_byte_pair import corpus, train_byte_level_bpe
from zoo.models import (
    BertBackbone,
    BertMaskedLM,
    BertMaskedLMPreprocessor,
    BertPreprocessor,
    BertTextClassifier,
    BertTextEmbedder,
    BertTokenizer,
    OPTBackbone,
    OPTCausalLM,
    OPTCausalLMPreprocessor,
    OPTTokenizer,
)

ATOL = 1e-5
RTOL = 1e-5
BATCH = 4
BUCKETS = (16, 32, 64)
SEQUENCE_LENGTH = BUCKETS[-1]


def bucket_of(preprocessor: Callable, text: str) -> int:
    """The length the preprocessor pads `text` alone to."""
    out = preprocessor([text])
    x = out[0] if isinstance(out, tuple) else out
    return int(x["token_ids"].shape[1])


def texts_by_bucket(preprocessor: Callable, words: list[str], seed: int,
                    per_bucket: int = 9) -> dict[int, list[str]]:
    """`per_bucket` seeded random texts (1 to 70 words) for each of `BUCKETS`."""
    rng = np.random.default_rng(seed)
    found: dict[int, list[str]] = {b: [] for b in BUCKETS}
    while any(len(v) < per_bucket for v in found.values()):
        text = " ".join(rng.choice(words, int(rng.integers(1, 70))))
        bucket = bucket_of(preprocessor, text)
        if bucket in found and len(found[bucket]) < per_bucket:
            found[bucket].append(text)
    return found


def orderings(found: dict[int, list[str]]) -> dict[str, tuple[list[str], list[int]]]:
    """Texts (and each one's own bucket) in batch orders that cross buckets:
    short batches first, long first, and mixed, each 5 full batches of `BATCH`
    (the first two in one bucket) and a last batch of one 32-bucket text."""
    short, middle, long = (found[b] for b in BUCKETS)
    plans = {
        "short_first": short[:8] + middle[:4] + long[:8] + [middle[4]],
        "long_first": long[:8] + middle[:4] + short[:8] + [middle[5]],
        "mixed": long[:4] + [short[0], long[4], middle[0], short[1]] + short[2:6]
        + middle[1:5] + long[5:9] + [middle[5]],
    }
    lookup = {t: b for b, texts in found.items() for t in texts}
    for texts in plans.values():
        batches = [max(lookup[t] for t in texts[i:i + BATCH])
                   for i in range(0, len(texts), BATCH)]
        assert len(set(batches)) == 3 and batches[0] == batches[1], batches
        assert len(texts) % BATCH == 1
    return {name: (texts, [lookup[t] for t in texts]) for name, texts in plans.items()}


def bert_backbone() -> BertBackbone:
    # the tiny BERT of tests/nlp/bert/test_bert_tasks.py (one layer: every
    # new batch shape compiles), with positions up to 64
    return BertBackbone(vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16,
                        intermediate_dim=32, max_sequence_length=SEQUENCE_LENGTH)


BERT_WORDS = [w for w in VOCAB[5:] if not w.startswith(("##", "tok"))]


@pytest.fixture(scope="module")
def bert_texts() -> dict[str, tuple[list[str], list[int]]]:
    pre = BertPreprocessor(BertTokenizer(vocabulary=VOCAB), sequence_length=SEQUENCE_LENGTH)
    return orderings(texts_by_bucket(pre, BERT_WORDS, seed=19))


def every_text(orders: dict[str, tuple[list[str], list[int]]]) -> list[str]:
    """Each text of every ordering, once."""
    return list(dict.fromkeys(t for texts, _ in orders.values() for t in texts))


def one_at_a_time(fn: Callable[[list[str]], np.ndarray], texts: list[str]
                  ) -> dict[str, np.ndarray]:
    """`fn([text])[0]` for each text: the per-text results batches must equal."""
    return {t: np.asarray(fn([t]))[0] for t in texts}


def loss_value(loss: Callable, *args: np.ndarray) -> float:
    return float(keras.ops.convert_to_numpy(loss(*args)))


def test_classifier_across_buckets(bert_texts):
    pre = BertPreprocessor(BertTokenizer(vocabulary=VOCAB), sequence_length=SEQUENCE_LENGTH)
    clf = BertTextClassifier(bert_backbone(), num_classes=3, preprocessor=pre)
    clf.compile(optimizer=keras.optimizers.Adam(1e-3), loss=clf.loss)
    texts = every_text(bert_texts)
    label = {t: i % 3 for i, t in enumerate(texts)}
    single = one_at_a_time(clf.predict, texts)
    single_loss = {t: loss_value(clf.loss, np.array([label[t]]), single[t][None]) for t in texts}
    for name, (order, _) in bert_texts.items():
        np.testing.assert_allclose(clf.predict(order, batch_size=BATCH),
                                   [single[t] for t in order], atol=ATOL, rtol=RTOL,
                                   err_msg=name)
        # Keras averages per-example losses over batches weighted by batch size.
        full = order[:-1]
        result = clf.evaluate(full, [label[t] for t in full], batch_size=BATCH, verbose=0,
                              return_dict=True)
        np.testing.assert_allclose(result["loss"], np.mean([single_loss[t] for t in full]),
                                   rtol=RTOL, err_msg=name)
    # Sentence pairs cross buckets too.
    order = bert_texts["long_first"][0]
    pairs = (order, order[::-1])
    expected = [clf.predict(([a], [b]))[0] for a, b in zip(*pairs)]
    np.testing.assert_allclose(clf.predict(pairs, batch_size=BATCH), expected,
                               atol=ATOL, rtol=RTOL)
    # Unshuffled, so batches cross buckets in a known order (the partial last
    # batch left out: one shape fewer to compile).
    order = bert_texts["mixed"][0][:-1]
    history = clf.fit(order, [label[t] for t in order], batch_size=BATCH, epochs=1,
                      shuffle=False, verbose=0,
                      validation_data=(order[::-1], [label[t] for t in order[::-1]]))
    assert np.isfinite(history.history["loss"]).all()
    assert np.isfinite(history.history["val_loss"]).all()


def test_embedder_across_buckets(bert_texts):
    pre = BertPreprocessor(BertTokenizer(vocabulary=VOCAB), sequence_length=SEQUENCE_LENGTH)
    embedder = BertTextEmbedder(bert_backbone(), preprocessor=pre)
    texts = every_text(bert_texts)
    single = one_at_a_time(embedder.embed, texts)
    for name, (order, _) in bert_texts.items():
        expected = [single[t] for t in order]
        np.testing.assert_allclose(embedder.embed(order, batch_size=BATCH), expected,
                                   atol=ATOL, rtol=RTOL, err_msg=name)
        np.testing.assert_allclose(embedder.predict(order, batch_size=BATCH), expected,
                                   atol=ATOL, rtol=RTOL, err_msg=name)


def test_masked_lm_across_buckets(bert_texts):
    # Every real token selected and replaced by [MASK]: the masking is then
    # the same however the texts are batched (no random choice is left).
    pre = BertMaskedLMPreprocessor(
        BertTokenizer(vocabulary=VOCAB), sequence_length=SEQUENCE_LENGTH,
        mask_selection_rate=1.0, mask_selection_length=SEQUENCE_LENGTH,
        mask_token_rate=1.0, random_token_rate=0.0, seed=0)
    mlm = BertMaskedLM(bert_backbone(), preprocessor=pre)
    mlm.compile(optimizer=keras.optimizers.Adam(1e-3), loss=mlm.loss, weighted_metrics=[])
    texts = every_text(bert_texts)
    single = one_at_a_time(mlm.predict, texts)
    single_loss = {}
    for t in texts:
        _, y, weights = pre([t])
        single_loss[t] = loss_value(mlm.loss, y, single[t][None], weights)
    for name, (order, _) in bert_texts.items():
        np.testing.assert_allclose(mlm.predict(order, batch_size=BATCH),
                                   [single[t] for t in order], atol=ATOL, rtol=RTOL,
                                   err_msg=name)
        full = order[:-1]
        result = mlm.evaluate(full, batch_size=BATCH, verbose=0, return_dict=True)
        np.testing.assert_allclose(result["loss"], np.mean([single_loss[t] for t in full]),
                                   rtol=RTOL, err_msg=name)
    history = mlm.fit(bert_texts["long_first"][0][:-1], batch_size=BATCH, epochs=1,
                      shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.fixture(scope="module")
def opt_lm(tmp_path_factory) -> OPTCausalLM:
    folder = tmp_path_factory.mktemp("opt_buckets")
    vocab_file, merges_file = train_byte_level_bpe(folder, OPT_SPECIALS, vocab_size=400)
    tokenizer = OPTTokenizer(vocabulary=vocab_file, merges=merges_file)
    pre = OPTCausalLMPreprocessor(tokenizer, sequence_length=SEQUENCE_LENGTH)
    backbone = OPTBackbone(vocabulary_size=len(json.loads(vocab_file.read_text())),
                           num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
                           max_sequence_length=SEQUENCE_LENGTH + 1)
    return OPTCausalLM(backbone, preprocessor=pre)


def token_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-position cross-entropy of `labels` under `logits` (float64)."""
    logits = logits.astype("float64")
    top = logits.max(axis=-1)
    log_norm = top + np.log(np.exp(logits - top[..., None]).sum(axis=-1))
    return log_norm - np.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]


def test_opt_causal_lm_across_buckets(opt_lm):
    pre = opt_lm.preprocessor
    words = sorted({w for line in corpus() for w in line.lower().split() if w.isalpha()})
    texts_in_order = orderings(texts_by_bucket(pre, words, seed=19))
    opt_lm.compile(optimizer=keras.optimizers.Adam(1e-3), loss=opt_lm.loss,
                   weighted_metrics=[])
    texts = every_text(texts_in_order)
    single = one_at_a_time(opt_lm.predict, texts)
    xent_sum, tokens = {}, {}
    for t in texts:
        _, y, weights = pre([t])
        tokens[t] = int(weights.sum())  # label tokens: the real positions
        xent_sum[t] = float((token_cross_entropy(single[t], y[0]) * weights[0]).sum())
    for name, (order, buckets) in texts_in_order.items():
        logits = opt_lm.predict(order, batch_size=BATCH)
        # each batch padded to its bucket, then all zero-padded to the longest
        assert logits.shape[:2] == (len(order), max(buckets)), name
        for row, text in enumerate(order):
            n = tokens[text]
            np.testing.assert_allclose(logits[row, :n], single[text][:n], atol=ATOL,
                                       rtol=RTOL, err_msg=f"{name} row {row}")
            start = row - row % BATCH
            assert not logits[row, max(buckets[start:start + BATCH]):].any(), (name, row)
        # The loss of a batch sums the weighted token losses over its padded
        # size (rows x bucket length); Keras averages batches by row count.
        full = order[:-1]
        batch_losses = [sum(xent_sum[t] for t in full[i:i + BATCH])
                        / max(buckets[i:i + BATCH]) for i in range(0, len(full), BATCH)]
        np.testing.assert_allclose(
            opt_lm.evaluate(full, batch_size=BATCH, verbose=0),
            sum(batch_losses) / len(full), rtol=RTOL, err_msg=name)
    history = opt_lm.fit(texts_in_order["long_first"][0][:-1], batch_size=BATCH, epochs=1,
                         shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
