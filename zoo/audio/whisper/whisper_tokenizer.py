"""Whisper's tokenizer: GPT-2 byte-level BPE plus Whisper's `<|...|>` tokens.

Whisper comes with two vocabularies. English-only models (`tiny.en` ...
`medium.en`) use GPT-2's: 50256 byte-pair tokens, then `<|endoftext|>` = 50256,
51864 ids in all. Multilingual models use a table of 50257 byte-pair tokens,
so `<|endoftext|>` = 50257 and 51865 ids (large-v3 adds `<|yue|>`: 51866).
After `<|endoftext|>` come `<|startoftranscript|>`, one token per language,
`<|translate|>`, `<|transcribe|>`, `<|startoflm|>`, `<|startofprev|>`,
`<|nocaptions|>` (`<|nospeech|>` in large-v3), `<|notimestamps|>` and 1501
timestamp tokens `<|0.00|>` ... `<|30.00|>` (0.02 s apart).

Special ids are looked up by name, never by position, so any of these
vocabularies (and small test vocabularies) work.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.core.errors import InputError
from zoo.tokenizers.byte_pair import (
    HF_MERGES_FILE,
    HF_TOKENIZER_FILE,
    HF_VOCABULARY_FILE,
    BytePairTokenizer,
    read_vocabulary,
)

#: seconds between two timestamp tokens
TIME_PRECISION = 0.02
#: timestamp tokens `<|0.00|>` ... `<|30.00|>`
NUM_TIMESTAMPS = 1501
TASKS = ("transcribe", "translate")
#: id of `<|endoftext|>` in GPT-2's (English-only) vocabulary; multilingual ones put it later
ENGLISH_ONLY_EOT = 50256
#: languages written without spaces: words are split at unicode characters
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
#: transformers' file listing Whisper's added tokens next to vocab.json
HF_ADDED_TOKENS_FILE = "added_tokens.json"

EOT = "<|endoftext|>"
SOT = "<|startoftranscript|>"
TRANSLATE = "<|translate|>"
TRANSCRIBE = "<|transcribe|>"
SOT_LM = "<|startoflm|>"
SOT_PREV = "<|startofprev|>"
NO_SPEECH = ("<|nospeech|>", "<|nocaptions|>")  # large-v3's name, then the older one
NO_TIMESTAMPS = "<|notimestamps|>"
REQUIRED_TOKENS = (EOT, SOT, TRANSLATE, TRANSCRIBE, SOT_PREV, NO_TIMESTAMPS)

#: the vocabulary spells Hebrew `iw` (as some transformers files do) or `he`
_LANGUAGE_ALIASES = {"he": "iw", "iw": "he"}
_SPECIAL = re.compile(r"<\|[^|]+\|>")
_LANGUAGE = re.compile(r"<\|([a-z]{2,3})\|>")

# Text that Whisper should not produce from speech: speaker tags, music notes,
# bracketed annotations. Its first token (alone or after a space) is suppressed
# while decoding; punctuation used inside sentences stays allowed.
_NON_SPEECH_SYMBOLS = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + (
    "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
)
# musical symbols (U+2640..U+267F) whose first token is suppressed even when
# they take several tokens: their UTF-8 bytes share a prefix with nothing else
_MUSIC_SYMBOLS = "♩♪♫♬♭♮♯"


def timestamp_text(index: int) -> str:
    """The token string of the `index`-th timestamp: 0 -> `<|0.00|>`, 54 -> `<|1.08|>`."""
    return f"<|{index * TIME_PRECISION:.2f}|>"


@keras.saving.register_keras_serializable(package="zoo")
class WhisperTokenizer(BytePairTokenizer):
    """Whisper's byte-level BPE tokenizer; ids equal transformers' and faster-whisper's.

    All `<|...|>` tokens are special: written in a text they become one id,
    and `decode()` drops them. Timestamp tokens missing from the vocabulary
    (older `tokenizer.json` files stop at `<|notimestamps|>`) are added after
    it, so `vocabulary_size()` is the model's output size.

    `encode(..., add_special_tokens=True)` gives `[sot, no_timestamps, ...text,
    eot]`, as transformers' tokenizer does with no language or task set (for
    training labels); a pair is `[sot, no_timestamps, ...a, ...b, eot]`, as
    Whisper's tokenizer.json says. The prompt the decoder starts from is
    `sot_sequence()`.

    Args:
        vocabulary: `{token: id}` including the `<|...|>` tokens, or a path to
            a vocab.json; `None` until assets are loaded. Use
            `from_huggingface()` to read a transformers or CTranslate2 folder.
        merges: merge rules as `"a b"` strings or pairs, or a merges.txt path.
        is_multilingual: whether the model takes a language and a task token
            after `<|startoftranscript|>`. `None`: decided from the vocabulary
            (multilingual tables have 50257 tokens before `<|endoftext|>`,
            GPT-2's English one 50256).
        **kwargs: `special_tokens`, `add_prefix_space`, `prepend`, `append`,
            as in `BytePairTokenizer`.

    Example:

    >>> from zoo.audio.whisper.whisper_tokenizer import WhisperTokenizer
    >>> specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>",
    ...             "<|translate|>", "<|transcribe|>", "<|startoflm|>",
    ...             "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    >>> vocab = {"h": 0, "i": 1, "Ġ": 2, "hi": 3, "Ġhi": 4}
    >>> vocab.update({token: 5 + i for i, token in enumerate(specials)})
    >>> tokenizer = WhisperTokenizer(vocab, ["h i", "Ġ hi"], is_multilingual=True)
    >>> tokenizer.sot_sequence("fr"), tokenizer.sot_sequence("en", "translate", timestamps=True)
    ([6, 8, 10, 14], [6, 7, 9])
    >>> tokenizer.language_codes, tokenizer.timestamp_begin, tokenizer.vocabulary_size()
    (['en', 'fr'], 15, 1516)
    >>> ids = [6, 7, 10, 15, 3, 4, tokenizer.timestamp_token(0.5), 5]
    >>> tokenizer.decode(ids), tokenizer.decode_with_timestamps(ids)
    ('hi hi', '<|0.00|>hi hi<|0.50|>')
    >>> tokenizer.split_to_word_tokens([3, 4, 5])
    (['hi', ' hi', ''], [[3], [4], [5]])
    """

    default_special_tokens = {
        "bos": SOT, "eos": EOT, "pad": EOT, "no_timestamps": NO_TIMESTAMPS,
    }
    default_prepend = ("bos", "no_timestamps")
    default_append = ("eos",)

    def __init__(
        self,
        vocabulary: Mapping[str, int] | str | Path | None = None,
        merges: Sequence[str] | str | Path | None = None,
        is_multilingual: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self.is_multilingual = None if is_multilingual is None else bool(is_multilingual)
        self._language_tokens: dict[str, int] = {}
        self._non_speech: list[int] | None = None
        super().__init__(vocabulary, merges, **kwargs)

    # -- vocabulary ----------------------------------------------------------
    def set_vocabulary(
        self,
        vocabulary: Mapping[str, int] | str | Path,
        merges: Sequence[str] | str | Path,
    ) -> None:
        """Set vocabulary and merges; add missing timestamp tokens after `<|notimestamps|>`.

        Raises:
            ValueError: Whisper's special tokens are missing, or the ids after
                `<|notimestamps|>` hold something other than timestamps.
        """
        if isinstance(vocabulary, (str, Path)):
            vocabulary = read_vocabulary(vocabulary)
        vocabulary = {str(token): int(index) for token, index in dict(vocabulary).items()}
        missing = [t for t in REQUIRED_TOKENS if t not in vocabulary]
        if not any(t in vocabulary for t in NO_SPEECH):
            missing.append(" or ".join(NO_SPEECH))
        if missing:
            raise InputError(
                f"The vocabulary lacks Whisper's special tokens {missing}. Fix: build the "
                "tokenizer from the model's tokenizer.json (WhisperTokenizer.from_huggingface"
                "(path)), which lists them as added tokens."
            )
        vocabulary = _with_timestamps(vocabulary, vocabulary[NO_TIMESTAMPS] + 1)
        super().set_vocabulary(vocabulary, merges)
        if self.is_multilingual is None:
            self.is_multilingual = vocabulary[EOT] > ENGLISH_ONLY_EOT
        translate = min(vocabulary[TRANSLATE], vocabulary[TRANSCRIBE])
        found = sorted((index, match.group(1)) for token, index in vocabulary.items()
                       if vocabulary[SOT] < index < translate
                       and (match := _LANGUAGE.fullmatch(token)))
        self._language_tokens = {code: index for index, code in found}
        self._non_speech = None

    @classmethod
    def from_huggingface(cls, path: str | Path, **kwargs: Any) -> WhisperTokenizer:
        """Build from a transformers or CTranslate2 folder, or a `tokenizer.json` file.

        A folder's tokenizer.json is used when present (it lists every
        `<|...|>` token); otherwise vocab.json + merges.txt + added_tokens.json.

        Args:
            path: a folder (transformers `save_pretrained`, a Hub snapshot, a
                CTranslate2 model such as faster-whisper's) or a tokenizer.json.
            **kwargs: other constructor arguments, e.g. `is_multilingual`.

        Raises:
            FileNotFoundError: the folder has none of these files.
        """
        path = Path(path)
        if path.is_dir() and (path / HF_TOKENIZER_FILE).is_file():
            path = path / HF_TOKENIZER_FILE
        elif path.is_dir() and (path / HF_ADDED_TOKENS_FILE).is_file():
            vocabulary = read_vocabulary(path / HF_VOCABULARY_FILE)
            added = json.loads((path / HF_ADDED_TOKENS_FILE).read_text(encoding="utf-8"))
            vocabulary.update({str(t): int(i) for t, i in added.items()})
            return cls(**{"vocabulary": vocabulary, "merges": path / HF_MERGES_FILE, **kwargs})
        return super().from_huggingface(path, **kwargs)  # type: ignore[return-value]

    def _build_backend(self) -> Any:
        backend = super()._build_backend()
        eot = self._id(EOT)
        specials = [t for t, i in sorted(self.vocabulary.items(), key=lambda item: item[1])
                    if i >= eot and _SPECIAL.fullmatch(t)]
        backend.add_special_tokens(specials)
        return backend

    def _templates(self, before: list[str], after: list[str]) -> tuple[str, str]:
        """Whisper joins a pair without repeating the prompt: `sot nt a b eot`
        (the second segment and the end token have type id 1), as the
        post-processor of its tokenizer.json and transformers'
        `build_inputs_with_special_tokens` do."""
        single = " ".join([*before, "$A:0", *after])
        return single, " ".join([*before, "$A:0", "$B:1", *(f"{t}:1" for t in after)])

    def _vocabulary(self) -> dict[str, int]:
        if self.vocabulary is None:
            raise InputError(
                "This tokenizer has no vocabulary yet. Fix: use "
                "WhisperTokenizer.from_huggingface(path) or from_preset()."
            )
        return self.vocabulary

    def _id(self, token: str) -> int:
        return self._vocabulary()[token]

    # -- special ids ---------------------------------------------------------
    @property
    def eot(self) -> int:
        """`<|endoftext|>`: ends a transcript; also used for padding."""
        return self._id(EOT)

    @property
    def sot(self) -> int:
        """`<|startoftranscript|>`: the first token of every prompt."""
        return self._id(SOT)

    @property
    def transcribe(self) -> int:
        """`<|transcribe|>`: task token, speech to text in the same language."""
        return self._id(TRANSCRIBE)

    @property
    def translate(self) -> int:
        """`<|translate|>`: task token, speech to English text."""
        return self._id(TRANSLATE)

    @property
    def sot_lm(self) -> int | None:
        """`<|startoflm|>` (unused by the released models), `None` if absent."""
        return self._vocabulary().get(SOT_LM)

    @property
    def sot_prev(self) -> int:
        """`<|startofprev|>`: precedes the previous window's text given as a prompt."""
        return self._id(SOT_PREV)

    @property
    def no_speech(self) -> int:
        """`<|nospeech|>` (large-v3) or `<|nocaptions|>`: its probability after
        the prompt's `sot` says whether the window holds speech."""
        vocabulary = self._vocabulary()
        return next(vocabulary[t] for t in NO_SPEECH if t in vocabulary)

    @property
    def no_timestamps(self) -> int:
        """`<|notimestamps|>`: ends a prompt whose text has no timestamps."""
        return self._id(NO_TIMESTAMPS)

    @property
    def timestamp_begin(self) -> int:
        """Id of `<|0.00|>`, the first timestamp token (right after `<|notimestamps|>`)."""
        return self._id(NO_TIMESTAMPS) + 1

    @property
    def language_tokens(self) -> dict[str, int]:
        """`{language code: id}` in id order; empty for English-only models."""
        self._vocabulary()
        return dict(self._language_tokens) if self.is_multilingual else {}

    @property
    def language_codes(self) -> list[str]:
        """Language codes in id order (the order of language detection scores)."""
        return list(self.language_tokens)

    # -- prompts -------------------------------------------------------------
    def sot_sequence(
        self, language: str | None = None, task: str = "transcribe", timestamps: bool = False,
    ) -> list[int]:
        """The tokens the decoder starts from, as openai-whisper and faster-whisper build them.

        English-only models: `[sot]`; multilingual: `[sot, language, task]`;
        both followed by `no_timestamps` unless `timestamps=True`.

        Args:
            language: a code from `language_codes` (`"he"` and `"iw"` are the
                same). Required for multilingual models (detect it from the
                decoder's scores after `[sot]`); English-only models accept
                only `None` or `"en"`.
            task: `"transcribe"` or `"translate"` (English-only models ignore
                it, as the references do).
            timestamps: let the model predict timestamp tokens.

        Raises:
            ValueError: unknown task or language, or a language other than
                English for an English-only model.
        """
        if task not in TASKS:
            raise InputError(
                f"Unknown task {task!r}. Fix: pass task='transcribe' (same language) or "
                "task='translate' (to English)."
            )
        sequence = [self.sot]
        if self.is_multilingual:
            sequence += [self._language_id(language), self._id(f"<|{task}|>")]
        elif language not in (None, "en"):
            raise InputError(
                f"This tokenizer belongs to an English-only Whisper model, which cannot take "
                f"language={language!r}. Fix: pass language='en' or None, or use a "
                "multilingual model (one whose name has no '.en')."
            )
        if not timestamps:
            sequence.append(self.no_timestamps)
        return sequence

    def _language_id(self, language: str | None) -> int:
        codes = self.language_tokens
        if language is None:
            raise InputError(
                "A multilingual Whisper model needs language=... in its prompt. Fix: pass "
                f"a code such as {', '.join(repr(c) for c in list(codes)[:5])}, or detect it: "
                "the highest-scoring language token after [tokenizer.sot]."
            )
        code = str(language).lower()
        if code not in codes and _LANGUAGE_ALIASES.get(code) in codes:
            code = _LANGUAGE_ALIASES[code]
        if code not in codes:
            raise InputError(
                f"Unknown language code {language!r}. Fix: pass one of the {len(codes)} codes "
                f"in tokenizer.language_codes, e.g. {', '.join(repr(c) for c in list(codes)[:8])}."
            )
        return codes[code]

    # -- timestamps ----------------------------------------------------------
    def timestamp_token(self, seconds: float) -> int:
        """The timestamp token nearest to `seconds` (0 to 30, steps of 0.02 s).

        Raises:
            ValueError: `seconds` is outside a 30 s window.
        """
        index = round(float(seconds) / TIME_PRECISION)
        if not 0 <= index < NUM_TIMESTAMPS:
            raise InputError(
                f"{seconds} s is outside Whisper's 30 s window. Fix: pass seconds "
                "relative to the start of the window, between 0 and 30."
            )
        return self.timestamp_begin + index

    def timestamp_seconds(self, token_id: int) -> float:
        """Seconds from the start of the window that timestamp token `token_id` marks.

        Raises:
            ValueError: `token_id` is not a timestamp token.
        """
        index = int(token_id) - self.timestamp_begin
        if not 0 <= index < NUM_TIMESTAMPS:
            raise InputError(
                f"Id {token_id} is not a timestamp token (those are {self.timestamp_begin}"
                f"..{self.timestamp_begin + NUM_TIMESTAMPS - 1}). Fix: check "
                "is_timestamp(token_id) first."
            )
        return index * TIME_PRECISION

    def is_timestamp(self, token_id: int) -> bool:
        """Whether `token_id` is a timestamp token."""
        return int(token_id) >= self.timestamp_begin

    # -- decoding ------------------------------------------------------------
    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of `ids`, without special or timestamp tokens."""
        eot = self.eot
        return self.backend.decode([int(i) for i in np.asarray(ids).ravel() if i < eot])

    def decode_with_timestamps(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of `ids` with timestamps written out, e.g. `<|1.08|>`; other
        special tokens are dropped."""
        begin, parts, run = self.timestamp_begin, [], []
        for i in (int(i) for i in np.asarray(ids).ravel()):
            if i >= begin:
                parts += [self.backend.decode(run), f"<|{(i - begin) * TIME_PRECISION:.2f}|>"]
                run = []
            else:
                run.append(i)
        return "".join(parts) + self.backend.decode(run)

    def split_to_word_tokens(
        self, ids: Sequence[int] | np.ndarray, language: str | None = None,
    ) -> tuple[list[str], list[list[int]]]:
        """Group `ids` into words, for word-level timestamps.

        Words start at a space, a punctuation mark or a special token, as in
        openai-whisper. Languages written without spaces (zh, ja, th, lo, my,
        yue) are split wherever the decoded text is whole characters. Trailing
        ids that do not complete a character are left out.

        Args:
            ids: token ids of a transcript (special tokens allowed).
            language: the transcript's language code; `None` means English.

        Returns:
            `(words, word_ids)`: the text of each word and its token ids.
        """
        ids = [int(i) for i in np.asarray(ids).ravel()]
        if language in NO_SPACE_LANGUAGES:
            return self._split_on_characters(ids)
        eot = self.eot
        words: list[str] = []
        groups: list[list[int]] = []
        for piece, piece_ids in zip(*self._split_on_characters(ids)):
            if (not words or piece_ids[0] >= eot or piece.startswith(" ")
                    or piece.strip() in string.punctuation):
                words.append(piece)
                groups.append(piece_ids)
            else:
                words[-1] += piece
                groups[-1].extend(piece_ids)
        return words, groups

    def _split_on_characters(self, ids: list[int]) -> tuple[list[str], list[list[int]]]:
        # A group ends once its text decodes without U+FFFD, or when the U+FFFD
        # it shows is also in the text of the whole sequence (a real one).
        full = self.decode_with_timestamps(ids)
        words: list[str] = []
        groups: list[list[int]] = []
        group: list[int] = []
        offset = 0
        for i in ids:
            group.append(i)
            text = self.decode_with_timestamps(group)
            bad = text.find("\ufffd")
            if bad < 0 or (offset + bad < len(full) and full[offset + bad] == "\ufffd"):
                words.append(text)
                groups.append(group)
                group = []
                offset += len(text)
        return words, groups

    def non_speech_tokens(self) -> list[int]:
        """Sorted ids suppressed while decoding so that the model does not write
        speaker tags, music notes or annotations that nobody said, e.g. `♪♪♪`,
        `( SPEAKING FOREIGN LANGUAGE )`, `[DAVID] Hey there`.

        Each symbol's token is suppressed when the symbol (alone or after a
        space) is one token; for musical notes the first token always is.
        `" -"` and `" '"` are suppressed too (hyphens and apostrophes stay
        allowed inside words). Equals faster-whisper's
        `Tokenizer.non_speech_tokens` and openai-whisper's list.
        """
        if self._non_speech is None:
            result = {self.tokenize(" -")[0], self.tokenize(" '")[0]}
            for symbol in [*_NON_SPEECH_SYMBOLS, *_MUSIC_SYMBOLS]:
                for ids in (self.tokenize(symbol), self.tokenize(" " + symbol)):
                    if len(ids) == 1 or symbol in _MUSIC_SYMBOLS:
                        result.add(ids[0])
            self._non_speech = sorted(result)
        return list(self._non_speech)

    # -- config --------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "is_multilingual": self.is_multilingual}


def _with_timestamps(vocabulary: dict[str, int], begin: int) -> dict[str, int]:
    """`vocabulary` with `<|0.00|>` ... `<|30.00|>` at ids `begin` ... `begin + 1500`."""
    tokens = {index: token for token, index in vocabulary.items()}
    out = dict(vocabulary)
    for k in range(NUM_TIMESTAMPS):
        token, index = timestamp_text(k), begin + k
        if out.get(token, index) != index or tokens.get(index, token) != token:
            raise InputError(
                f"Timestamp token {token} should have id {index} (right after "
                f"<|notimestamps|>), but the vocabulary gives it id {out.get(token)} and id "
                f"{index} to {tokens.get(index)!r}. Fix: use the tokenizer.json that ships "
                "with the model."
            )
        out[token] = index
    return out
