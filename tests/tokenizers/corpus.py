"""A real, multilingual text corpus gathered offline from the installed environment.

Tokenizer parity tests run every line of it through zoo's tokenizer and the
reference one. Nothing is downloaded; the lines come from:

- `docs`: documentation, README, licence and METADATA files of the installed
  Python packages (site-packages), mostly English prose, Markdown, reStructuredText
  and licence text, with their translated README links (Chinese, Japanese,
  Korean, Hindi, Arabic, ...);
- `source`: lines with non-ASCII characters in the installed packages' Python
  sources (docstrings, comments and string literals: CJK examples, emoji
  tables, box drawing, Greek maths, Arabic, Cyrillic ...);
- `stdlib`: Python's own test data (`test/cjkencodings/*-utf8.txt`: Chinese,
  Japanese and Korean text; the email test messages; non-ASCII lines of the
  stdlib tests);
- `unicode`: lines made from Python's `unicodedata` database: characters of
  many scripts, their names, combining marks, zero-width characters and odd
  whitespace, control characters, and NFD / NFKC / upper-case variants of
  real lines (the normalizations tokenizers apply or skip);
- `speech`: the scripts of the speech fixtures (tests/data/speech).

Selection is deterministic: paths are sorted, sampling uses a seeded
`random.Random`, lines are deduplicated (first occurrence wins) and cut at
`MAX_CHARS` characters. The exact lines depend on the installed package
versions (pinned by constraints.txt), never on the file system order.

Example:

>>> from tests.tokenizers.corpus import build_corpus
>>> lines = build_corpus(2000)
>>> len(lines) == 2000 and len(set(lines)) == 2000
True
"""

from __future__ import annotations

import functools
import os
import random
import re
import site
import sysconfig
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

#: lines are cut to at most this many characters
MAX_CHARS = 400
#: default number of lines
DEFAULT_SIZE = 12_000
#: files larger than this are skipped (data tables, not prose)
MAX_FILE_BYTES = 2_000_000
#: the speech fixtures' folder, whose README and script hold the spoken texts
SPEECH_DIR = Path(__file__).resolve().parents[1] / "data" / "speech"

#: documentation files read in full (matched on the lower-cased file name)
_DOC_SUFFIXES = (".md", ".rst", ".markdown")
#: `.txt` files count as documentation only with one of these in their name;
#: others (vocab.txt, merges.txt, entry_points.txt ...) are data
_DOC_TXT_WORDS = ("licen", "copying", "notice", "readme", "authors", "changelog", "changes",
                  "history", "contributors", "patents")
_DOC_NAMES = ("METADATA", "LICENSE", "LICENCE", "COPYING", "NOTICE", "AUTHORS", "README")

#: share of the corpus each source gets (the rest, and any shortfall, goes to `docs`)
_QUOTAS = {"speech": 1.0, "unicode": 0.16, "stdlib": 0.10, "source": 0.30}

#: (script, code point ranges) sampled for the `unicode` lines
SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "Latin": ((0x00C0, 0x024F), (0x1E00, 0x1EFF)),
    "Greek": ((0x0370, 0x03FF), (0x1F00, 0x1FFF)),
    "Cyrillic": ((0x0400, 0x052F),),
    "Armenian": ((0x0531, 0x058A),),
    "Hebrew": ((0x05D0, 0x05EA), (0x0591, 0x05C7)),
    "Arabic": ((0x0600, 0x06FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFC)),
    "Devanagari": ((0x0900, 0x097F),),
    "Bengali": ((0x0980, 0x09FF),),
    "Tamil": ((0x0B80, 0x0BFF),),
    "Thai": ((0x0E00, 0x0E7F),),
    "Lao": ((0x0E80, 0x0EFF),),
    "Tibetan": ((0x0F00, 0x0FFF),),
    "Myanmar": ((0x1000, 0x109F),),
    "Georgian": ((0x10A0, 0x10FF),),
    "Hangul": ((0xAC00, 0xD7A3), (0x1100, 0x11FF)),
    "Ethiopic": ((0x1200, 0x137F),),
    "Khmer": ((0x1780, 0x17FF),),
    "Mongolian": ((0x1800, 0x18AF),),
    "Hiragana": ((0x3041, 0x309F),),
    "Katakana": ((0x30A0, 0x30FF), (0xFF66, 0xFF9F)),
    "CJK": ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF)),
    "CJK Ext B": ((0x20000, 0x2A6DF),),
    "CJK symbols": ((0x3000, 0x303F), (0xFF01, 0xFF5E)),
    "Emoji": ((0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF),
              (0x1F900, 0x1F9FF), (0x2600, 0x27BF)),
    "Math": ((0x2200, 0x22FF), (0x1D400, 0x1D7FF), (0x2070, 0x209F)),
    "Symbols": ((0x2010, 0x205E), (0x20A0, 0x20C0), (0x2100, 0x218B), (0x2460, 0x24FF),
                (0x2500, 0x257F)),
    "Cherokee": ((0x13A0, 0x13F5),),
    "Runic": ((0x16A0, 0x16F8),),
    "Braille": ((0x2800, 0x28FF),),
}
#: combining marks put after letters (accents, Devanagari signs, Hebrew points ...)
COMBINING = (*range(0x0300, 0x0370), *range(0x0483, 0x0488), *range(0x0591, 0x05BE),
             0x093C, 0x094D, *range(0x064B, 0x0660), 0x20DD, 0x20E3)
#: zero-width and bidirectional format characters
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e",
              "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2069",
              "\ufe0f", "\ufe0e", "\u034f", "\u180e")
#: whitespace other than one ASCII space (no `\n`: one line is one text)
ODD_WHITESPACE = ("\t", "\x0b", "\x0c", "\r", "\x1c", "\x1d", "\x1e", "\x1f", "\x85",
                  "\u00a0", "\u1680", *(chr(c) for c in range(0x2000, 0x200B)), "\u2028",
                  "\u2029", "\u202f", "\u205f", "\u3000", "  ", "   ", "\t\t")
#: control characters (BERT drops them, byte-level BPE keeps them)
CONTROLS = ("\x00", "\x01", "\x07", "\x08", "\x1b", "\x7f", "\x80", "\x9f", "\ufffd",
            "\ue000", "\U000f0000")
#: hand-picked characters whose case mapping or normalization changes length
TRICKY = ("İ", "ı", "ß", "ẞ", "ŉ", "ǅ", "ǈ", "ﬁ", "ﬃ", "ﬆ", "Ⅻ", "²", "①", "ΐ", "ς", "Σ", "ᾈ",
          "ﷺ", "ﷻ", "㍿", "㌀", "ｶﾞ", "ǰ", "ẚ", "Ꭰ", "ꭰ", "𐐀", "𝔄", "🇯🇵", "👍🏽", "❤️", "#️⃣",
          "\u212a",  # KELVIN SIGN (NFC: K)
          "\u212b",  # ANGSTROM SIGN (NFC: Å)
          "\u2126",  # OHM SIGN (NFC: Ω)
          "e\u0301", "\u1100\u1161\u11a8",  # é and 각, decomposed (NFD)
          "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # family: emoji joined by ZWJ
          "\U0001f3f3\ufe0f\u200d\U0001f308")  # rainbow flag

#: special-token text of the four tokenizers (in other cases too), put into
#: real lines: some tokenizers match it as one id, others split it. Whisper's
#: timestamps (`<|1.08|>`) are left out: whether they are one id depends on
#: the tokenizer.json (test_corpus_parity tests them separately).
SPECIAL_TEXT = ("<|endoftext|>", "<|ENDOFTEXT|>", "<|startoftext|>", "<|StartOfText|>",
                "<|startoftranscript|>", "<|en|>", "<|notimestamps|>", "<|EN|>", "[CLS]",
                "[SEP]", "[MASK]", "[mask]", "[UNK]", "[PAD]", "</s>", "<s>", "<pad>",
                "<unk>", "</w>", "##ing", " <|endoftext|> ", "<|endoftext|><|endoftext|>")


def site_packages() -> list[Path]:
    """The installed packages' folders (purelib, platlib, site), sorted, existing."""
    found = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
             *site.getsitepackages()}
    return sorted({Path(p).resolve() for p in found if Path(p).is_dir()})


def stdlib_test_dir() -> Path | None:
    """Python's `test` package folder (its data files), if this Python ships it."""
    path = Path(sysconfig.get_paths()["stdlib"]) / "test"
    return path if path.is_dir() else None


def _read_text(path: Path) -> str | None:
    """A file's text, or None if it is too big, unreadable or not UTF-8."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _lines(text: str) -> Iterator[str]:
    """Non-blank lines of `text`, split at `\\n` only (other breaks stay inside)."""
    for line in text.split("\n"):
        line = line.rstrip("\r")[:MAX_CHARS]
        if line.strip():
            yield line


@functools.lru_cache(maxsize=8)
def _walk(root: str) -> tuple[str, ...]:
    """Every file path under `root` (one walk per root), sorted."""
    return tuple(sorted(os.path.join(folder, name)
                        for folder, _, names in os.walk(root) for name in names))


def _files(roots: Iterable[Path], keep: Callable[[str], bool]) -> list[Path]:
    """Files under `roots` whose name `keep` accepts, sorted by path."""
    found = {p for root in roots for p in _walk(str(root)) if keep(os.path.basename(p))}
    return [Path(p) for p in sorted(found) if os.path.isfile(p)]


def _is_doc(name: str) -> bool:
    lower = name.lower()
    if name in _DOC_NAMES or name.split(".")[0] in _DOC_NAMES:
        return True
    if lower.endswith(_DOC_SUFFIXES):
        return True
    return lower.endswith(".txt") and any(w in lower for w in _DOC_TXT_WORDS)


def doc_lines() -> list[str]:
    """Lines of the installed packages' documentation, licence and METADATA files."""
    return [line for path in _files(site_packages(), _is_doc)
            if (text := _read_text(path)) is not None for line in _lines(text)]


def source_lines() -> list[str]:
    """Lines holding non-ASCII characters in the installed packages' `.py` files."""
    out: list[str] = []
    for path in _files(site_packages(), lambda name: name.endswith(".py")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if data.isascii() or len(data) > MAX_FILE_BYTES:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        out.extend(line.strip()[:MAX_CHARS] for line in text.split("\n")
                   if not line.isascii() and line.strip())
    return out


def stdlib_lines() -> list[str]:
    """Python's test data: the CJK codec texts, email messages and other
    non-ASCII lines of the stdlib tests (empty if the `test` package is absent)."""
    root = stdlib_test_dir()
    if root is None:
        return []
    out: list[str] = []
    for path in sorted((root / "cjkencodings").glob("*-utf8.txt")):
        out.extend(_lines(_read_text(path) or ""))
    for path in sorted((root / "test_email" / "data").glob("msg_*.txt")):
        out.extend(_lines(_read_text(path) or ""))
    for path in _files([root], lambda name: name.endswith(".py")):
        text = _read_text(path) or ""
        out.extend(line.strip() for line in _lines(text) if not line.isascii())
    return out


def speech_lines() -> list[str]:
    """The speech fixtures' README and generator script (their spoken texts)."""
    out: list[str] = []
    for name in ("README.md", "make_clips.sh"):
        out.extend(_lines(_read_text(SPEECH_DIR / name) or ""))
    return out


@functools.lru_cache(maxsize=None)
def script_characters(script: str) -> tuple[str, ...]:
    """The assigned, printable characters of `SCRIPTS[script]` per `unicodedata`."""
    chars = []
    for start, stop in SCRIPTS[script]:
        for code in range(start, stop + 1):
            char = chr(code)
            if unicodedata.category(char) not in ("Cn", "Cs", "Co", "Cc"):
                chars.append(char)
    return tuple(chars)


def _word(rng: random.Random, chars: tuple[str, ...]) -> str:
    word = "".join(rng.choice(chars) for _ in range(rng.randint(1, 7)))
    if rng.random() < 0.2:  # a combining mark after the word's first character
        word = word[0] + chr(rng.choice(COMBINING)) + word[1:]
    if rng.random() < 0.1:
        word = rng.choice(ZERO_WIDTH).join([word[:1], word[1:]])
    return word


def unicode_lines(count: int, real: list[str], seed: int = 0) -> list[str]:
    """`count` lines from the Unicode database and `real` lines.

    Five kinds, in turn: words of random characters of one script (with
    combining marks, zero-width characters, digits, punctuation, odd
    whitespace and control characters mixed in); a character with its
    Unicode name; a run of the `TRICKY` characters; a real non-ASCII line
    NFD- or NFKC-normalized, upper-cased, or with its spaces replaced; a
    real line with `SPECIAL_TEXT` put in.
    """
    rng = random.Random(seed)
    scripts = sorted(SCRIPTS)
    real = [line for line in real if not line.isascii()] or ["café naïve"]
    out: list[str] = []
    while len(out) < count:
        kind = len(out) % 5
        if kind == 0:
            chars = script_characters(scripts[len(out) // 5 % len(scripts)])
            pieces = []
            for _ in range(rng.randint(2, 10)):
                roll = rng.random()
                if roll < 0.08:
                    pieces.append(rng.choice(CONTROLS))
                elif roll < 0.16:
                    pieces.append(str(rng.randint(0, 10 ** rng.randint(1, 6))))
                elif roll < 0.24:
                    pieces.append(rng.choice(".,;:!?'\"()[]-—…«»“”「」。、"))
                pieces.append(_word(rng, chars))
                pieces.append(rng.choice(ODD_WHITESPACE) if rng.random() < 0.25 else " ")
            line = "".join(pieces)
        elif kind == 1:
            chars = script_characters(rng.choice(scripts))
            char = rng.choice(chars)
            line = f"{char} U+{ord(char):04X} {unicodedata.name(char, '?')}"
            if rng.random() < 0.5:
                line = line.lower()
        elif kind == 2:
            line = " ".join(rng.choice(TRICKY) for _ in range(rng.randint(1, 8)))
            line = rng.choice(["", "x", "The ", "ǅx ", "\u200b"]) + line + rng.choice(
                ["", ".", " end", "\u00a0!", "\t"])
        elif kind == 4:
            line = rng.choice(real)
            for _ in range(rng.randint(1, 2)):
                at = rng.randint(0, len(line))
                line = line[:at] + rng.choice(SPECIAL_TEXT) + line[at:]
        else:
            line = rng.choice(real)
            variant = rng.randrange(5)
            if variant == 0:
                line = unicodedata.normalize("NFD", line)
            elif variant == 1:
                line = unicodedata.normalize("NFKC", line)
            elif variant == 2:
                line = line.upper()
            elif variant == 3:
                line = line.title()
            else:
                line = line.replace(" ", rng.choice(ODD_WHITESPACE))
        line = line[:MAX_CHARS]
        if line.strip():
            out.append(line)
    return out


def _take(rng: random.Random, lines: list[str], count: int, seen: set[str]) -> list[str]:
    """Up to `count` lines not in `seen`, sampled in a seeded order, non-ASCII first."""
    unique = [line for line in dict.fromkeys(lines) if line not in seen]
    rich = [line for line in unique if not line.isascii()]
    plain = [line for line in unique if line.isascii()]
    rng.shuffle(rich)
    rng.shuffle(plain)
    picked = (rich + plain)[:count] if len(rich) < count else rich[:count]
    seen.update(picked)
    return picked


@functools.lru_cache(maxsize=4)
def sources() -> dict[str, list[str]]:
    """Every line of each real source (before sampling), by source name."""
    return {"speech": speech_lines(), "stdlib": stdlib_lines(), "source": source_lines(),
            "docs": doc_lines()}


@functools.lru_cache(maxsize=4)
def build_corpus(size: int = DEFAULT_SIZE, seed: int = 0) -> tuple[str, ...]:
    """`size` distinct lines (fewer only if the environment has too little text).

    Quotas: all speech lines; `unicode` 16 %, `stdlib` 10 %, `source` 30 %
    (non-ASCII lines first within each); `docs` fill the rest, half of them
    non-ASCII where there are that many.

    Args:
        size: number of lines.
        seed: seed of the sampling and of the generated `unicode` lines.

    Returns:
        the lines, grouped by source in the order speech, stdlib, source,
        unicode, docs.
    """
    rng = random.Random(seed)
    real = sources()
    seen: set[str] = set()
    out = _take(rng, real["speech"], size, seen)
    out += _take(rng, real["stdlib"], int(size * _QUOTAS["stdlib"]), seen)
    out += _take(rng, real["source"], int(size * _QUOTAS["source"]), seen)
    made = unicode_lines(int(size * _QUOTAS["unicode"]) * 2, real["docs"] + out, seed)
    out += _take(rng, made, int(size * _QUOTAS["unicode"]), seen)
    docs = real["docs"]
    rest = max(size - len(out), 0)
    rich = _take(rng, [line for line in docs if not line.isascii()], rest // 2, seen)
    out += rich + _take(rng, docs, rest - len(rich), seen)
    return tuple(out[:size])


def documents(lines: Iterable[str], per_document: int = 40, count: int = 60,
              seed: int = 0) -> list[str]:
    """`count` long texts, each `per_document` lines (drawn in a seeded order,
    so every source shows up) joined by newlines: longer than a model's
    context, so they test truncation."""
    shuffled = list(lines)
    random.Random(seed).shuffle(shuffled)
    return ["\n".join(shuffled[i:i + per_document])
            for i in range(0, min(len(shuffled), per_document * count), per_document)]


_SCRIPT_WORD = re.compile(r"[A-Z][A-Z-]+")


def script_counts(lines: Iterable[str]) -> dict[str, int]:
    """Lines per script: the first word of each non-ASCII character's Unicode
    name (LATIN, CJK, ARABIC, HANGUL ...), counted once per line."""
    counts: dict[str, int] = {}
    for line in lines:
        names = set()
        for char in line:
            if ord(char) > 127:
                match = _SCRIPT_WORD.match(unicodedata.name(char, "UNNAMED"))
                names.add(match.group(0) if match else "UNNAMED")
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


if __name__ == "__main__":  # a summary, for the report: python -m tests.tokenizers.corpus
    lines = build_corpus()
    every = {name: set(src) for name, src in sources().items()}
    counts = {name: sum(line in src for line in lines) for name, src in every.items()}
    print(len(lines), "lines;", sum(not line.isascii() for line in lines), "non-ASCII")
    print(counts)
    print(list(script_counts(lines).items())[:60])
