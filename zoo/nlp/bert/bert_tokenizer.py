"""BERT's WordPiece tokenizer."""

from __future__ import annotations

import keras

from zoo.tokenizers.wordpiece import WordPieceTokenizer


@keras.saving.register_keras_serializable(package="zoo")
class BertTokenizer(WordPieceTokenizer):
    """WordPiece tokenizer with BERT's special tokens; ids equal transformers'.

    See `WordPieceTokenizer` for arguments.

    Example:

    >>> from zoo.models import BertTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "qu", "##ick"]
    >>> tokenizer = BertTokenizer(vocabulary=vocab)
    >>> tokenizer.tokenize("The quick")
    [5, 6, 7]
    >>> tokenizer.encode(["The quick"], sequence_length=6)["token_ids"].tolist()
    [[2, 5, 6, 7, 3, 0]]
    >>> tokenizer.detokenize([2, 5, 6, 7, 3])
    'the quick'
    """
