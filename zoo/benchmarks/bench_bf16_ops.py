"""Which operations reach the CPU's bfloat16 units, per Keras backend.

For the operations zoo's models spend their time in, each at a shape a real
model uses, the same call is timed in float32 and in bfloat16 on every
backend (compiled as zoo compiles it: `jax.jit`, `tf.function(jit_compile=True)`,
torch eager), and the path the bfloat16 call takes is named:

* jax and tensorflow under XLA: the optimized HLO of the compiled call says
  whether each matrix product / convolution computes in bf16 or was rewritten
  to convert its inputs to f32 ("upcast to f32"); a call XLA hands to a
  library shows as that library's fusion or custom call. tensorflow runs
  16-bit calls on the CPU as a plain graph (zoo does, because of what the HLO
  shows: `zoo.core.compiled_loop.xla_suits`): TensorFlow's oneDNN kernels.
  `--tf-xla` times them under XLA as well, for comparison.
* torch: oneDNN's own log (`ONEDNN_VERBOSE=1`) names the kernel each oneDNN
  call ran (e.g. `brg_matmul:avx512_core_amx`); a call that never reaches
  oneDNN runs ATen's own kernel.

    .venv/bin/python -m zoo.benchmarks.bench_bf16_ops --out benchmarks/results/bf16_ops.json
    .venv/bin/python -m zoo.benchmarks.bench_bf16_ops --smoke      # small shapes, seconds
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

from zoo.benchmarks import common

BACKENDS = ("jax", "tensorflow", "torch")
#: op -> (shapes, FLOPs); full size, then smoke size
OPS: dict[str, dict[str, Any]] = {
    # BERT-base MLP on 32 x 128 tokens
    "matmul": {"full": dict(m=4096, k=768, n=3072), "smoke": dict(m=64, k=32, n=48)},
    # Stable Diffusion's 64x64 latents, 320 channels
    "conv3x3": {"full": dict(h=64, c=320), "smoke": dict(h=8, c=16)},
    # BERT-base attention: 32 sentences, 128 tokens, 12 heads of 64
    "attention_bert": {"full": dict(b=32, t=128, h=12, d=64), "smoke": dict(b=2, t=16, h=2, d=8)},
    # Stable Diffusion self-attention over 4096 latent positions (zoo's blocked path)
    "attention_sd": {"full": dict(b=2, t=4096, h=8, d=40), "smoke": dict(b=1, t=64, h=2, d=8)},
    "layer_norm": {"full": dict(m=4096, k=768), "smoke": dict(m=64, k=32)},
    "group_norm": {"full": dict(h=64, c=320), "smoke": dict(h=8, c=32)},
}


def build(op: str, s: dict[str, int], dtype: str) -> tuple[Any, list[Any], float | None]:
    """The call, its inputs (numpy, in `dtype`) and its matrix-product FLOPs."""
    import keras
    import ml_dtypes
    import numpy as np
    from keras import ops

    from zoo.layers.attention import dot_product_attention
    from zoo.layers.conv import Conv2D

    rng = np.random.default_rng(0)
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32

    def data(*shape: int) -> Any:
        return ops.convert_to_tensor(rng.standard_normal(shape).astype(np_dtype))

    if op == "matmul":
        w = data(s["k"], s["n"])
        return (lambda x: ops.matmul(x, w)), [data(s["m"], s["k"])], 2.0 * s["m"] * s["k"] * s[
            "n"]
    if op == "conv3x3":
        layer = Conv2D(s["c"], 3, padding="same", dtype=dtype)
        layer.build((1, s["h"], s["h"], s["c"]))
        return layer, [data(1, s["h"], s["h"], s["c"])], 2.0 * s["h"] ** 2 * 9 * s["c"] ** 2
    if op.startswith("attention"):
        q = data(s["b"], s["t"], s["h"], s["d"])
        flops = 4.0 * s["b"] * s["h"] * s["t"] ** 2 * s["d"]
        return (lambda x: dot_product_attention(x, x, x)), [q], flops
    if op == "layer_norm":
        layer = keras.layers.LayerNormalization(dtype=dtype)
        layer.build((s["m"], s["k"]))
        return layer, [data(s["m"], s["k"])], None
    layer = keras.layers.GroupNormalization(32, dtype=dtype)
    layer.build((1, s["h"], s["h"], s["c"]))
    return layer, [data(1, s["h"], s["h"], s["c"])], None


def compiled(fn: Any, backend: str, dtype: str) -> Any:
    """`fn` compiled as zoo's compiled steps compile it on `backend`: XLA on
    jax; on tensorflow XLA, except a plain graph for 16-bit on the CPU
    (`zoo.core.compiled_loop.xla_suits`); torch eager."""
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        from zoo.core.compiled_loop import xla_suits

        return tf.function(fn, jit_compile=xla_suits([dtype]))
    return fn


def hlo_path(fn: Any, args: list[Any], backend: str) -> str:
    """How XLA runs the matrix products / convolutions of `fn` (see the module doc)."""
    if backend == "jax":
        text = fn.lower(*args).compile().as_text()
    else:
        text = fn.experimental_get_compiler_ir(*args)(stage="optimized_hlo")
    found = set()
    for line in text.splitlines():
        match = re.search(r"= (\w+)\[[^\]]*\][^ ]* (dot|convolution|custom-call)\(", line)
        if match:
            found.add(f"{match.group(2)} in {match.group(1)}")
        for library in ("onednn", "ynn", "xnn"):
            if f"{library}_fusion" in line or f"__{library}" in line.lower():
                found.add(f"{library} call")
    return ", ".join(sorted(found)) or "elementwise only"


def onednn_path(fn: Any, args: list[Any]) -> str:
    """The oneDNN kernels one call of `fn` ran (torch), from oneDNN's log on
    stdout (file descriptor 1, written by the C++ library)."""
    import tempfile

    import torch

    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                fn(*args)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        # onednn_verbose,v1,primitive,exec,cpu,<primitive>,<implementation>,...
        kernels = {f"{fields[5]} {fields[6]}" for line in log
                   if len(fields := line.split(",")) > 6 and fields[0] == "onednn_verbose"
                   and fields[3] == "exec"}
    return ", ".join(sorted(kernels)) or "ATen kernel (no oneDNN call)"


def run_worker(args: argparse.Namespace) -> int:
    keras = common.start_zoo_worker(args.worker)
    results: dict[str, Any] = {}
    size = "smoke" if args.smoke else "full"
    import zoo.core.compiled_loop

    variants = ["float32", "bfloat16"] + ["bfloat16_xla"] * (
        args.tf_xla and args.worker == "tensorflow")
    for op in args.ops:
        for variant in variants:
            dtype = variant.split("_")[0]
            zoo.core.compiled_loop.XLA_FOR_16_BIT_ON_CPU = variant.endswith("_xla")
            fn, inputs, flops = build(op, OPS[op][size], dtype)
            call = compiled(fn, args.worker, dtype)
            timing = common.time_calls(
                lambda: keras.ops.convert_to_numpy(keras.ops.sum(keras.ops.cast(
                    call(*inputs), "float32"))), args.warmup, args.runs)
            if args.worker == "torch":
                path = onednn_path(fn, inputs)
            elif args.worker == "tensorflow" and not call._jit_compile:
                path = "plain graph (TensorFlow's oneDNN kernels)"
            else:
                path = hlo_path(call, inputs, args.worker)
            results[f"{op}/{variant}"] = {
                "ms": timing["ms"], "other_cpu_cores": timing["other_cpu_cores"],
                "gflops": flops / timing["ms"] / 1e6 if flops else None, "path": path}
    common.emit_result({"backend": args.worker, "ops": results}, common.loadavg())
    return 0


def run_parent(args: argparse.Namespace) -> int:
    results = {}
    for backend in args.backends:
        cmd = [*common.self_command(__spec__, __file__), "--worker", backend,
               "--ops", ",".join(args.ops),
               "--runs", str(args.runs), "--warmup", str(args.warmup)] + ["--smoke"] * args.smoke \
            + ["--tf-xla"] * args.tf_xla
        results[backend] = common.launch(backend, cmd, keras_backend=backend,
                                         retries=args.retries, max_other_cpu=args.max_other_cpu,
                                         timeout=args.timeout, wait_idle=args.wait_idle,
                                         tag="bf16_ops")
    data = {"benchmark": "bf16_ops", "date": common.utc_now(), "machine": common.machine_info(),
            "versions": common.versions(), "smoke": args.smoke,
            "shapes": {op: OPS[op]["smoke" if args.smoke else "full"] for op in args.ops},
            "results": results}
    return common.finish_run(table(data), args.out, data, results)


def table(data: dict[str, Any]) -> str:
    lines = ["\n| op | backend | float32 ms | bfloat16 ms | bfloat16 speed-up "
             "| GFLOP/s f32 / bf16 | bfloat16 runs as |", "|---|---|---:|---:|---:|---:|---|"]
    for op in data["shapes"]:
        for backend, r in data["results"].items():
            if "error" in r:
                lines.append(f"| {op} | {backend} | error | | | | |")
                continue
            f32, bf16 = r["ops"][f"{op}/float32"], r["ops"][f"{op}/bfloat16"]
            rate = (f"{f32['gflops']:.0f} / {bf16['gflops']:.0f}" if f32["gflops"] else "-")
            lines.append(f"| {op} | {backend} | {f32['ms']:.2f} | {bf16['ms']:.2f} | "
                         f"**{f32['ms'] / bf16['ms']:.2f}x** | {rate} | {bf16['path']} |")
            xla = r["ops"].get(f"{op}/bfloat16_xla")
            if xla:
                rate = f"{f32['gflops']:.0f} / {xla['gflops']:.0f}" if xla["gflops"] else "-"
                lines.append(f"| {op} | {backend} (XLA) | {f32['ms']:.2f} | {xla['ms']:.2f} | "
                             f"{f32['ms'] / xla['ms']:.2f}x | {rate} | {xla['path']} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated, from %(default)s")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="small shapes, seconds")
    parser.add_argument("--tf-xla", action="store_true",
                        help="tensorflow: also time bfloat16 under XLA (zoo runs a graph)")
    parser.add_argument("--out", help="JSON results file")
    args = common.parse_run_args(parser, argv, BACKENDS, timeout=900.0, retries=1,
                                 smoke_workload={"runs": 2, "warmup": 0})
    args.backends = common.parse_list(args.backends, BACKENDS)
    args.ops = common.parse_list(args.ops, OPS, "op")
    return args


main = common.entry(parse_args, run_worker, run_parent)


if __name__ == "__main__":
    sys.exit(main())
