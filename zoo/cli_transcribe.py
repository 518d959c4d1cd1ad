"""`zoo transcribe FILE_OR_FOLDER...`: speech to text, subtitles or JSON.

One file keeps the simple form (stdout, or `--out FILE`). Several files, or
a folder (its audio and video files, sorted), are transcribed together in
batches (`--batch-size`): on stdout each result follows a `==> NAME <==`
line, or `--out DIR` writes one file per input (`NAME.txt`, `.srt`, `.vtt`
or `.json`). `--vad` skips silence (Silero VAD); `--vad chunks` also
batches the speech of one long recording.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.cli_args import CommandError, check_output_path, write_atomically

#: what a folder argument contributes: files with these suffixes
MEDIA_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".opus", ".webm",
                  ".mp4", ".mkv", ".mov", ".wma", ".aiff", ".aif")
OUTPUT_SUFFIX = {"srt": ".srt", "vtt": ".vtt", "json": ".json", None: ".txt"}


def add_parser(sub: Any, run: Callable[[argparse.Namespace], None]) -> None:
    """The `transcribe` subcommand's arguments."""
    p = sub.add_parser("transcribe", help="speech to text (files, folders, batched)")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="audio or video files, or folders of them")
    p.add_argument("--preset", default="whisper_tiny_en")
    fmt = p.add_mutually_exclusive_group()
    for name in ("srt", "vtt", "json"):
        fmt.add_argument(f"--{name}", dest="format", action="store_const", const=name,
                         help=f"print {name.upper()} instead of plain text")
    p.add_argument("--out", help="write to this file (one input) or into this folder "
                                 "(several), instead of stdout")
    p.add_argument("--language", help="language code (default: detect)")
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--word-timestamps", action="store_true")
    p.add_argument("--batch-size", type=int, default=None,
                   help="recordings (or VAD chunks) decoded together (default 1; 8 with "
                        "--vad chunks)")
    p.add_argument("--vad", nargs="?", const="filter", choices=("filter", "chunks"),
                   help="skip silence (Silero VAD, needs zoo[vad]); 'chunks': also batch the "
                        "speech of one recording")
    p.set_defaults(func=run, format=None)


def expand_inputs(names: list[str]) -> list[Path]:
    """Files as given; a folder gives its media files, sorted by name."""
    files: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
            if not found:
                raise CommandError(f"Folder {name!r} has no audio or video files "
                                   f"({', '.join(MEDIA_SUFFIXES[:8])}, ...). Fix: pass the "
                                   "folder that holds the recordings.")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise CommandError(f"No audio file {name!r}. Fix: pass an audio file (wav, flac, "
                               "ogg, mp3, m4a, opus, webm), a video with sound, or a folder "
                               "of them.")
    return files


def render(result: dict, fmt: str | None) -> str:
    """One transcription as plain text, SRT, VTT or JSON.

    >>> result = {"text": " Hello there.", "segments": [
    ...     {"start": 0.0, "end": 1.5, "text": " Hello there."}]}
    >>> render(result, None).splitlines()
    ['Hello there.']
    >>> print(render(result, "srt"))
    1
    00:00:00,000 --> 00:00:01,500
    Hello there.
    <BLANKLINE>
    """
    from zoo.utils.subtitles import to_srt, to_vtt

    if fmt == "srt":
        return to_srt(result["segments"])
    if fmt == "vtt":
        return to_vtt(result["segments"])
    if fmt == "json":
        return json.dumps(result, indent=2, default=float) + "\n"
    return result["text"].strip() + "\n"


def run(args: argparse.Namespace, load_task: Callable[..., Any]) -> None:
    """Check every argument and output, load the model, transcribe, write."""
    files = expand_inputs(args.files)
    if args.batch_size is not None and args.batch_size < 1:
        raise CommandError(f"--batch-size {args.batch_size}: must be 1 or more.")
    suffix = OUTPUT_SUFFIX[args.format]
    outputs: list[Path] | None = None
    if args.out and len(files) == 1 and not Path(args.out).is_dir():
        allowed = (suffix, ".txt") if args.format else ()
        outputs = [check_output_path(args.out, allowed)]
    elif args.out:
        folder = Path(args.out)
        if folder.exists() and not folder.is_dir():
            raise CommandError(f"--out {args.out!r} is a file, and there are {len(files)} "
                               "inputs. Fix: pass a folder (one output per input).")
        outputs = [folder / (f.stem + suffix) for f in files]
        if len(set(outputs)) < len(outputs):
            raise CommandError("Two inputs have the same name, so their outputs in "
                               f"{args.out!r} would collide. Fix: transcribe them separately.")
    if args.vad:
        from zoo.utils.vad import model_path

        model_path()  # a missing VAD model is one clear error before the model loads
    model = load_task(args.preset, args, "transcribe")
    results = model.transcribe([str(f) for f in files], language=args.language,
                               beam_size=args.beam_size, word_timestamps=args.word_timestamps,
                               batch_size=args.batch_size,
                               vad=args.vad or False)  # "filter" or "chunks"
    if outputs is None:
        for file, result in zip(files, results):
            if len(files) > 1:
                sys.stdout.write(f"==> {file} <==\n")
            sys.stdout.write(render(result, args.format))
        return
    outputs[0].parent.mkdir(parents=True, exist_ok=True)  # the --out folder
    for out, result in zip(outputs, results):
        text = render(result, args.format)
        write_atomically(out, lambda tmp, text=text: tmp.write_text(text))
        print(f"wrote {out}")
