import numpy as np
import pytest

from tests.nlp.bert.reference import SPECIAL, WORDS
from zoo.models import BertTokenizer, Tokenizer

VOCAB = SPECIAL + WORDS


def test_tokenize_detokenize_round_trip():
    tok = BertTokenizer(vocabulary=VOCAB)
    ids = tok.tokenize("The cats sat on the MAT!")
    assert ids == [VOCAB.index(t) for t in ["the", "cat", "##s", "sat", "on", "the", "mat", "!"]]
    assert tok.detokenize(ids) == "the cats sat on the mat!"
    assert tok.tokenize(["a dog", "zebra"]) == [[6, 8], [1]]  # unknown word -> [UNK]
    assert tok.detokenize(np.array([[6, 8], [7, 9]])) == ["a dog", "cat sat"]


def test_encode_padding_modes_and_truncation():
    tok = BertTokenizer(vocabulary=VOCAB)
    texts = ["the cat sat", "a dog"]
    fixed = tok.encode(texts, sequence_length=8)
    assert fixed["token_ids"].shape == (2, 8) and fixed["token_ids"].dtype == np.int32
    assert fixed["token_ids"][0].tolist() == [2, 5, 7, 9, 3, 0, 0, 0]
    assert fixed["padding_mask"].sum(axis=1).tolist() == [5, 4]
    assert tok.encode(texts, padding="longest")["token_ids"].shape == (2, 5)
    assert tok.encode(texts, sequence_length=512, padding="bucket")["token_ids"].shape == (2, 16)
    long = tok.encode(["the cat " * 50], sequence_length=10)["token_ids"][0]
    assert long[0] == 2 and long[-1] == 3 and len(long) == 10


def test_pairs_get_segment_ids():
    tok = BertTokenizer(vocabulary=VOCAB)
    out = tok.encode(["the cat"], ["a dog sat"], sequence_length=10, padding="longest")
    assert out["token_ids"][0].tolist() == [2, 5, 7, 3, 6, 8, 9, 3]
    assert out["segment_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="2 texts but 1 pairs"):
        tok.encode(["a", "b"], ["c"], sequence_length=8)


def test_special_tokens_in_text_are_recognised():
    tok = BertTokenizer(vocabulary=VOCAB)
    assert tok.tokenize("the [MASK] sat") == [5, 4, 9]


def test_save_and_load_assets(tmp_path):
    tok = BertTokenizer(vocabulary=VOCAB, lowercase=False)
    tok.save_to_preset(tmp_path / "p")
    for loader in (BertTokenizer, Tokenizer):
        loaded = loader.from_preset(tmp_path / "p")
        assert type(loaded) is BertTokenizer and loaded.get_vocabulary() == VOCAB
        assert loaded.get_config() == tok.get_config()
        assert loaded.tokenize("The cat") == tok.tokenize("The cat")


def test_clear_errors():
    with pytest.raises(ValueError, match="lacks the special tokens"):
        BertTokenizer(vocabulary=["a", "b"])
    with pytest.raises(ValueError, match="no vocabulary yet"):
        BertTokenizer().tokenize("x")
    tok = BertTokenizer(vocabulary=VOCAB)
    with pytest.raises(TypeError, match="string or a list of strings"):
        tok.tokenize(42)
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        tok.encode(["ok", 5], sequence_length=8)
    with pytest.raises(ValueError, match="padding="):
        tok.encode(["ok"], sequence_length=8, padding="nope")
    with pytest.raises(KeyError):
        tok.token_to_id("never-seen")
