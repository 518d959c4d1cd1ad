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

* ``sharded_2_processes`` (only when asked with ``--modes``): the sharded
  load in a job of 2 processes x 4 simulated devices started by `zoo
  launch`, on a (2, 4) mesh (issue 24). Each process reports its own peak,
  the bytes of the shards it holds (`addressable_shards`) and the bytes it
  read (`rchar` in /proc/self/io); the target is a peak of at most 1.3x the
  shards it holds plus the largest tensor.
* ``convert`` (only when asked with ``--modes``): `zoo convert`'s converter on
  a transformers OPT folder of the same size stored in ``--dtype`` (random
  weights saved by transformers): the model is built in the storage dtype,
  so the anonymous memory peak is the output's bytes, not a float32 copy.

``--dtype bfloat16`` stores the preset in bfloat16 and loads it with
``dtype="bfloat16"`` (the weight bytes are then the bfloat16 bytes).

Reported: peak RSS minus the RSS before loading over the weight bytes (the
RSS before loading is taken after imports and after a first tiny Keras
build, which loads jax/XLA machinery worth ~400 MB whatever the model size;
that warm-up is reported separately), the peak of anonymous memory alone
(sampled every 5 ms: what the process allocated, without the file pages a
memory-mapped checkpoint brings in) and the wall time of the load. Every
mode's forward output on a fixed input is compared with the unsharded one.

    .venv/bin/python -m zoo.benchmarks.bench_sharded_load             # ~2 minutes
    .venv/bin/python -m zoo.benchmarks.bench_sharded_load --dtype bfloat16 \
        --modes unsharded,sharded,convert
    .venv/bin/python -m zoo.benchmarks.bench_sharded_load --smoke --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from zoo.benchmarks import common

MODES = ("unsharded", "sharded", "sharded_build_then_assign", "convert",
         "sharded_2_processes")
DEFAULT_MODES = MODES[:3]
JOB = (2, 4)  # sharded_2_processes: processes, devices per process (mesh JOB)
DTYPES = ("float32", "bfloat16")
MESH = (1, 8)
#: OPT-350m: 24 layers, 16 heads, hidden 1024, MLP 4096, 512-wide embeddings
FULL = dict(vocabulary_size=50272, num_layers=24, num_heads=16, hidden_dim=1024,
            intermediate_dim=4096, max_sequence_length=2048, embedding_dim=512)
SMOKE = dict(vocabulary_size=512, num_layers=2, num_heads=8, hidden_dim=64,
             intermediate_dim=128, max_sequence_length=64, embedding_dim=32)
TARGET = 1.3  # peak / weight bytes, sharded


def rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class AnonPeak:
    """The largest RssAnon seen while the `with` block runs (sampled every 5 ms)."""

    def __enter__(self) -> AnonPeak:
        self.peak = rss_mib("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mib("RssAnon"))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib("RssAnon"))


def peak_mib() -> float:
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the
    # parent across fork and exec, so a parent that once held more (it built
    # the random model to write the preset) would set every worker's peak.
    return rss_mib("VmHWM")


def run_worker(args: argparse.Namespace) -> int:
    keras = common.start_zoo_worker("jax")
    import jax
    import numpy as np

    import zoo.layout
    from zoo.core import preset_io
    from zoo.models import OPTBackbone

    from zoo.core import deferred

    directory = Path(args.share_dir)
    job = args.worker == "sharded_2_processes"
    if job:
        keras.distribution.initialize()
    mesh = zoo.layout.make_mesh(JOB if job else MESH)
    layout_map = OPTBackbone.get_layout_map(mesh)
    # Warm the runtime up first: the first symbolic Keras build loads and
    # initializes jax/XLA machinery (~400 MB here, the same for any model
    # size); that is process start-up, not the cost of loading weights.
    start_rss = rss_mib()
    deferred.abstract_build(lambda: OPTBackbone(**{**SMOKE, "num_layers": 1}))
    jax.block_until_ready(jax.numpy.ones(8) + 1)
    before_rss, before_peak, before_anon = rss_mib(), peak_mib(), rss_mib("RssAnon")
    before_read = read_bytes()
    start = time.perf_counter()
    dtype = {"dtype": args.dtype} if args.dtype != "float32" else {}
    with AnonPeak() as anon:
        if args.worker == "convert":
            from zoo.nlp.opt import opt_convert

            output = Path(args.convert_out)
            opt_convert.convert_transformers(directory, output, str(directory))
            directory = output
        elif args.worker == "unsharded":
            backbone = OPTBackbone.from_preset(directory, **dtype)
        else:
            with zoo.layout.model_parallel(layout_map).scope():
                if args.worker in ("sharded", "sharded_2_processes"):
                    backbone = OPTBackbone.from_preset(directory, **dtype)
                else:
                    backbone = OPTBackbone.from_preset(directory, load_weights=False, **dtype)
                    preset_io.load_weights(backbone.weights, directory,
                                           preset_io.BACKBONE_WEIGHTS)
        if args.worker != "convert":
            jax.block_until_ready([v.value for v in backbone.weights])
    seconds = time.perf_counter() - start
    after_peak, after_rss = peak_mib(), rss_mib()
    read = read_bytes() - before_read
    if job:
        return report_process(backbone, seconds, after_peak - before_rss,
                              anon.peak - before_anon, read, directory,
                              after_rss - before_rss, before_peak - before_rss)
    verified = None
    if args.worker == "convert":  # has its own random weights: checked against transformers
        verified = float(opt_convert.compare_with_transformers(directory, Path(args.share_dir)))
        backbone = OPTBackbone.from_preset(directory, **dtype)
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
        "anon_peak_delta_mib": anon.peak - before_anon, "max_abs_diff_vs_transformers": verified,
        "held_mib": after_rss - before_rss, "devices": jax.device_count(),
        "output": out.ravel()[:64].tolist(), "example_shardings": shards,
    }, common.loadavg())
    return 0


def read_bytes() -> int:
    """Bytes this process has read so far (`rchar`: read() calls, cache hits included)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def report_process(backbone: Any, seconds: float, peak_delta_mib: float,
                   anon_delta_mib: float, read: int, directory: Path, held_rss_mib: float,
                   peak_before_mib: float) -> int:
    """sharded_2_processes: gather every process's figures; process 0 emits them.

    A process's own bytes are the bytes of the shards on its devices (a
    replicated weight counts once per local device: each simulated device is
    host memory of its own). Each process checks its shards of three weights
    against the preset's arrays."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    held = sum(s.data.nbytes for v in backbone.weights for s in v.value.addressable_shards)
    largest = max(int(np.prod(v.shape)) * v.value.dtype.itemsize for v in backbone.weights)
    stored = {v.path: stored_array(directory, v.path) for v in backbone.weights[:3]}
    exact = all(np.array_equal(np.asarray(s.data).astype("float32"),
                               stored[v.path][s.index].astype("float32"))
                for v in backbone.weights[:3] for s in v.value.addressable_shards)
    mine = np.array([peak_delta_mib, anon_delta_mib, held, read, seconds, float(exact),
                     len(jax.local_devices()), held_rss_mib, peak_before_mib], "float64")
    every = multihost_utils.process_allgather(mine)
    if jax.process_index() == 0:
        rows = [dict(zip(("peak_delta_mib", "anon_peak_delta_mib", "held_shard_bytes",
                          "read_bytes", "load_s", "shards_equal_preset", "local_devices",
                          "rss_after_minus_before_mib", "peak_before_minus_rss_before_mib"),
                         map(float, row))) for row in every]
        common.emit_result({
            "mode": "sharded_2_processes", "processes": rows, "largest_tensor_bytes": largest,
            "load_s": max(r["load_s"] for r in rows),
            "peak_delta_mib": max(r["peak_delta_mib"] for r in rows),
            "anon_peak_delta_mib": max(r["anon_peak_delta_mib"] for r in rows),
            "held_mib": max(r["held_shard_bytes"] for r in rows) / 2**20,
            "devices": jax.device_count(), "output": None,
        }, common.loadavg())
    multihost_utils.sync_global_devices("bench_sharded_load done")
    return 0


def stored_array(directory: Path, path: str) -> Any:
    """The array a preset stores for the weight `path`."""
    import h5py
    import ml_dtypes
    import numpy as np

    from zoo.core import weights_io

    for name in weights_io.weight_files(directory, "model"):
        with h5py.File(directory / name, "r") as f:
            if path in f:
                data = f[path][()]
                bfloat16 = f[path].attrs.get("dtype") == "bfloat16"
                return np.asarray(data.view(ml_dtypes.bfloat16) if bfloat16 else data)
    raise KeyError(path)


def make_preset(directory: Path, size: dict[str, int], dtype: str) -> None:
    """Write a random OPT preset stored in `dtype` (reused when it exists with
    the same config and dtype)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import json

    import keras

    from zoo.core import preset_io
    from zoo.models import OPTBackbone

    config_file = directory / "config.json"
    if config_file.exists():
        saved = json.loads(config_file.read_text())["config"]
        stored = preset_io.read_metadata(directory).get("storage_dtype") or "float32"
        if all(saved.get(k) == v for k, v in size.items()) and stored == dtype:
            return
    keras.utils.set_random_seed(0)
    preset_io.write_preset(directory, backbone=OPTBackbone(**size), storage_dtype=dtype)


def make_transformers_source(directory: Path, size: dict[str, int], dtype: str) -> int:
    """A transformers OPT folder of `size` with random weights stored in
    `dtype` (reused when present); returns its weight bytes."""
    import torch
    import transformers

    from zoo.presets.checkpoint_io import read_transformers_weights

    if not (directory / "config.json").is_file():
        torch.manual_seed(0)
        config = transformers.OPTConfig(
            vocab_size=size["vocabulary_size"], hidden_size=size["hidden_dim"],
            num_hidden_layers=size["num_layers"], ffn_dim=size["intermediate_dim"],
            num_attention_heads=size["num_heads"],
            max_position_embeddings=size["max_sequence_length"],
            word_embed_proj_dim=size["embedding_dim"])
        model = transformers.OPTForCausalLM(config).to(getattr(torch, dtype))
        model.save_pretrained(directory)
    arrays = read_transformers_weights(directory)
    return sum(a.nbytes for k, a in arrays.items() if k != "lm_head.weight")


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

    import tempfile

    size = SMOKE if args.smoke else FULL
    suffix = "" if args.dtype == "float32" else f"_{args.dtype}"
    directory = Path(args.preset_dir or Path(os.environ.get("TMPDIR", "/tmp")) /
                     (("zoo_bench_opt_smoke" if args.smoke else "zoo_bench_opt_350m") + suffix))
    print(f"[sharded_load] preset: {directory}", file=sys.stderr, flush=True)
    make_preset(directory, size, args.dtype)
    nbytes = weight_bytes(directory)
    source_bytes = None
    if "convert" in args.modes:
        source = directory.with_name(directory.name + "_transformers")
        source_bytes = make_transformers_source(source, size, args.dtype)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=8").strip()
    results: dict[str, Any] = {}
    scratch = tempfile.TemporaryDirectory(prefix="zoo_bench_convert_")
    for mode in args.modes:
        cmd = [*common.self_command(__spec__, __file__), "--worker", mode, "--dtype", args.dtype,
               "--share-dir", str(source if mode == "convert" else directory),
               "--convert-out", str(Path(scratch.name) / mode)]
        if mode == "sharded_2_processes":
            cmd = [sys.executable, "-m", "zoo.cli", "launch", "--processes", str(JOB[0]),
                   "--devices-per-process", str(JOB[1]), "--timeout", str(args.timeout), "--",
                   *cmd]
        results[mode] = common.launch(mode, cmd, keras_backend="jax", retries=args.retries,
                                      max_other_cpu=args.max_other_cpu, timeout=args.timeout,
                                      wait_idle=args.wait_idle, tag="sharded_load")
    scratch.cleanup()
    reference = results.get("unsharded", {}).get("output")
    # bfloat16 keeps 8 significant bits and sharded products sum in another
    # order: allowed 2**-6 of the output's largest magnitude (2 to 4 units in
    # the last place there)
    for mode, r in results.items():
        if "error" in r:
            continue
        if mode == "sharded_2_processes":
            own_figures(r, nbytes)
            continue
        total = source_bytes if mode == "convert" else nbytes
        r["peak_over_weights"] = r["peak_delta_mib"] * 2**20 / total
        r["anon_peak_over_weights"] = r["anon_peak_delta_mib"] * 2**20 / total
        if mode == "convert":  # its own weights: compared with transformers instead
            r["matches_unsharded"] = bool(r["max_abs_diff_vs_transformers"] <= 1e-4)
        else:
            r["matches_unsharded"] = (None if reference is None else bool(
                np.allclose(r["output"], reference, atol=1e-5 if args.dtype == "float32"
                            else 2.0 ** -6 * np.abs(reference).max())))
    data = {"benchmark": "sharded_load", "date": common.utc_now(),
            "machine": common.machine_info(), "versions": common.versions(),
            "workload": {"smoke": args.smoke, "model": size, "mesh": list(MESH),
                         "dtype": args.dtype, "weight_bytes": nbytes,
                         "source_bytes": source_bytes, "devices": "8 simulated CPU devices"},
            "results": results, "target_peak_over_weights": TARGET}
    return common.finish_run(table(data), args.out, data, results)


def own_figures(result: dict[str, Any], nbytes: int) -> None:
    """sharded_2_processes: each process's peak over the bytes of the shards it
    holds plus the largest tensor, and its bytes read over the preset's."""
    for row in result["processes"]:
        own = row["held_shard_bytes"] + result["largest_tensor_bytes"]
        row["peak_over_own"] = row["peak_delta_mib"] * 2**20 / own
        row["anon_peak_over_own"] = row["anon_peak_delta_mib"] * 2**20 / own
        row["read_over_preset"] = row["read_bytes"] / nbytes
    result["peak_over_weights"] = max(r["peak_over_own"] for r in result["processes"])
    result["anon_peak_over_weights"] = max(r["anon_peak_over_own"] for r in result["processes"])
    result["matches_unsharded"] = all(r["shards_equal_preset"] for r in result["processes"])


def table(data: dict[str, Any]) -> str:
    w = data["workload"]
    dtype = w.get("dtype", "float32")
    lines = [f"\nLoading an OPT preset of {w['weight_bytes'] / 2**20:.0f} MiB ({dtype}) "
             f"into a {tuple(w['mesh'])} mesh of {w['devices']}\n",
             "| mode | load (s) | peak RSS - RSS before (MiB) | peak / weight bytes "
             "| anonymous peak / weight bytes | held after (MiB) | output = unsharded "
             "(convert: = transformers) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for mode, r in data["results"].items():
        if "error" in r:
            lines.append(f"| {mode} | error | | | | | |")
            continue
        lines.append(f"| {mode} | {r['load_s']:.2f} | {r['peak_delta_mib']:.0f} | "
                     f"**{r['peak_over_weights']:.2f}x** | {r['anon_peak_over_weights']:.2f}x | "
                     f"{r['held_mib']:.0f} | {'yes' if r['matches_unsharded'] else 'NO'} |")
    job = data["results"].get("sharded_2_processes", {})
    if "processes" in job:
        lines.append(f"\nsharded_2_processes: {JOB[0]} processes x {JOB[1]} devices, mesh {JOB}; "
                     "its ratios are over the bytes of the shards a process holds plus the "
                     f"largest tensor ({job['largest_tensor_bytes'] / 2**20:.0f} MiB), and "
                     "'output = unsharded' means each process's shards equal the preset's "
                     "arrays\n")
        lines += ["| process | shards held (MiB) | peak RSS - RSS before (MiB) | peak / own "
                  "| anonymous peak / own | read / preset bytes |",
                  "|---|---:|---:|---:|---:|---:|"]
        for i, r in enumerate(job["processes"]):
            lines.append(f"| {i} | {r['held_shard_bytes'] / 2**20:.0f} | "
                         f"{r['peak_delta_mib']:.0f} | **{r['peak_over_own']:.2f}x** | "
                         f"{r['anon_peak_over_own']:.2f}x | {r['read_over_preset']:.2f} |")
        met = "met" if job["peak_over_weights"] <= data["target_peak_over_weights"] else "MISSED"
        lines.append(f"\nper-process peak {job['peak_over_weights']:.2f}x its shards plus one "
                     f"tensor (target <= {data['target_peak_over_weights']}: {met})")
    if "convert" in data["results"]:
        lines.append(f"\nconvert: from a transformers folder of "
                     f"{(w.get('source_bytes') or 0) / 2**20:.0f} MiB ({dtype}); its ratios "
                     "are over the source's bytes (the memory-mapped source counts in the RSS"
                     " columns, not in the anonymous one)")
    sharded = data["results"].get("sharded", {})
    if "peak_over_weights" in sharded:
        met = "met" if sharded["peak_over_weights"] <= data["target_peak_over_weights"] \
            else "MISSED"
        lines.append(f"\nsharded peak {sharded['peak_over_weights']:.2f}x the weight bytes "
                     f"(target <= {data['target_peak_over_weights']}: {met})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES),
                        help="comma-separated modes (default: %(default)s)")
    parser.add_argument("--preset-dir", help="where the random preset is written / reused "
                        "(default: $TMPDIR/zoo_bench_opt_350m)")
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="the preset's storage dtype and the dtype it is loaded in")
    parser.add_argument("--convert-out", help=argparse.SUPPRESS)  # worker: convert's output
    parser.add_argument("--out", help="JSON results file")
    args = common.parse_run_args(parser, argv, MODES, timeout=1800.0, retries=1,
                                 smoke_workload={})
    args.modes = common.parse_list(args.modes, MODES, "mode")
    return args


main = common.entry(parse_args, run_worker, run_parent)


if __name__ == "__main__":
    sys.exit(main())
