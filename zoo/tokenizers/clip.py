"""CLIP's byte-level BPE (the text side of CLIP and Stable Diffusion).

Differences from GPT-2's byte-level BPE: the text is NFC-normalized,
runs of whitespace become one space and everything is lowercased; words are
split by CLIP's pattern (letters, single digits, punctuation runs,
contractions) and spaces are dropped, each word's last piece carrying an
`</w>` suffix instead. Every sequence is `<|startoftext|> ... <|endoftext|>`,
padded to 77 tokens (SD v1 pads with `<|endoftext|>`).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from tokenizers import Regex
from tokenizers import Tokenizer as _Backend
from tokenizers import models, normalizers, pre_tokenizers, processors

from zoo.core.tokenizer import as_text_list
from zoo.tokenizers.byte_pair import (
    HF_MERGES_FILE,
    HF_TOKENIZER_CONFIG_FILE,
    HF_TOKENIZER_FILE,
    HF_VOCABULARY_FILE,
    BytePairTokenizer,
    _merge_to_str,
)

#: CLIP's word pattern (special tokens, contractions, letter runs, single
#: digits, runs of other non-space characters)
CLIP_SPLIT_PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"
                      r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
END_OF_WORD = "</w>"
#: the vocabulary file the open_clip_torch wheel ships
OPEN_CLIP_VOCABULARY = "bpe_simple_vocab_16e6.txt.gz"
#: CLIP's context length
CONTEXT_LENGTH = 77


def byte_characters() -> dict[int, str]:
    """byte value -> the printable character standing for it (GPT-2's map), in
    CLIP's vocabulary order: the bytes that are printable themselves first."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@functools.lru_cache(maxsize=1)
def _byte_values() -> dict[str, int]:
    """The inverse of `byte_characters()`: printable character -> byte value."""
    return {c: b for b, c in byte_characters().items()}


def open_clip_vocabulary() -> tuple[dict[str, int], list[str]]:
    """(vocabulary, merges) from open_clip's `bpe_simple_vocab_16e6.txt.gz`.

    The file lists merges after a header line; CLIP keeps the first
    49152 - 256 - 2 of them. The vocabulary is the 256 byte characters,
    the same with `</w>`, every merge's result, then the two special tokens:
    49408 tokens. open_clip is located, not imported (its package needs
    torchvision).

    Raises:
        FileNotFoundError: open_clip_torch is not installed.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "CLIP's vocabulary comes from the open_clip_torch package, which is not "
            "installed. Fix: pip install --no-deps open_clip_torch, or load the tokenizer "
            "from a folder with vocab.json + merges.txt (CLIPTokenizer.from_huggingface).")
    path = Path(list(spec.submodule_search_locations)[0]) / OPEN_CLIP_VOCABULARY
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [" ".join(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    base = list(byte_characters().values())
    tokens = [*base, *(c + END_OF_WORD for c in base), *(m.replace(" ", "") for m in merges),
              "<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


@keras.saving.register_keras_serializable(package="zoo")
class CLIPTokenizer(BytePairTokenizer):
    """CLIP's tokenizer: `encode` gives `(batch, 77)` ids with BOS/EOS and padding.

    Args:
        vocabulary: `{token: id}` or a path to vocab.json (None until assets load).
        merges: merge rules or a path to merges.txt.
        special_tokens: roles `bos` (`<|startoftext|>`), `eos` and `pad`
            (both `<|endoftext|>` for SD v1; SD 2 pads with `"!"`).
        sequence_length: default length of `encode` (77, CLIP's context).

    Example:

    >>> from zoo.tokenizers.clip import CLIPTokenizer
    >>> tokenizer = CLIPTokenizer.from_open_clip()
    >>> tokenizer.tokenize("A photo of a cat")
    [320, 1125, 539, 320, 2368]
    >>> encoded = tokenizer.encode(["a photo of a cat"])
    >>> encoded["token_ids"][0, :7].tolist(), encoded["num_tokens"].tolist()
    ([49406, 320, 1125, 539, 320, 2368, 49407], [7])
    >>> tokenizer.detokenize(encoded["token_ids"][0])
    'a photo of a cat'
    """

    default_special_tokens = {"bos": "<|startoftext|>", "eos": "<|endoftext|>",
                              "pad": "<|endoftext|>", "unk": "<|endoftext|>"}
    default_prepend = ("bos",)
    default_append = ("eos",)

    def __init__(self, vocabulary: Mapping[str, int] | str | Path | None = None,
                 merges: Sequence[str] | str | Path | None = None,
                 special_tokens: dict[str, str] | None = None,
                 sequence_length: int = CONTEXT_LENGTH, **kwargs: Any) -> None:
        kwargs.pop("add_prefix_space", None)
        super().__init__(vocabulary, merges, special_tokens=special_tokens, **kwargs)
        self.sequence_length = int(sequence_length)

    @classmethod
    def from_open_clip(cls, **kwargs: Any) -> CLIPTokenizer:
        """CLIP's vocabulary from the installed open_clip_torch wheel (offline)."""
        vocabulary, merges = open_clip_vocabulary()
        return cls(vocabulary, merges, **kwargs)

    @classmethod
    def from_huggingface(cls, path: str | Path, **kwargs: Any) -> CLIPTokenizer:
        """From a transformers / diffusers `tokenizer/` folder: vocab.json +
        merges.txt, or tokenizer.json; the pad token from tokenizer_config.json
        (or special_tokens_map.json) when it names one."""
        path = Path(path)
        found: dict[str, Any]
        if (path / HF_VOCABULARY_FILE).is_file() and (path / HF_MERGES_FILE).is_file():
            found = {"vocabulary": path / HF_VOCABULARY_FILE, "merges": path / HF_MERGES_FILE}
        elif (path / HF_TOKENIZER_FILE).is_file():
            data = json.loads((path / HF_TOKENIZER_FILE).read_text(encoding="utf-8"))
            model = data.get("model") or {}
            if model.get("type") != "BPE" or model.get("end_of_word_suffix") != END_OF_WORD:
                raise ValueError(f"{path / HF_TOKENIZER_FILE} is not a CLIP tokenizer (BPE "
                                 f"with the {END_OF_WORD!r} suffix). Fix: pass CLIP's folder.")
            vocabulary = dict(model["vocab"])
            for added in data.get("added_tokens") or []:
                vocabulary.setdefault(added["content"], added["id"])
            found = {"vocabulary": vocabulary,
                     "merges": [_merge_to_str(m) for m in model.get("merges") or []]}
        else:
            raise FileNotFoundError(
                f"{path} has neither {HF_VOCABULARY_FILE} + {HF_MERGES_FILE} nor "
                f"{HF_TOKENIZER_FILE}. Fix: point at the tokenizer/ folder of the model.")
        for name in (HF_TOKENIZER_CONFIG_FILE, "special_tokens_map.json"):
            if (path / name).is_file():
                pad = json.loads((path / name).read_text(encoding="utf-8")).get("pad_token")
                pad = pad.get("content") if isinstance(pad, dict) else pad
                if isinstance(pad, str):
                    found["special_tokens"] = {**kwargs.pop("special_tokens", {}), "pad": pad}
                    break
        return cls(**{**found, **kwargs})

    def _build_backend(self) -> _Backend:
        if self.vocabulary is None or self.merges is None:
            raise ValueError("This tokenizer has no vocabulary yet. Fix: use "
                             "CLIPTokenizer.from_open_clip() or from_preset().")
        vocab = dict(self.vocabulary)
        backend = _Backend(models.BPE(
            vocab, [tuple(m.split(" ")) for m in self.merges],
            unk_token=self.special_tokens.get("unk"), continuing_subword_prefix="",
            end_of_word_suffix=END_OF_WORD, fuse_unk=False, dropout=None))
        backend.normalizer = normalizers.Sequence([
            normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
        # ByteLevel splits each CLIP word again with GPT-2's pattern, as in
        # transformers: a "<|endoftext|>" the added-token matcher missed (written
        # in capitals, lowercased only by the normalizer) becomes "<|" "endoftext" "|>".
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        bos, eos = self.special_tokens["bos"], self.special_tokens["eos"]
        # transformers' RobertaProcessing: a pair is `bos a eos eos b eos`, all type 0.
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A:0 {eos}", pair=f"{bos} $A:0 {eos} {eos} $B:0 {eos}",
            special_tokens=[(t, vocab[t]) for t in dict.fromkeys((bos, eos))])
        # Special tokens (a pad token "!" included, as transformers does) match as
        # whole tokens anywhere in the text.
        backend.add_special_tokens(list(dict.fromkeys(self.special_tokens.values())))
        return backend

    def encode(self, texts: Any, pairs: Any = None, sequence_length: int | None = None,
               padding: str = "max_length", add_special_tokens: bool = True
               ) -> dict[str, np.ndarray]:
        """Like `Tokenizer.encode` (default length 77), plus `num_tokens`: each
        text's (or pair's) length with special tokens before truncation (longer
        than the sequence length: the text was truncated, its end dropped). A
        pair is `bos a eos eos b eos`, as in transformers."""
        length = self.sequence_length if sequence_length is None else sequence_length
        out = super().encode(texts, pairs, length, padding, add_special_tokens)
        batch, _ = as_text_list(texts)
        inputs: list = batch if pairs is None else list(zip(batch, as_text_list(pairs)[0]))
        self._set_truncation(None)
        out["num_tokens"] = np.asarray(
            [len(e.ids) for e in self.backend.encode_batch(
                inputs, add_special_tokens=add_special_tokens)], "int32")
        return out

    def detokenize(self, ids: Any, skip_special_tokens: bool = True) -> str | list[str]:
        """Text from ids: `</w>` becomes a space, bytes are decoded as UTF-8."""
        rows = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        if rows and isinstance(rows[0], (list, tuple)):
            return [self.detokenize(r, skip_special_tokens) for r in rows]
        specials = set(self.special_tokens.values())
        decoder = _byte_values()
        pieces = [self.id_to_token(int(i)) for i in rows]
        if skip_special_tokens:
            pieces = [p for p in pieces if p not in specials]
        text = "".join(pieces)
        data = bytes(decoder.get(c, ord(" ")) for c in text.replace(END_OF_WORD, " "))
        return data.decode("utf-8", errors="replace").strip()

    def get_config(self) -> dict[str, Any]:
        return {"special_tokens": dict(self.special_tokens),
                "sequence_length": self.sequence_length}
