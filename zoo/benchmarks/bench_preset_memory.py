"""Preset size on disk, and the host memory and time to load it, in float32,
bfloat16 and int8, on every backend.

Models: all_minilm_l6_v2 (BERT, real weights), whisper_tiny_en (Whisper,
real weights) and an OPT-125m-size OPT with random weights (no OPT weights
ship offline; size and memory do not depend on the values). A writer process
loads each model once per dtype (int8: float32, then `quantize("int8")`)
and saves it with `save_to_preset`; the preset's bytes on disk are summed.
Then one process per (model, dtype, backend) loads that preset with
`Backbone.from_preset` (bfloat16 with `dtype="bfloat16"`; int8 presets load
quantized by themselves) and runs one small forward pass. Its peak memory is
the process's resident-set high-water mark (VmHWM, reset through
/proc/self/clear_refs once imports and a warm-up op are done) minus the
resident set at that point: what loading and the first call add.

    .venv/bin/python -m zoo.benchmarks.bench_preset_memory           # a few minutes
    .venv/bin/python -m zoo.benchmarks.bench_preset_memory --backends jax --models bert
    .venv/bin/python -m zoo.benchmarks.bench_preset_memory --smoke --out /tmp/r.json

`--smoke`: one tiny random BERT, the same code, seconds per process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from zoo.benchmarks import common
from zoo.benchmarks.bench_sharded_load import rss_mib

BACKENDS = ("jax", "tensorflow", "torch")
DTYPES = ("float32", "bfloat16", "int8")
MODELS = ("bert", "whisper", "opt")
DEFAULT_OUT = common.results_dir() / "preset_memory.json"
OPT_125M = dict(vocabulary_size=50272, num_layers=12, num_heads=12, hidden_dim=768,
                intermediate_dim=3072, max_sequence_length=2048)
TINY_BERT = dict(vocabulary_size=1000, num_layers=2, num_heads=2, hidden_dim=64,
                 intermediate_dim=256, max_sequence_length=64)


def source_task(model: str, smoke: bool) -> Any:
    """The float32 task a model's presets are written from."""
    from zoo.models import BertBackbone, BertTextEmbedder, OPTBackbone, OPTCausalLM, Task

    if smoke:
        return BertTextEmbedder(BertBackbone(**TINY_BERT))
    if model == "opt":
        return OPTCausalLM(OPTBackbone(**OPT_125M), preprocessor=None)
    return Task.from_preset({"bert": "all_minilm_l6_v2", "whisper": "whisper_tiny_en"}[model])


def write_presets(args: argparse.Namespace) -> dict[str, Any]:
    """Writer worker: one preset per dtype under `args.share_dir/<model>_<dtype>`."""
    common.start_zoo_worker(args.backend)
    sizes = {}
    for dtype in DTYPES:
        task = source_task(args.model, args.smoke)
        if dtype == "bfloat16":
            task = _cast(task, "bfloat16")
        elif dtype == "int8":
            task.quantize("int8")
        folder = Path(args.share_dir) / f"{args.model}_{dtype}"
        task.save_to_preset(folder)
        sizes[dtype] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"preset_bytes": sizes}


def _cast(task: Any, dtype: str) -> Any:
    """`task` saved and reloaded with `dtype` (what `from_preset(dtype=...)` gives)."""
    with tempfile.TemporaryDirectory(prefix="bench_preset_memory_") as tmp:
        task.save_to_preset(Path(tmp) / "p")
        return type(task).from_preset(Path(tmp) / "p", dtype=dtype)


def forward_inputs(backbone: Any) -> dict[str, Any]:
    import numpy as np

    ids = np.arange(1, 33, dtype="int32")[None] % 100 + 1
    ones = np.ones_like(ids)
    name = type(backbone).__name__
    if name.startswith("Whisper"):
        features = np.zeros((1, backbone.num_mels, 2 * backbone.max_encoder_sequence_length),
                            "float32")
        return {"encoder_features": features, "decoder_token_ids": ids[:, :4],
                "decoder_padding_mask": ones[:, :4]}
    if name.startswith("Bert"):
        return {"token_ids": ids, "segment_ids": 0 * ids, "padding_mask": ones}
    return {"token_ids": ids, "padding_mask": ones}


def load_preset(args: argparse.Namespace) -> dict[str, Any]:
    """Loader worker: peak memory and time of `from_preset` plus one forward."""
    keras = common.start_zoo_worker(args.backend)
    import numpy as np

    from zoo.models import Backbone

    keras.ops.convert_to_numpy(keras.ops.ones((8, 8)) @ keras.ops.ones((8, 8)))  # warm-up
    before = rss_mib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS from here on
        reset = True
    except OSError:
        reset = False
    start = time.perf_counter()
    folder = Path(args.share_dir) / f"{args.model}_{args.dtype}"
    backbone = Backbone.from_preset(folder, **(
        {"dtype": "bfloat16"} if args.dtype == "bfloat16" else {}))
    load_s = time.perf_counter() - start
    outputs = backbone(forward_inputs(backbone))
    finite = all(bool(np.isfinite(np.asarray(keras.ops.convert_to_numpy(
        keras.ops.cast(o, "float32")))).all()) for o in keras.tree.flatten(outputs))
    return {"load_s": load_s, "first_call_s": time.perf_counter() - start - load_s,
            "peak_mib": rss_mib("VmHWM") - before if reset else None,
            "rss_before_mib": before, "finite": finite,
            "weights": sorted({str(w.dtype) for w in backbone.weights})}


def run_worker(args: argparse.Namespace) -> int:
    result = write_presets(args) if args.worker == "write" else load_preset(args)
    common.emit_result(result, None)
    return 0


def launch(args: argparse.Namespace, worker: str, backend: str, model: str, share: str,
           dtype: str = "float32") -> dict[str, Any]:
    cmd = [sys.executable, "-m", "zoo.benchmarks.bench_preset_memory", "--worker", worker,
           "--backend", backend, "--model", model, "--dtype", dtype, "--share-dir", share,
           *["--smoke"] * args.smoke]
    return common.launch_once(f"{worker} {model} {dtype} {backend}", cmd, keras_backend=backend,
                              timeout=args.timeout, wait_idle=0, tag="bench_preset_memory")


def run_parent(args: argparse.Namespace) -> int:
    backends = common.parse_list(args.backends, BACKENDS)
    models = ["bert"] if args.smoke else common.parse_list(args.models, MODELS, "model")
    results: dict[str, Any] = {
        "benchmark": "preset_memory", "date_utc": common.utc_now(),
        "command": " ".join(["python -m zoo.benchmarks.bench_preset_memory", *sys.argv[1:]]),
        "machine": common.machine_info(), "versions": common.versions(),
        "workload": {"models": models, "backends": backends, "smoke": args.smoke,
                     "peak": "VmHWM - VmRSS after imports and a warm-up op (MiB): "
                             "from_preset + one forward pass"},
        "models": {},
    }
    workers: dict[str, dict[str, Any]] = {}
    for model in models:
        with tempfile.TemporaryDirectory(prefix="bench_preset_memory_") as share:
            entry = launch(args, "write", backends[0], model, share)
            entry["load"] = {dtype: {backend: launch(args, "load", backend, model, share, dtype)
                                     for backend in backends} for dtype in DTYPES}
        workers[f"{model} write"] = entry
        workers.update({f"{model} {dtype} {backend}": res
                        for dtype, loads in entry["load"].items()
                        for backend, res in loads.items()})
        results["models"][model] = entry
    return common.finish_run(markdown_table(results), args.out, results, workers)


def markdown_table(results: dict[str, Any]) -> str:
    lines = ["| model | dtype | preset MB | x float32 | backend | load s | peak MiB |",
             "|---|---|---:|---:|---|---:|---:|"]
    for model, entry in results["models"].items():
        sizes = entry.get("preset_bytes", {})
        for dtype, loads in entry.get("load", {}).items():
            size = sizes.get(dtype)
            ratio = size / sizes["float32"] if size and sizes.get("float32") else None
            for backend, res in loads.items():
                lines.append(f"| {model} | {dtype} | {common.fmt(size and size / 1e6, '.1f')} | "
                             f"{common.fmt(ratio, '.3f')} | {backend} | "
                             f"{common.fmt(res.get('load_s'), '.2f')} | "
                             f"{common.fmt(res.get('peak_mib'), '.0f')} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--worker", choices=("write", "load"), help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=DTYPES, help=argparse.SUPPRESS)
    parser.add_argument("--share-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_worker(args) if args.worker else run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
