"""OPTTokenizer vs transformers configured exactly as facebook/opt-* ships it.

There are no OPT vocabulary files offline, so a small byte-level BPE is
trained (tests/tokenizers/test_byte_pair.py) with OPT's four fairseq tokens
at ids 0..3, and loaded by transformers with OPT's own tokenizer_config.json
(`unk`/`bos`/`eos` all `</s>`, `pad` `<pad>`, `add_bos_token=True`) and a
config.json whose model_type `opt` makes AutoTokenizer pick GPT2Tokenizer.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest

import zoo.nlp.opt.opt_tokenizer as opt_tokenizer  # registers OPTTokenizer
from tests.tokenizers.test_byte_pair import HARD_TEXTS, train_byte_level_bpe
from zoo.core.tokenizer import Tokenizer
from zoo.nlp.opt.opt_tokenizer import OPTTokenizer

OPT_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]

#: special-token strings inside the text: only `</s>` and `<pad>` are special in OPT
SPECIAL_TEXTS = [
    "first</s>second",
    "</s>",
    " a </s> b ",
    "<pad>padded<pad>",
    "<s>not special<unk>",
]


def _added_token(content: str) -> dict:
    return {"content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": True, "__type": "AddedToken"}


#: facebook/opt-125m's tokenizer_config.json, as published
OPT_TOKENIZER_CONFIG = {
    "errors": "replace",
    "unk_token": _added_token("</s>"),
    "bos_token": _added_token("</s>"),
    "eos_token": _added_token("</s>"),
    "pad_token": _added_token("<pad>"),
    "add_prefix_space": False,
    "add_bos_token": True,
    "special_tokens_map_file": None,
    "name_or_path": "patrickvonplaten/opt-30b",
}


@pytest.fixture(scope="module")
def opt_dir(tmp_path_factory) -> Path:
    """vocab.json + merges.txt laid out like OPT's, plus its transformers configs."""
    directory = tmp_path_factory.mktemp("opt_tokenizer")
    train_byte_level_bpe(directory, OPT_SPECIALS)
    (directory / "tokenizer_config.json").write_text(json.dumps(OPT_TOKENIZER_CONFIG))
    (directory / "config.json").write_text(json.dumps(
        {"model_type": "opt", "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2}))
    return directory


@pytest.fixture(scope="module")
def hf(opt_dir):
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(opt_dir))
    # the reference really behaves like OPT: ids start with </s> (2), pad is 1
    assert tokenizer("Hello")["input_ids"][0] == 2
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (2, 2, 1)
    return tokenizer


@pytest.fixture(scope="module")
def tok(opt_dir) -> OPTTokenizer:
    return OPTTokenizer(vocabulary=opt_dir / "vocab.json", merges=opt_dir / "merges.txt")


ALL_TEXTS = HARD_TEXTS + SPECIAL_TEXTS


def test_special_token_ids(tok, hf):
    assert [tok.token_to_id(t) for t in OPT_SPECIALS] == [0, 1, 2, 3]
    assert (tok.start_token_id, tok.end_token_id, tok.pad_token_id) == (2, 2, 1)
    assert tok.special_tokens == {"bos": "</s>", "eos": "</s>", "pad": "<pad>"}
    assert tok.vocabulary_size() == len(hf)
    assert tok.get_vocabulary()[:4] == OPT_SPECIALS


def test_ids_match_transformers(tok, hf):
    for text in ALL_TEXTS:
        expected = hf(text)["input_ids"]
        assert expected[0] == 2
        assert tok.encode(text, padding="longest")["token_ids"][0].tolist() == expected, text
        assert tok.tokenize(text) == hf(text, add_special_tokens=False)["input_ids"], text
    assert tok.tokenize(ALL_TEXTS) == [hf(t, add_special_tokens=False)["input_ids"]
                                       for t in ALL_TEXTS]


def test_only_eos_and_pad_are_special(tok, hf):
    # `</s>` and `<pad>` written in text are one id each ...
    assert tok.tokenize("a</s>b<pad>") == [tok.tokenize("a")[0], 2, tok.tokenize("b")[0], 1]
    # ... but `<s>` and `<unk>` are split into pieces, as transformers does
    for text in ("<s>", "<unk>"):
        ids = tok.tokenize(text)
        assert len(ids) > 1 and 0 not in ids and 3 not in ids
        assert ids == hf(text, add_special_tokens=False)["input_ids"]


def test_batch_padding_and_truncation_match_transformers(tok, hf):
    for length in (1, 4, 12, 40):
        out = tok.encode(ALL_TEXTS, sequence_length=length)
        ref = hf(ALL_TEXTS, padding="max_length", truncation=True, max_length=length)
        assert out["token_ids"].shape == (len(ALL_TEXTS), length)
        assert out["token_ids"].tolist() == ref["input_ids"], length
        assert out["padding_mask"].tolist() == ref["attention_mask"], length
    out = tok.encode(ALL_TEXTS, padding="longest")
    ref = hf(ALL_TEXTS, padding=True)
    assert out["token_ids"].tolist() == ref["input_ids"]
    assert out["padding_mask"].tolist() == ref["attention_mask"]
    assert (out["token_ids"][out["padding_mask"] == 0] == 1).all()  # right-padded with <pad>


def test_pairs_match_transformers(tok, hf):
    firsts = ["The café is open.", "東京 🍕", " two  spaces "]
    seconds = ["Is it?", "first</s>second", "a much longer second segment than the first"]
    for length in (6, 16):
        out = tok.encode(firsts, pairs=seconds, sequence_length=length)
        ref = hf(firsts, seconds, padding="max_length", truncation=True, max_length=length,
                 return_token_type_ids=True)
        assert out["token_ids"].tolist() == ref["input_ids"]
        assert out["segment_ids"].tolist() == ref["token_type_ids"]
        assert out["padding_mask"].tolist() == ref["attention_mask"]
    # `</s> a </s> b`: the start token opens each segment, nothing closes it
    pair = tok.encode(["a"], pairs=["b"], padding="longest")["token_ids"][0].tolist()
    assert pair == [2, *tok.tokenize("a"), 2, *tok.tokenize("b")]


def test_detokenize(tok, hf):
    for text in HARD_TEXTS:
        ids = tok.tokenize(text)
        assert tok.detokenize(ids) == text  # byte-level BPE is lossless
        assert tok.detokenize(ids) == hf.decode(ids)
    padded = tok.encode(ALL_TEXTS, sequence_length=64)["token_ids"]
    assert tok.detokenize(padded) == [
        hf.decode(row, skip_special_tokens=True) for row in padded.tolist()]
    assert tok.detokenize(padded, skip_special_tokens=False) == [
        hf.decode(row, skip_special_tokens=False) for row in padded.tolist()]
    assert tok.detokenize(tok.tokenize("x</s>y"), skip_special_tokens=False) == "x</s>y"
    assert tok.detokenize(tok.encode("x</s>y", padding="longest")["token_ids"][0]) == "xy"


def test_preset_round_trip(tok, tmp_path):
    tok.save_to_preset(tmp_path / "p")
    assets = tmp_path / "p" / "assets" / "tokenizer"
    assert sorted(p.name for p in assets.iterdir()) == ["merges.txt", "vocabulary.json"]
    saved = json.loads((tmp_path / "p" / "tokenizer.json").read_text())
    assert saved["registered_name"] == "zoo>OPTTokenizer"
    for loader in (OPTTokenizer, Tokenizer):
        loaded = loader.from_preset(tmp_path / "p")
        assert type(loaded) is OPTTokenizer
        assert loaded.get_config() == tok.get_config()
        assert loaded.get_vocabulary() == tok.get_vocabulary()
        assert loaded.tokenize(ALL_TEXTS) == tok.tokenize(ALL_TEXTS)
        assert np.array_equal(loaded.encode(ALL_TEXTS, sequence_length=10)["token_ids"],
                              tok.encode(ALL_TEXTS, sequence_length=10)["token_ids"])
    overridden = OPTTokenizer.from_preset(tmp_path / "p", append=["eos"])
    assert overridden.encode("a", padding="longest")["token_ids"][0].tolist() == [
        2, *tok.tokenize("a"), 2]


@pytest.mark.parametrize("merge_format", ["pairs", "strings"])
def test_from_transformers_folders(tok, hf, opt_dir, tmp_path, merge_format):
    assert OPTTokenizer.from_huggingface(opt_dir).get_config() == tok.get_config()
    hf.save_pretrained(str(tmp_path / "fast"))  # transformers 5: tokenizer.json only
    path = tmp_path / "fast" / "tokenizer.json"
    if merge_format == "strings":  # older tokenizers versions wrote "a b" strings
        data = json.loads(path.read_text(encoding="utf-8"))
        data["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m
                                   for m in data["model"]["merges"]]
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    for loaded in (OPTTokenizer.from_huggingface(tmp_path / "fast"),
                   OPTTokenizer.from_huggingface(opt_dir)):
        assert type(loaded) is OPTTokenizer
        assert loaded.vocabulary == tok.vocabulary and loaded.merges == tok.merges
        assert loaded.encode(ALL_TEXTS, sequence_length=20)["token_ids"].tolist() == \
            hf(ALL_TEXTS, padding="max_length", truncation=True, max_length=20)["input_ids"]


def test_clear_errors(opt_dir):
    with pytest.raises(ValueError, match="no vocabulary yet"):
        OPTTokenizer().tokenize("x")
    with pytest.raises(ValueError, match="no vocabulary yet"):
        OPTTokenizer().encode(["x"], sequence_length=4)
    with pytest.raises(ValueError, match=r"lacks the special tokens \['</s>', '<pad>'\]"):
        OPTTokenizer(vocabulary={"a": 0, "b": 1, "ab": 2}, merges=["a b"])
    tok = OPTTokenizer.from_huggingface(opt_dir)
    with pytest.raises(TypeError, match="string or a list of strings"):
        tok.tokenize(42)
    with pytest.raises(TypeError, match=r"texts\[0\] is a NoneType"):
        tok.encode([None], sequence_length=4)
    with pytest.raises(ValueError, match="needs a sequence_length"):
        tok.encode(["x"])


def test_docstring_examples():
    result = doctest.testmod(opt_tokenizer, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
