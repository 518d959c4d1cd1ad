"""`Tokenizer`: the base of every zoo text tokenizer.

A zoo tokenizer is a thin layer over a Hugging Face `tokenizers.Tokenizer`
(the Rust library, fast and backend-neutral). Subclasses build that object
from their vocabulary assets in `_build_backend()`; this base class does the
batching, truncation, pair handling, padding to numpy arrays, decoding and
preset save/load.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.core import preset_classes, preset_handlers, preset_io
from zoo.core.errors import ConversionError, InputError, PresetError

TextInput = str | Sequence[str] | np.ndarray


def as_text_list(texts: Any, what: str = "texts") -> tuple[list[str], bool]:
    """Normalise `texts` to a list of str; also return whether it was one string.

    Bytes elements are decoded as UTF-8.

    Raises:
        InputError: (a TypeError) `texts` is not a string or a sequence of
            strings, an element is not text, is bytes that are not UTF-8, or
            holds a lone surrogate (text that cannot be UTF-8 encoded).
    """
    single = isinstance(texts, str)
    if single:
        texts = [texts]
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence):
        raise InputError(
            f"{what} must be a string or a list of strings, got {type(texts).__name__}. "
            'Fix: pass e.g. "some text" or ["first", "second"].'
        )
    out = []
    for i, text in enumerate(texts):
        name = what if single else f"{what}[{i}]"
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"{name} is bytes that are not UTF-8 ({e.reason} at byte {e.start}). "
                    "Fix: decode it with its own encoding first, e.g. data.decode('latin-1')."
                ) from None
        if not isinstance(text, str):
            raise InputError(
                f"{name} is a {type(text).__name__}, not a string. "
                "Fix: pass only strings (convert numbers with str())."
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(
                f"{name} holds {text[e.start]!r} at position {e.start}, a lone surrogate "
                "that is not text (often a file or argument read with errors='surrogateescape'"
                "). Fix: read the text with its real encoding, or drop those characters "
                "with text.encode('utf-8', 'ignore').decode()."
            ) from None
        out.append(text)
    return out, single


def bucket_length(length: int, maximum: int, minimum: int = 16) -> int:
    """Round `length` up to a power of two in [minimum, maximum].

    Padding to a few fixed lengths keeps compiled functions from retracing for
    every new batch length, while short batches stay cheap.

    >>> bucket_length(20, 512), bucket_length(300, 512), bucket_length(3, 8)
    (32, 512, 8)
    """
    size = minimum
    while size < length:
        size *= 2
    return max(1, min(size, maximum))


def check_fits_embedding(tokenizer: Tokenizer, rows: int, source: str,
                         embedding: str = "token embedding") -> None:
    """Raise a `ConversionError` when `tokenizer` can produce ids that `rows`
    embedding rows cannot hold (a tokenizer smaller than the embedding is fine:
    many checkpoints pad their vocabulary to a multiple of 8 or 64).

    Converters call this before writing a preset, so a checkpoint paired with
    the wrong tokenizer fails at conversion, not as an out-of-range gather
    (silently wrong on jax and tensorflow, an IndexError on torch).

    >>> from zoo.tokenizers.wordpiece import WordPieceTokenizer
    >>> tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    >>> check_fits_embedding(tokenizer, 5, "my_checkpoint")
    >>> check_fits_embedding(tokenizer, 4, "my_checkpoint")
    Traceback (most recent call last):
    ...
    zoo.core.errors.ConversionError: my_checkpoint: the tokenizer has 5 ids (0-4) but the token embedding has 4 rows, so ids from 4 up would read outside it. Fix: convert the checkpoint together with the tokenizer it was trained with (its tokenizer files next to config.json).
    """
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    size = max(tokenizer.vocabulary_size(), max(vocab.values(), default=-1) + 1)
    if size > rows:
        raise ConversionError(
            f"{source}: the tokenizer has {size} ids (0-{size - 1}) but the {embedding} has "
            f"{rows} rows, so ids from {rows} up would read outside it. Fix: convert the "
            "checkpoint together with the tokenizer it was trained with (its tokenizer "
            "files next to config.json).")


class Tokenizer:
    """Base class for zoo tokenizers.

    Subclasses set `special_tokens` roles (e.g. `{"pad": "[PAD]"}`), implement
    `_build_backend()`, `save_assets()`, `load_assets()` and `get_config()`.
    """

    #: file names under the preset's assets/tokenizer/ directory
    asset_files: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._backend = None
        self._truncation: int | None = -1

    # -- backend -------------------------------------------------------------
    def _build_backend(self) -> Any:
        raise NotImplementedError

    @property
    def backend(self) -> Any:
        """The underlying `tokenizers.Tokenizer`."""
        if self._backend is None:
            self._backend = self._build_backend()
            self._backend.no_padding()
            self._backend.no_truncation()
            self._truncation = None
        return self._backend

    def _set_truncation(self, max_length: int | None) -> None:
        backend = self.backend
        if max_length != self._truncation:
            if max_length is None:
                backend.no_truncation()
            else:
                backend.enable_truncation(max_length, strategy="longest_first")
            self._truncation = max_length

    # -- vocabulary ----------------------------------------------------------
    def vocabulary_size(self) -> int:
        """Number of ids, special tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def get_vocabulary(self) -> list[str]:
        """All tokens, ordered by id."""
        vocab = self.backend.get_vocab(with_added_tokens=True)
        return [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]

    def token_to_id(self, token: str) -> int:
        """The id of `token`; raises KeyError for unknown tokens."""
        index = self.backend.token_to_id(token)
        if index is None:
            raise KeyError(f"Token {token!r} is not in the vocabulary.")
        return index

    def id_to_token(self, index: int) -> str:
        """The token string for `index`."""
        token = self.backend.id_to_token(int(index))
        if token is None:
            raise KeyError(f"Id {index} is outside the vocabulary (size {self.vocabulary_size()}).")
        return token

    # -- encode / decode -----------------------------------------------------
    def tokenize(self, texts: TextInput) -> list[int] | list[list[int]]:
        """Token ids without special tokens, padding or truncation.

        Returns a list of ids for one string, a list of lists for a batch.
        """
        batch, single = as_text_list(texts)
        self._set_truncation(None)
        ids = [e.ids for e in self.backend.encode_batch(batch, add_special_tokens=False)]
        return ids[0] if single else ids

    __call__ = tokenize

    def detokenize(
        self, ids: Sequence[int] | Sequence[Sequence[int]] | np.ndarray,
        skip_special_tokens: bool = True,
    ) -> str | list[str]:
        """Turn ids back into text; a batch (2-D) gives a list of strings."""
        rows = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        if rows and isinstance(rows[0], (list, tuple, np.ndarray)):
            return self.backend.decode_batch(
                [[int(i) for i in row] for row in rows],
                skip_special_tokens=skip_special_tokens,
            )
        return self.backend.decode([int(i) for i in rows], skip_special_tokens)

    def encode(
        self,
        texts: TextInput,
        pairs: TextInput | None = None,
        sequence_length: int | None = None,
        padding: str = "max_length",
        add_special_tokens: bool = True,
    ) -> dict[str, np.ndarray]:
        """Batch-encode to padded numpy arrays.

        Args:
            texts: a string or a list of strings.
            pairs: optional second segments, one per text (sentence pairs).
            sequence_length: truncate (longest-first across a pair) to this
                many tokens, special tokens included. `None`: no truncation.
            padding: `"max_length"` pads to `sequence_length`; `"longest"` to
                the longest row; `"bucket"` to the next power of two (at least
                16, at most `sequence_length`), which bounds recompilation.
            add_special_tokens: add the model's special tokens (e.g. [CLS]/[SEP]).

        Returns:
            `{"token_ids", "padding_mask", "segment_ids"}`, int32 arrays of
            shape `(batch, length)`; `padding_mask` is 1 on real tokens.
        """
        batch, _ = as_text_list(texts)
        if pairs is not None:
            second, _ = as_text_list(pairs, "pairs")
            if len(second) != len(batch):
                raise InputError(
                    f"Got {len(batch)} texts but {len(second)} pairs. Fix: pass one "
                    "second segment per text."
                )
            inputs: list = list(zip(batch, second))
        else:
            inputs = batch
        if padding not in ("max_length", "longest", "bucket"):
            raise InputError(
                f"padding={padding!r} is not a padding mode. Fix: use 'max_length', "
                "'longest' or 'bucket'."
            )
        if padding == "max_length" and sequence_length is None:
            raise InputError("padding='max_length' needs a sequence_length. Fix: pass "
                             "sequence_length=..., or padding='longest'.")
        self._set_truncation(sequence_length)
        encodings = self.backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
        longest = max((len(e.ids) for e in encodings), default=0)
        if padding == "max_length":
            length = sequence_length
        elif padding == "longest":
            length = max(longest, 1)
        else:
            length = bucket_length(longest, sequence_length or max(longest, 16))
        pad_id = self.pad_token_id
        token_ids = np.full((len(encodings), length), pad_id, dtype="int32")
        segment_ids = np.zeros((len(encodings), length), dtype="int32")
        padding_mask = np.zeros((len(encodings), length), dtype="int32")
        for row, e in enumerate(encodings):
            n = len(e.ids)
            token_ids[row, :n] = e.ids
            segment_ids[row, :n] = e.type_ids
            padding_mask[row, :n] = 1
        return {"token_ids": token_ids, "padding_mask": padding_mask, "segment_ids": segment_ids}

    @property
    def pad_token_id(self) -> int:
        """Id used for padding."""
        return self.token_to_id(self.special_tokens["pad"])

    special_tokens: dict[str, str] = {}

    # -- config and presets --------------------------------------------------
    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Tokenizer:
        return cls(**config)

    def save_assets(self, directory: Path) -> None:
        """Write vocabulary files into `directory`."""
        raise NotImplementedError

    def load_assets(self, directory: Path) -> None:
        """Read vocabulary files written by `save_assets`."""
        raise NotImplementedError

    @classmethod
    def from_preset(cls, handle: str | os.PathLike, **overrides: Any) -> Tokenizer:
        """Load the tokenizer of a preset (see `Backbone.from_preset` for handles).

        Example:

        >>> from zoo.models import BertTokenizer
        >>> tok = BertTokenizer.from_preset("all_minilm_l6_v2")  # doctest: +SKIP
        """
        directory = preset_handlers.resolve(handle)
        data = preset_io.read_json(directory, preset_io.TOKENIZER_FILE)
        tokenizer_cls = preset_classes.get_class(data, cls, directory, "tokenizer")
        config = {**preset_classes.config_of(data, directory, preset_io.TOKENIZER_FILE),
                  **overrides}
        tokenizer = preset_classes.from_config(tokenizer_cls, config, directory,
                                          preset_io.TOKENIZER_FILE)
        # Hashes every asset, reads them, and builds the backend now, so a
        # broken vocabulary fails here with a PresetError, not at first use.
        preset_io.load_assets(tokenizer, directory, "tokenizer")
        tokenizer._check_special_tokens(directory)
        return tokenizer

    def _check_special_tokens(self, directory: Path) -> None:
        """Build the backend and check every special token is in the vocabulary.

        Raises:
            PresetError: the assets in `directory` cannot make a tokenizer, or
                lack a special token this tokenizer's config names.
        """
        try:
            vocabulary = self.backend.get_vocab(with_added_tokens=True)
        except Exception as e:  # the `tokenizers` library raises plain Exception too
            raise PresetError(
                f"The tokenizer assets in {directory} do not make a "
                f"{type(self).__name__} ({type(e).__name__}: {e}). "
                f"{preset_io.repair_hint(directory)}"
            ) from None
        missing = sorted({t for t in self.special_tokens.values() if t not in vocabulary})
        if missing:
            raise PresetError(
                f"The tokenizer vocabulary in {directory} lacks the special tokens "
                f"{missing} its config names. {preset_io.repair_hint(directory)}"
            )

    def save_to_preset(self, preset_dir: str | os.PathLike) -> None:
        """Save this tokenizer (config and assets) into `preset_dir`."""
        preset_io.write_preset(preset_dir, tokenizer=self)

