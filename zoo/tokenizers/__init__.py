"""Tokenizer building blocks: thin layers over `tokenizers` and `sentencepiece`."""

from zoo.tokenizers.wordpiece import WordPieceTokenizer

__all__ = ["WordPieceTokenizer"]
