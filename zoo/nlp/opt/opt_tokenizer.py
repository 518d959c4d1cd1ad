"""OPT's byte-level BPE tokenizer (GPT-2's merges, fairseq's special tokens)."""

from __future__ import annotations

import keras

from zoo.tokenizers.byte_pair import BytePairTokenizer


@keras.saving.register_keras_serializable(package="zoo")
class OPTTokenizer(BytePairTokenizer):
    """Byte-level BPE with OPT's special tokens; ids equal transformers'.

    OPT's vocabulary starts with `<s>` (0), `<pad>` (1), `</s>` (2) and
    `<unk>` (3), but OPT uses `</s>` as both start and end token: with
    `add_special_tokens=True` every segment is prefixed with `</s>` and
    nothing is appended (a pair is `</s> a </s> b`). Only `</s>` and `<pad>`
    are special; `<s>` or `<unk>` written in a text are split like any other
    characters, as in transformers. See `BytePairTokenizer` for arguments.

    Example:

    >>> from zoo.nlp.opt.opt_tokenizer import OPTTokenizer
    >>> vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "t": 4, "h": 5, "e": 6,
    ...          "Ġ": 7, "c": 8, "a": 9, "th": 10, "the": 11, "Ġc": 12, "Ġca": 13}
    >>> merges = ["t h", "th e", "Ġ c", "Ġc a"]
    >>> tokenizer = OPTTokenizer(vocabulary=vocab, merges=merges)
    >>> tokenizer.tokenize("the cat")
    [11, 13, 4]
    >>> tokenizer.encode(["the cat"], sequence_length=6)["token_ids"].tolist()
    [[2, 11, 13, 4, 1, 1]]
    >>> tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id
    (2, 2, 1)
    >>> tokenizer.detokenize([2, 11, 13, 4, 1, 1])
    'the cat'
    """

    default_special_tokens = {"bos": "</s>", "eos": "</s>", "pad": "<pad>"}
    default_prepend = ("bos",)
    default_append = ()
