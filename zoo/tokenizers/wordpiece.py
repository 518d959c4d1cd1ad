"""WordPiece tokenization (BERT-style) over the `tokenizers` library."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from zoo.core.tokenizer import Tokenizer

VOCABULARY_FILE = "vocabulary.txt"


def read_vocabulary(path: str | Path) -> list[str]:
    """One token per line, id = line number (as BERT's vocab.txt)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


class WordPieceTokenizer(Tokenizer):
    """WordPiece with BERT's normalisation and `[CLS] a [SEP] b [SEP]` templates.

    Args:
        vocabulary: a list of tokens (id = position), or a path to a
            one-token-per-line file; `None` until assets are loaded.
        lowercase: lowercase the text first.
        strip_accents: remove accents; `None` follows `lowercase` (as BERT).
        split_cjk: put spaces around CJK characters so each is a word.
        special_tokens: token strings for the roles `pad`, `unk`, `cls`,
            `sep`, `mask`.
        max_chars_per_word: longer words become the unknown token.
    """

    asset_files = (VOCABULARY_FILE,)
    default_special_tokens = {
        "pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]",
    }

    def __init__(
        self,
        vocabulary: Sequence[str] | str | Path | None = None,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        split_cjk: bool = True,
        special_tokens: dict[str, str] | None = None,
        max_chars_per_word: int = 100,
    ) -> None:
        super().__init__()
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.split_cjk = split_cjk
        self.special_tokens = {**self.default_special_tokens, **(special_tokens or {})}
        self.max_chars_per_word = max_chars_per_word
        self.vocabulary: list[str] | None = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    def set_vocabulary(self, vocabulary: Sequence[str] | str | Path) -> None:
        """Set the vocabulary (a token list or a path to a vocab file)."""
        if isinstance(vocabulary, (str, Path)):
            vocabulary = read_vocabulary(vocabulary)
        vocabulary = list(vocabulary)
        missing = [t for t in self.special_tokens.values() if t not in vocabulary]
        if missing:
            raise ValueError(
                f"The vocabulary lacks the special tokens {missing}. Fix: add them, or "
                "pass special_tokens= naming the tokens this vocabulary uses."
            )
        self.vocabulary = vocabulary
        self._backend = None

    def _build_backend(self) -> _Backend:
        if self.vocabulary is None:
            raise ValueError(
                "This tokenizer has no vocabulary yet. Fix: pass vocabulary= or load "
                "it with from_preset()."
            )
        vocab = {token: i for i, token in enumerate(self.vocabulary)}
        backend = _Backend(models.WordPiece(
            vocab, unk_token=self.special_tokens["unk"],
            max_input_chars_per_word=self.max_chars_per_word,
        ))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=self.split_cjk,
            strip_accents=self.strip_accents, lowercase=self.lowercase,
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        cls, sep = self.special_tokens["cls"], self.special_tokens["sep"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
        )
        backend.add_special_tokens(list(dict.fromkeys(self.special_tokens.values())))
        return backend

    def save_assets(self, directory: Path) -> None:
        if self.vocabulary is None:
            raise ValueError("Cannot save a tokenizer that has no vocabulary.")
        with open(Path(directory) / VOCABULARY_FILE, "w", encoding="utf-8") as f:
            f.writelines(token + "\n" for token in self.vocabulary)

    def load_assets(self, directory: Path) -> None:
        self.set_vocabulary(Path(directory) / VOCABULARY_FILE)

    def get_config(self) -> dict[str, Any]:
        return {
            "lowercase": self.lowercase,
            "strip_accents": self.strip_accents,
            "split_cjk": self.split_cjk,
            "special_tokens": dict(self.special_tokens),
            "max_chars_per_word": self.max_chars_per_word,
        }
