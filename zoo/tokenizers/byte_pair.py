"""Byte-level byte-pair encoding (GPT-2 style) over the `tokenizers` library.

Text is first turned into UTF-8 bytes, each byte shown as one printable
character (a space becomes `Ġ`), so every string can be encoded without an
unknown token and decoding gives back the exact text. GPT-2, RoBERTa, BART
and OPT tokenize this way; they differ only in their vocabulary and in which
special tokens they add around a sequence.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _Backend
from tokenizers import decoders, models, pre_tokenizers, processors

from zoo.core.tokenizer import Tokenizer

VOCABULARY_FILE = "vocabulary.json"
MERGES_FILE = "merges.txt"
#: transformers' file names
HF_VOCABULARY_FILE = "vocab.json"
HF_MERGES_FILE = "merges.txt"
HF_TOKENIZER_FILE = "tokenizer.json"
HF_TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


def read_vocabulary(path: str | Path) -> dict[str, int]:
    """A `{"token": id}` JSON file (GPT-2's vocab.json)."""
    with open(path, encoding="utf-8") as f:
        vocabulary = json.load(f)
    if not isinstance(vocabulary, dict):
        raise ValueError(
            f"{path} holds a JSON {type(vocabulary).__name__}, not a {{token: id}} object. "
            "Fix: pass the vocab.json that goes with merges.txt."
        )
    return vocabulary


def read_merges(path: str | Path) -> list[str]:
    """One merge `"a b"` per line; a first line starting `#version` is skipped."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    return [line.rstrip("\r") for line in lines if line.rstrip("\r")]


def _merge_to_str(merge: Any) -> str:
    if isinstance(merge, str):
        return merge
    if isinstance(merge, Sequence) and len(merge) == 2 and all(isinstance(p, str) for p in merge):
        return f"{merge[0]} {merge[1]}"
    raise ValueError(
        f"Merge {merge!r} is neither an 'a b' string nor a pair of strings."
    )


def read_tokenizer_json(path: str | Path) -> dict[str, Any]:
    """Vocabulary, merges and `add_prefix_space` of a transformers `tokenizer.json`.

    Merges are stored as `"a b"` strings by older `tokenizers` versions and as
    `["a", "b"]` pairs by newer ones; both are read. Added tokens whose ids are
    missing from the model's vocabulary are added to it.

    Returns:
        `{"vocabulary", "merges", "add_prefix_space"}`, arguments for
        `BytePairTokenizer`.

    Raises:
        ValueError: the file is not a GPT-2 style byte-level BPE tokenizer.
    """
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ValueError(
            f"{path} does not describe a BPE model (model.type is "
            f"{model.get('type')!r}). Fix: use the tokenizer class made for this model."
        )
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise ValueError(
            f"{path} uses subword prefixes/suffixes, which byte-level BPE does not. "
            "Fix: use the tokenizer class made for this model."
        )
    pre_tokenizer = data.get("pre_tokenizer") or {}
    if pre_tokenizer.get("type") != "ByteLevel" or not pre_tokenizer.get("use_regex", True):
        raise ValueError(
            f"{path} has the pre-tokenizer {pre_tokenizer.get('type')!r}, not GPT-2's "
            "ByteLevel with its split pattern, so this class would tokenize differently. "
            "Fix: use the tokenizer class made for this model."
        )
    vocabulary = dict(model["vocab"])
    taken = set(vocabulary.values())
    for added in data.get("added_tokens") or []:
        if added["content"] not in vocabulary and added["id"] not in taken:
            vocabulary[added["content"]] = added["id"]
            taken.add(added["id"])
    return {
        "vocabulary": vocabulary,
        "merges": [_merge_to_str(m) for m in model.get("merges") or []],
        "add_prefix_space": bool(pre_tokenizer.get("add_prefix_space", False)),
    }


class BytePairTokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style) with configurable special tokens.

    Special tokens are matched in the text before splitting (so `"</s>"`
    written in a string becomes one id); every other string, including
    accents, CJK, emoji and runs of spaces, is encoded losslessly.

    Args:
        vocabulary: `{token: id}`, or a path to a vocab.json file; `None`
            until assets are loaded.
        merges: merge rules in priority order, as `"a b"` strings (or pairs),
            or a path to a merges.txt file (its `#version` header is skipped).
        special_tokens: token strings for the roles `pad` (required), `bos`,
            `eos` and optionally `unk`, merged over the class defaults (GPT-2's
            `<|endoftext|>` for all three). Each must be in the vocabulary; an
            `unk` token is what the BPE model emits for unknown pieces.
        add_prefix_space: add a space before the text, so a first word is
            split like a word inside a sentence.
        prepend: roles whose tokens `add_special_tokens=True` puts before
            each segment, e.g. `("bos",)`; `None`: the class default.
        append: roles whose tokens go after each segment, e.g. `("eos",)`.

    Example:

    >>> from zoo.tokenizers.byte_pair import BytePairTokenizer
    >>> vocab = {"<|endoftext|>": 0, "<pad>": 1, "t": 2, "h": 3, "e": 4, "Ġ": 5,
    ...          "c": 6, "a": 7, "th": 8, "the": 9, "Ġc": 10, "Ġca": 11}
    >>> merges = ["t h", "th e", "Ġ c", "Ġc a"]
    >>> tokenizer = BytePairTokenizer(
    ...     vocab, merges, special_tokens={"pad": "<pad>"}, append=("eos",))
    >>> tokenizer.tokenize("the cat")
    [9, 11, 2]
    >>> tokenizer.encode(["the cat", "the"], sequence_length=5)["token_ids"].tolist()
    [[9, 11, 2, 0, 1], [9, 0, 1, 1, 1]]
    >>> tokenizer.detokenize([9, 11, 2, 0, 1])
    'the cat'
    """

    asset_files = (VOCABULARY_FILE, MERGES_FILE)
    default_special_tokens: dict[str, str] = {
        "bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": "<|endoftext|>",
    }
    default_prepend: tuple[str, ...] = ()
    default_append: tuple[str, ...] = ()

    def __init__(
        self,
        vocabulary: Mapping[str, int] | str | Path | None = None,
        merges: Sequence[str] | str | Path | None = None,
        special_tokens: dict[str, str] | None = None,
        add_prefix_space: bool = False,
        prepend: Sequence[str] | None = None,
        append: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.special_tokens = {**self.default_special_tokens, **(special_tokens or {})}
        if "pad" not in self.special_tokens:
            raise ValueError('special_tokens needs a "pad" role (the token used for padding).')
        self.add_prefix_space = bool(add_prefix_space)
        self.prepend = self._check_roles(self.default_prepend if prepend is None else prepend,
                                         "prepend")
        self.append = self._check_roles(self.default_append if append is None else append,
                                        "append")
        self.vocabulary: dict[str, int] | None = None
        self.merges: list[str] | None = None
        if vocabulary is not None or merges is not None:
            if vocabulary is None or merges is None:
                raise ValueError(
                    "Byte-pair encoding needs both vocabulary= and merges= (got only "
                    f"{'vocabulary' if merges is None else 'merges'}). Fix: pass both, "
                    "e.g. the vocab.json and merges.txt of the model."
                )
            self.set_vocabulary(vocabulary, merges)

    def _check_roles(self, roles: Sequence[str], what: str) -> tuple[str, ...]:
        roles = (roles,) if isinstance(roles, str) else tuple(roles)
        unknown = [r for r in roles if r not in self.special_tokens]
        if unknown:
            raise ValueError(
                f"{what}= names the roles {unknown}, which special_tokens does not "
                f"define (it has {sorted(self.special_tokens)}). Fix: add them to "
                "special_tokens= or name defined roles."
            )
        return roles

    def set_vocabulary(
        self,
        vocabulary: Mapping[str, int] | str | Path,
        merges: Sequence[str] | str | Path,
    ) -> None:
        """Set the vocabulary and merges (objects, or paths to vocab.json / merges.txt).

        Raises:
            ValueError: ids repeat, a merge is malformed or uses tokens missing
                from the vocabulary, or a special token is missing.
        """
        if isinstance(vocabulary, (str, Path)):
            vocabulary = read_vocabulary(vocabulary)
        if isinstance(merges, (str, Path)):
            merges = read_merges(merges)
        vocabulary = {str(token): int(index) for token, index in dict(vocabulary).items()}
        if len(set(vocabulary.values())) != len(vocabulary):
            raise ValueError("The vocabulary gives the same id to several tokens.")
        merges = [_merge_to_str(m) for m in merges]
        for line, merge in enumerate(merges, start=1):
            parts = merge.split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(
                    f"Merge {line} ({merge!r}) is not two tokens separated by one space."
                )
            missing = [t for t in (*parts, parts[0] + parts[1]) if t not in vocabulary]
            if missing:
                raise ValueError(
                    f"Merge {line} ({merge!r}) uses {missing}, which the vocabulary lacks. "
                    "Fix: pass the merges.txt that belongs to this vocab.json."
                )
        missing = [t for t in dict.fromkeys(self.special_tokens.values()) if t not in vocabulary]
        if missing:
            raise ValueError(
                f"The vocabulary lacks the special tokens {missing}. Fix: add them, or "
                "pass special_tokens= naming the tokens this vocabulary uses."
            )
        self.vocabulary = vocabulary
        self.merges = merges
        self._backend = None

    @classmethod
    def from_huggingface(cls, path: str | Path, **kwargs: Any) -> BytePairTokenizer:
        """Build from a transformers tokenizer folder or `tokenizer.json` file.

        A folder's vocab.json + merges.txt are used when present, otherwise its
        tokenizer.json. Special-token roles and templates come from the class
        (or `kwargs`), not from the folder.

        Args:
            path: a folder saved by transformers, or a tokenizer.json file.
            **kwargs: other constructor arguments (they win over the folder's).

        Raises:
            FileNotFoundError: neither vocab.json + merges.txt nor tokenizer.json.
        """
        path = Path(path)
        if path.is_dir():
            vocab, merges = path / HF_VOCABULARY_FILE, path / HF_MERGES_FILE
            if vocab.is_file() and merges.is_file():
                found: dict[str, Any] = {"vocabulary": vocab, "merges": merges}
                config = path / HF_TOKENIZER_CONFIG_FILE
                if config.is_file():
                    hf_config = json.loads(config.read_text(encoding="utf-8"))
                    if "add_prefix_space" in hf_config:
                        found["add_prefix_space"] = bool(hf_config["add_prefix_space"])
            elif (path / HF_TOKENIZER_FILE).is_file():
                found = read_tokenizer_json(path / HF_TOKENIZER_FILE)
            else:
                raise FileNotFoundError(
                    f"{path} has neither {HF_VOCABULARY_FILE} + {HF_MERGES_FILE} nor "
                    f"{HF_TOKENIZER_FILE}. Fix: point at the folder transformers saved "
                    "the tokenizer into."
                )
        elif path.is_file():
            found = read_tokenizer_json(path)
        else:
            raise FileNotFoundError(f"{path} does not exist.")
        return cls(**{**found, **kwargs})

    def _build_backend(self) -> _Backend:
        if self.vocabulary is None or self.merges is None:
            raise ValueError(
                "This tokenizer has no vocabulary yet. Fix: pass vocabulary= and merges= "
                "or load it with from_preset()."
            )
        vocab = dict(self.vocabulary)
        backend = _Backend(models.BPE(
            vocab, [tuple(m.split(" ")) for m in self.merges],
            unk_token=self.special_tokens.get("unk"), continuing_subword_prefix="",
            end_of_word_suffix="", fuse_unk=False, dropout=None,
        ))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(
            add_prefix_space=self.add_prefix_space, use_regex=True,
        )
        backend.decoder = decoders.ByteLevel()
        before = [self.special_tokens[r] for r in self.prepend]
        after = [self.special_tokens[r] for r in self.append]
        single, pair = self._templates(before, after)
        backend.post_processor = processors.TemplateProcessing(
            single=single, pair=pair,
            special_tokens=[(t, vocab[t]) for t in dict.fromkeys(before + after)],
        )
        backend.add_special_tokens(list(dict.fromkeys(self.special_tokens.values())))
        return backend

    def _templates(self, before: list[str], after: list[str]) -> tuple[str, str]:
        """`(single, pair)` templates (`tokenizers.processors.TemplateProcessing`
        syntax) from the tokens put before and after each segment.

        A pair repeats the pattern for its second segment with type id 1:
        `before a after before b after` (GPT-2 style tokenizers, OPT).
        Subclasses whose reference joins pairs differently override this.
        """
        first = [*before, "$A:0", *after]
        second = [f"{t}:1" for t in before] + ["$B:1"] + [f"{t}:1" for t in after]
        return " ".join(first), " ".join(first + second)

    def _role_id(self, role: str) -> int:
        if role not in self.special_tokens:
            raise ValueError(f"This tokenizer has no {role!r} special token.")
        return self.token_to_id(self.special_tokens[role])

    @property
    def start_token_id(self) -> int:
        """Id of the `bos` token (start of a sequence)."""
        return self._role_id("bos")

    @property
    def end_token_id(self) -> int:
        """Id of the `eos` token (end of a sequence; generation stops on it)."""
        return self._role_id("eos")

    def save_assets(self, directory: Path) -> None:
        if self.vocabulary is None or self.merges is None:
            raise ValueError("Cannot save a tokenizer that has no vocabulary.")
        directory = Path(directory)
        ordered = dict(sorted(self.vocabulary.items(), key=lambda item: item[1]))
        with open(directory / VOCABULARY_FILE, "w", encoding="utf-8") as f:
            json.dump(ordered, f, ensure_ascii=False)
        with open(directory / MERGES_FILE, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            f.writelines(merge + "\n" for merge in self.merges)

    def load_assets(self, directory: Path) -> None:
        directory = Path(directory)
        self.set_vocabulary(directory / VOCABULARY_FILE, directory / MERGES_FILE)

    def get_config(self) -> dict[str, Any]:
        return {
            "special_tokens": dict(self.special_tokens),
            "add_prefix_space": self.add_prefix_space,
            "prepend": list(self.prepend),
            "append": list(self.append),
        }
