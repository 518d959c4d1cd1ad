"""Tokenizer building blocks: thin layers over `tokenizers` and `sentencepiece`."""

from zoo.tokenizers.byte_pair import BytePairTokenizer
from zoo.tokenizers.wordpiece import WordPieceTokenizer

__all__ = ["BytePairTokenizer", "WordPieceTokenizer"]
