"""Peak host memory and time to load an OPT-350m-size preset, sharded and not.

Each mode runs in its own jax process with 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8), so on this machine
every device's memory is host memory and the peak RSS counts all shards:

* ``unsharded``: `OPTBackbone.from_preset(dir)` on one device.
* ``sharded``: the same inside `ModelParallel` with `OPTBackbone.get_layout_map`
  on a (1, 8) mesh: each weight goes straight into its 8 shards.
* ``sharded_build_then_assign``: what a loader that builds the model first
  does (KerasHub's way): build with random initial values under the same
  distribution, then assign the stored arrays.

Reported: peak RSS minus the RSS before loading over the weight bytes (the
RSS before loading is taken after imports and after a first tiny Keras
build, which loads jax/XLA machinery worth ~400 MB whatever the model size;
that warm-up is reported separately), and the wall time of the load. Every mode's
forward output on a fixed input is compared with the unsharded one.

    .venv/bin/python benchmarks/bench_sharded_load.py             # ~2 minutes
    .venv/bin/python benchmarks/bench_sharded_load.py --smoke --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import common

MODES = ("unsharded", "sharded", "sharded_build_then_assign")
MESH = (1, 8)
#: OPT-350m: 24 layers, 16 heads, hidden 1024, MLP 4096, 512-wide embeddings
FULL = dict(vocabulary_size=50272, num_layers=24, num_heads=16, hidden_dim=1024,
            intermediate_dim=4096, max_sequence_length=2048, embedding_dim=512)
SMOKE = dict(vocabulary_size=512, num_layers=2, num_heads=8, hidden_dim=64,
             intermediate_dim=128, max_sequence_length=64, embedding_dim=32)
TARGET = 1.3  # peak / weight bytes, sharded


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_worker(args: argparse.Namespace) -> int:
    keras = common.start_zoo_worker("jax")
    import jax
    import numpy as np

    import zoo.layout
    from zoo.core import preset_io
    from zoo.models import OPTBackbone

    from zoo.core import deferred

    directory = Path(args.share_dir)
    mesh = zoo.layout.make_mesh(MESH)
    layout_map = OPTBackbone.get_layout_map(mesh)
    # Warm the runtime up first: the first symbolic Keras build loads and
    # initializes jax/XLA machinery (~400 MB here, the same for any model
    # size); that is process start-up, not the cost of loading weights.
    start_rss = rss_mib()
    deferred.abstract_build(lambda: OPTBackbone(**{**SMOKE, "num_layers": 1}))
    jax.block_until_ready(jax.numpy.ones(8) + 1)
    before_rss, before_peak = rss_mib(), peak_mib()
    start = time.perf_counter()
    if args.worker == "unsharded":
        backbone = OPTBackbone.from_preset(directory)
    else:
        with zoo.layout.model_parallel(layout_map).scope():
            if args.worker == "sharded":
                backbone = OPTBackbone.from_preset(directory)
            else:
                backbone = OPTBackbone.from_preset(directory, load_weights=False)
                preset_io.load_weights(backbone.weights, directory,
                                       preset_io.BACKBONE_WEIGHTS)
    jax.block_until_ready([v.value for v in backbone.weights])
    seconds = time.perf_counter() - start
    after_peak, after_rss = peak_mib(), rss_mib()
    shards = {v.path: str(getattr(v.value.sharding, "spec", "single device"))
              for v in backbone.weights[:3]}
    inputs = {"token_ids": np.arange(1, 9, dtype="int32")[None],
              "padding_mask": np.ones((1, 8), "int32")}
    out = keras.ops.convert_to_numpy(backbone(inputs))
    common.emit_result({
        "mode": args.worker, "load_s": seconds, "runtime_warmup_mib": before_rss - start_rss,
        "rss_before_mib": before_rss,
        "peak_before_mib": before_peak, "peak_after_mib": after_peak,
        "rss_after_mib": after_rss, "peak_delta_mib": after_peak - before_rss,
        "held_mib": after_rss - before_rss, "devices": jax.device_count(),
        "output": out.ravel()[:64].tolist(), "example_shardings": shards,
    }, common.loadavg())
    return 0


def make_preset(directory: Path, size: dict[str, int]) -> dict[str, Any]:
    """Write a random OPT preset (reused when it exists with the same config)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import json

    import keras

    from zoo.models import OPTBackbone

    config_file = directory / "config.json"
    if config_file.exists():
        saved = json.loads(config_file.read_text())["config"]
        if all(saved.get(k) == v for k, v in size.items()):
            return saved
    keras.utils.set_random_seed(0)
    backbone = OPTBackbone(**size)
    backbone.save_to_preset(directory)
    return backbone.get_config()


def weight_bytes(directory: Path) -> int:
    import h5py
    import numpy as np

    from zoo.core import weights_io

    total = 0
    for name in weights_io.weight_files(directory, "model"):
        if name.endswith(".h5"):
            with h5py.File(directory / name, "r") as f:
                def add(_: str, item: Any) -> None:
                    nonlocal total
                    if isinstance(item, h5py.Dataset):
                        total += int(np.prod(item.shape)) * item.dtype.itemsize

                f.visititems(add)
    return total


def run_parent(args: argparse.Namespace) -> int:
    import numpy as np

    size = SMOKE if args.smoke else FULL
    directory = Path(args.preset_dir or Path(os.environ.get("TMPDIR", "/tmp")) /
                     ("zoo_bench_opt_smoke" if args.smoke else "zoo_bench_opt_350m"))
    print(f"[sharded_load] preset: {directory}", file=sys.stderr, flush=True)
    make_preset(directory, size)
    nbytes = weight_bytes(directory)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=8").strip()
    results: dict[str, Any] = {}
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--worker", mode, "--share-dir", str(directory)]
        results[mode] = common.launch(mode, cmd, keras_backend="jax", retries=args.retries,
                                      max_other_cpu=args.max_other_cpu, timeout=args.timeout,
                                      wait_idle=args.wait_idle, tag="sharded_load")
    reference = results.get("unsharded", {}).get("output")
    for mode, r in results.items():
        if "error" in r:
            continue
        r["peak_over_weights"] = r["peak_delta_mib"] * 2**20 / nbytes
        r["matches_unsharded"] = (None if reference is None else bool(
            np.allclose(r["output"], reference, atol=1e-5)))
    data = {"benchmark": "sharded_load", "date": common.utc_now(),
            "machine": common.machine_info(), "versions": common.versions(),
            "workload": {"smoke": args.smoke, "model": size, "mesh": list(MESH),
                         "weight_bytes": nbytes, "devices": "8 simulated CPU devices"},
            "results": results, "target_peak_over_weights": TARGET}
    print(table(data))
    if args.out:
        print(f"results written to {common.write_json(args.out, data)}")
    failed = [m for m, r in results.items() if "error" in r]
    for mode in failed:
        print(f"{mode} failed: {results[mode]['error']}", file=sys.stderr)
    return 1 if failed else 0


def table(data: dict[str, Any]) -> str:
    w = data["workload"]
    lines = [f"\nLoading an OPT preset of {w['weight_bytes'] / 2**20:.0f} MiB (float32) "
             f"into a {tuple(w['mesh'])} mesh of {w['devices']}\n",
             "| mode | load (s) | peak RSS - RSS before (MiB) | peak / weight bytes "
             "| held after (MiB) | output = unsharded |",
             "|---|---:|---:|---:|---:|---|"]
    for mode, r in data["results"].items():
        if "error" in r:
            lines.append(f"| {mode} | error | | | | |")
            continue
        lines.append(f"| {mode} | {r['load_s']:.2f} | {r['peak_delta_mib']:.0f} | "
                     f"**{r['peak_over_weights']:.2f}x** | {r['held_mib']:.0f} | "
                     f"{'yes' if r['matches_unsharded'] else 'NO'} |")
    sharded = data["results"].get("sharded", {})
    if "peak_over_weights" in sharded:
        met = "met" if sharded["peak_over_weights"] <= data["target_peak_over_weights"] \
            else "MISSED"
        lines.append(f"\nsharded peak {sharded['peak_over_weights']:.2f}x the weight bytes "
                     f"(target <= {data['target_peak_over_weights']}: {met})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated modes (default: %(default)s)")
    parser.add_argument("--preset-dir", help="where the random preset is written / reused "
                        "(default: $TMPDIR/zoo_bench_opt_350m)")
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds")
    parser.add_argument("--out", help="JSON results file")
    common.add_run_options(parser, MODES, timeout=1800.0, retries=1)
    args = parser.parse_args(argv)
    common.apply_run_defaults(args, argv, {}, retries=1)
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {list(MODES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    return common.main(argv, parse_args, run_worker, run_parent)


if __name__ == "__main__":
    sys.exit(main())
