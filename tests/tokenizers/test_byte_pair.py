"""Byte-level BPE, checked id for id against transformers' GPT2Tokenizer.

No pretrained vocabulary is needed: a small one is trained here with the
`tokenizers` library on the text below, then loaded both by zoo and by
transformers.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest

import zoo.tokenizers.byte_pair as byte_pair
from zoo.tokenizers.byte_pair import (
    BytePairTokenizer,
    read_merges,
    read_tokenizer_json,
    read_vocabulary,
)

pytestmark = pytest.mark.once  # numpy only: the same on every backend

_PARAGRAPHS = """\
The quick brown fox jumps over the lazy dog, and the dog does not seem to mind.
A journey of a thousand miles begins with a single step; so does every refactoring.
She sells seashells by the seashore, while he reads the newspaper on the porch.
In 1969, Apollo 11 landed on the Moon. Neil Armstrong stepped out at 02:56 UTC.
Machine learning models learn patterns from data rather than following rules.
"Don't panic," said the guide. "It's only a tokenizer, and it's doing its best."
Prices rose 3.5% last quarter, to $1,299.99 for the basic model and $2,499 for the pro.
Email me at someone@example.com or visit https://example.org/path?query=1&x=2.
It was the best of times, it was the worst of times, it was the age of wisdom.
To be, or not to be: that is the question. Whether 'tis nobler in the mind to suffer...
The café on the corner serves crème brûlée, jalapeño poppers and a naïve smoothie.
Zoë and Chloë went to the Köln Dom, then to São Paulo and finally to Ærø in Denmark.
Señor Muñoz façade résumé déjà vu über coöperate piñata fiancée.
東京は日本の首都です。大阪は食べ物で有名です。
我喜欢学习中文，因为它很有意思。今天天气很好。
한국어도 조금 할 수 있어요. 감사합니다!
Привет, как дела? Всё хорошо, спасибо.
Γειά σου κόσμε! Αυτό είναι ένα τεστ.
مرحبا بالعالم، هذا اختبار.
I love 🍕 and 🚀 and 🐍; the family emoji 👨‍👩‍👧 is several code points.
Thumbs up 👍🏽, flags 🇯🇵 🇫🇷, hearts ❤️ and sparkles ✨ all over the place.
def tokenize(text: str) -> list[int]:
    return [ord(c) for c in text]  # not how BPE works, of course
for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }
    Indented lines keep their leading spaces.
Tabs\tseparate\tthese\twords, and   runs of   spaces   stay   too.
Line one
Line two

Line four after an empty line.
The weather today is sunny with a chance of rain in the late afternoon.
Our team shipped the new release on Friday, and nobody had to work the weekend.
Could you please pass the salt? Thanks, that's very kind of you.
The museum opens at nine o'clock and closes at half past five on weekdays.
He said, "We'll meet at the station," but he never showed up.
Reading books before bed helps many people fall asleep more quickly.
Bicycles, buses and trains are common ways to get around the city.
The recipe calls for two cups of flour, one egg and a pinch of salt.
Scientists observed that the new material conducts heat surprisingly well.
Children were playing football in the park until the streetlights came on.
What time does the last train leave for the airport tonight?
I can't believe it's already December; this year went by so fast!
Please remember to water the plants while I'm away next week.
The committee will review all applications and announce the results in May.
Photosynthesis converts light energy into chemical energy stored in sugar.
The orchestra tuned their instruments as the audience found their seats.
Wow!!! That's amazing... really? Yes -- absolutely; no doubt about it.
UPPERCASE WORDS, lowercase words, and MiXeD cAsE words all appear here.
Numbers like 0, 7, 42, 314159 and 2.71828 show up in many documents.
"""

#: texts that stress byte-level BPE; each must survive tokenize -> detokenize
HARD_TEXTS = [
    "Hello world",
    " Hello world",
    "Hello world ",
    "   leading and trailing   ",
    "multiple    spaces   between words",
    "line one\nline two\n\nline four\n",
    "tabs\tand\r\nwindows newlines",
    "café crème brûlée, naïve façade, Zoë",
    "東京は日本の首都です。我喜欢学习中文。",
    "emoji 🍕🚀 family 👨‍👩‍👧 skin tone 👍🏽 flag 🇯🇵",
    "unseen bytes: ☃ ∑ ₿ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "It's 3.5% of $1,299.99 -- isn't it?",
    "    Indented code  # comment",  # GPT-2's split pattern changes these ids
    "Whether 'tis nobler in the mind",
    "",
    " ",
    "\n",
]

SPECIALS = ["<|endoftext|>", "<|startoftext|>", "<|pad|>"]


def corpus() -> list[str]:
    """A few hundred lines: the paragraphs above plus case and spacing variants."""
    lines = _PARAGRAPHS.splitlines()
    out = list(lines)
    out += [line.lower() for line in lines] + [line.upper() for line in lines]
    out += [" ".join(lines[i:i + 3]) for i in range(0, len(lines), 3)]
    return out * 3


def train_byte_level_bpe(
    directory: Path, special_tokens: list[str], vocab_size: int = 1200,
) -> tuple[Path, Path]:
    """Train a GPT-2 style BPE; `special_tokens` get ids 0, 1, ...

    Returns the paths of the vocab.json and merges.txt written into `directory`.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = tok.model.save(str(directory))
    return Path(vocab), Path(merges)


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("gpt2_style")
    train_byte_level_bpe(directory, SPECIALS)
    return directory


def _hf(directory: Path, **config):
    """transformers' GPT2Tokenizer over the trained files."""
    transformers = pytest.importorskip("transformers")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "GPT2Tokenizer", **config}))
    return transformers.AutoTokenizer.from_pretrained(str(directory))


def _ours(directory: Path, **kwargs) -> BytePairTokenizer:
    return BytePairTokenizer(directory / "vocab.json", directory / "merges.txt", **kwargs)


def test_trained_vocabulary_is_byte_level(bpe_dir):
    vocab = read_vocabulary(bpe_dir / "vocab.json")
    assert [vocab[t] for t in SPECIALS] == [0, 1, 2]
    assert len(vocab) > 700 and "Ġ" in vocab  # every byte plus real merges
    assert len(read_merges(bpe_dir / "merges.txt")) > 400


@pytest.mark.parametrize("add_prefix_space", [False, True])
def test_ids_match_transformers(bpe_dir, tmp_path, add_prefix_space):
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((bpe_dir / name).read_bytes())
    hf = _hf(tmp_path, add_prefix_space=add_prefix_space)
    tok = _ours(tmp_path, add_prefix_space=add_prefix_space)
    expected = [hf(t, add_special_tokens=False)["input_ids"] for t in HARD_TEXTS]
    assert tok.tokenize(HARD_TEXTS) == expected
    assert tok.tokenize(HARD_TEXTS[4]) == expected[4]
    # merges were really used: far fewer ids than bytes on ordinary English
    assert len(tok.tokenize("The weather today is sunny")) < 10
    assert tok.vocabulary_size() == len(hf)


def test_detokenize_round_trip_is_lossless(bpe_dir):
    tok = _ours(bpe_dir)
    for text in HARD_TEXTS:
        assert tok.detokenize(tok.tokenize(text)) == text
    assert tok.detokenize(tok.tokenize(HARD_TEXTS[:3])) == HARD_TEXTS[:3]
    padded = tok.encode(HARD_TEXTS, padding="longest")["token_ids"]
    assert isinstance(padded, np.ndarray) and tok.detokenize(padded) == HARD_TEXTS


def test_templates_match_transformers_bos_and_eos(bpe_dir, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((bpe_dir / name).read_bytes())
    hf = _hf(tmp_path, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
             pad_token="<|pad|>", add_bos_token=True, add_eos_token=True)
    tok = _ours(
        tmp_path, prepend=("bos",), append=("eos",),
        special_tokens={"bos": "<|startoftext|>", "eos": "<|endoftext|>", "pad": "<|pad|>"},
    )
    assert (tok.start_token_id, tok.end_token_id, tok.pad_token_id) == (1, 0, 2)
    texts = ["The café", "東京 🍕", " spaced  out "]
    out = tok.encode(texts, padding="longest")
    ref = hf(texts, padding=True)
    assert out["token_ids"].tolist() == ref["input_ids"]
    assert out["padding_mask"].tolist() == ref["attention_mask"]
    last = out["padding_mask"].sum(axis=1) - 1
    assert out["token_ids"][:, 0].tolist() == [1, 1, 1]
    assert out["token_ids"][np.arange(3), last].tolist() == [0, 0, 0]
    seconds = ["second segment", "zweites Stück", "3"]
    out = tok.encode(texts, pairs=seconds, sequence_length=9)
    ref = hf(texts, seconds, padding="max_length", truncation=True, max_length=9,
             return_token_type_ids=True)
    assert out["token_ids"].tolist() == ref["input_ids"]
    assert out["segment_ids"].tolist() == ref["token_type_ids"]
    assert out["padding_mask"].tolist() == ref["attention_mask"]


def test_special_tokens_in_text_are_single_ids(bpe_dir):
    tok = _ours(bpe_dir)
    ids = tok.tokenize("end<|endoftext|>start")
    assert 0 in ids and tok.detokenize(ids) == "endstart"
    assert tok.detokenize(ids, skip_special_tokens=False) == "end<|endoftext|>start"


def test_assets_round_trip(bpe_dir, tmp_path):
    tok = _ours(bpe_dir, add_prefix_space=True, append=["eos"])
    tok.save_assets(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merges.txt", "vocabulary.json"]
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").startswith("#version")
    loaded = BytePairTokenizer.from_config(tok.get_config())
    loaded.load_assets(tmp_path)
    assert loaded.get_config() == tok.get_config()
    assert loaded.get_config()["append"] == ["eos"]
    assert loaded.vocabulary == tok.vocabulary and loaded.merges == tok.merges
    assert loaded.tokenize(HARD_TEXTS) == tok.tokenize(HARD_TEXTS)
    assert loaded.encode(HARD_TEXTS, sequence_length=8)["token_ids"].tolist() == \
        tok.encode(HARD_TEXTS, sequence_length=8)["token_ids"].tolist()


def test_read_merges_skips_only_the_version_header(tmp_path):
    path = tmp_path / "merges.txt"
    path.write_text("#version: 0.2\n# #\nĠ t\n\n", encoding="utf-8")
    assert read_merges(path) == ["# #", "Ġ t"]
    path.write_text("# #\nĠ t", encoding="utf-8")
    assert read_merges(path) == ["# #", "Ġ t"]


@pytest.mark.parametrize("merge_format", ["pairs", "strings"])
def test_from_tokenizer_json(bpe_dir, tmp_path, merge_format):
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "src" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "src" / name).write_bytes((bpe_dir / name).read_bytes())
    hf = _hf(tmp_path / "src", add_prefix_space=True)
    hf.save_pretrained(str(tmp_path / "fast"))
    path = tmp_path / "fast" / "tokenizer.json"
    assert not (tmp_path / "fast" / "vocab.json").exists()
    data = json.loads(path.read_text(encoding="utf-8"))
    if merge_format == "strings":  # the layout of older tokenizers versions
        data["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m
                                   for m in data["model"]["merges"]]
    else:
        data["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m
                                   for m in data["model"]["merges"]]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    found = read_tokenizer_json(path)
    assert found["merges"] == read_merges(bpe_dir / "merges.txt")
    assert found["add_prefix_space"] is True
    for source in (tmp_path / "fast", path):
        tok = BytePairTokenizer.from_huggingface(source)
        assert tok.add_prefix_space is True
        assert tok.tokenize(HARD_TEXTS) == [
            hf(t, add_special_tokens=False)["input_ids"] for t in HARD_TEXTS]
    # vocab.json + merges.txt win when both layouts are present
    tok = BytePairTokenizer.from_huggingface(tmp_path / "src", add_prefix_space=False)
    assert tok.tokenize(" x") == _ours(bpe_dir).tokenize(" x")


def test_clear_errors(bpe_dir, tmp_path):
    vocab = read_vocabulary(bpe_dir / "vocab.json")
    merges = read_merges(bpe_dir / "merges.txt")
    with pytest.raises(ValueError, match="no vocabulary yet"):
        BytePairTokenizer().tokenize("x")
    with pytest.raises(ValueError, match="needs both vocabulary= and merges="):
        BytePairTokenizer(vocabulary=vocab)
    with pytest.raises(ValueError, match="lacks the special tokens"):
        BytePairTokenizer(vocab, merges, special_tokens={"pad": "<never>"})
    with pytest.raises(ValueError, match="uses .*which the vocabulary lacks"):
        BytePairTokenizer(vocab, merges + ["Ġ zzzqqq"])
    with pytest.raises(ValueError, match="not two tokens"):
        BytePairTokenizer(vocab, ["a b c"])
    with pytest.raises(ValueError, match="roles \\['cls'\\]"):
        BytePairTokenizer(vocab, merges, prepend=("cls",))
    with pytest.raises(ValueError, match="same id"):
        BytePairTokenizer({**vocab, "dup": 0}, merges)
    tok = BytePairTokenizer(vocab, merges)
    with pytest.raises(TypeError, match="string or a list of strings"):
        tok.tokenize(42)
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        tok.encode(["ok", 5], sequence_length=8)
    with pytest.raises(ValueError, match="no 'unk' special token"):
        _ = BytePairTokenizer(vocab, merges)._role_id("unk")
    with pytest.raises(FileNotFoundError, match="neither vocab.json"):
        BytePairTokenizer.from_huggingface(tmp_path)
    wordpiece = tmp_path / "tokenizer.json"
    wordpiece.write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0}}}))
    with pytest.raises(ValueError, match="does not describe a BPE model"):
        BytePairTokenizer.from_huggingface(wordpiece)
    metaspace = {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                 "pre_tokenizer": {"type": "Metaspace"}}
    wordpiece.write_text(json.dumps(metaspace))
    with pytest.raises(ValueError, match="not GPT-2's"):
        BytePairTokenizer.from_huggingface(wordpiece)


def test_docstring_examples():
    result = doctest.testmod(byte_pair, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
