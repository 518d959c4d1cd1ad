"""Peak host memory of converting a large multi-file float16 checkpoint.

A random transformers OPT of OPT-1.3b's shape (2.6 GB in float16) is saved
by transformers in several safetensors shards with an index (``--shard-mb``),
as the released 1.3b and larger checkpoints are, and `zoo convert`'s OPT
converter turns it into a float16 preset in a fresh process. The converter
builds the model without values and writes one weight at a time
(`zoo.core.deferred.streamed_values`), so the issue-24 target is a peak of
at most the largest source shard plus the largest output tensor.

Reported, over the RSS just before the conversion: the peak RSS (`VmHWM`),
which counts the pages of the memory-mapped source the process has touched,
and the peak of anonymous memory alone (`RssAnon`, sampled every 5 ms):
what the converter allocated. Then, outside the measurement, the preset is
checked against transformers (`compare_with_transformers`).

    .venv/bin/python -m zoo.benchmarks.bench_convert_memory \
        --out benchmarks/results/convert_memory.json
    .venv/bin/python -m zoo.benchmarks.bench_convert_memory --smoke --out /tmp/r.json   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from zoo.benchmarks import common

WORKERS = ("convert",)
#: OPT-1.3b: 24 layers, 32 heads, hidden 2048, MLP 8192
FULL = dict(vocab_size=50272, hidden_size=2048, num_hidden_layers=24, ffn_dim=8192,
            num_attention_heads=32, max_position_embeddings=2048, word_embed_proj_dim=2048)
SMOKE = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, ffn_dim=128,
             num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64)


def make_source(directory: Path, size: dict[str, int], shard_mb: float) -> None:
    """A transformers OPT folder of `size`, random, float16, in shards of at
    most `shard_mb` MB with an index (reused when it exists)."""
    if (directory / "model.safetensors.index.json").is_file():
        return
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.OPTConfig(**size, torch_dtype="float16")
    model = transformers.OPTForCausalLM(config).half()
    model.save_pretrained(directory, max_shard_size=f"{shard_mb}MB")
    if not (directory / "model.safetensors.index.json").is_file():
        raise RuntimeError(f"transformers wrote one file into {directory}: lower --shard-mb")


def source_figures(directory: Path) -> dict[str, Any]:
    """Total and largest shard bytes, and the largest tensor's bytes."""
    from zoo.presets.checkpoint_io import read_transformers_weights

    index = json.loads((directory / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    sizes = [(directory / name).stat().st_size for name in shards]
    largest_tensor = max(a.nbytes for a in read_transformers_weights(directory).values())
    return {"shards": len(shards), "source_bytes": sum(sizes), "largest_shard_bytes": max(sizes),
            "largest_tensor_bytes": largest_tensor}


def run_worker(args: argparse.Namespace) -> int:
    common.start_zoo_worker("jax")
    from zoo.benchmarks.bench_sharded_load import AnonPeak, peak_mib, rss_mib
    from zoo.nlp.opt import opt_convert

    source, output = Path(args.source_dir), Path(args.output_dir)
    start_load = common.loadavg()
    before_rss, before_anon = rss_mib(), rss_mib("RssAnon")
    start = time.perf_counter()
    with AnonPeak() as anon:
        opt_convert.convert_transformers(source, output, str(source))
    seconds = time.perf_counter() - start
    peak = peak_mib()
    verified = None
    if args.verify:
        verified = float(opt_convert.compare_with_transformers(output, source))
    preset_bytes = sum(f.stat().st_size for f in output.glob("*.weights.*"))
    common.emit_result({
        "convert_s": seconds, "peak_delta_mib": peak - before_rss,
        "anon_peak_delta_mib": anon.peak - before_anon, "rss_before_mib": before_rss,
        "preset_weight_bytes": preset_bytes, "max_abs_diff_vs_transformers": verified,
    }, start_load)
    return 0


def run_parent(args: argparse.Namespace) -> int:
    size = SMOKE if args.smoke else FULL
    source = Path(args.source_dir or Path(os.environ.get("TMPDIR", "/tmp")) /
                  ("zoo_bench_opt_smoke_f16_shards" if args.smoke else "zoo_bench_opt_1.3b_f16"))
    print(f"[convert_memory] source: {source}", file=sys.stderr, flush=True)
    make_source(source, size, args.shard_mb)
    figures = source_figures(source)
    scratch = Path(tempfile.mkdtemp(prefix="zoo_bench_convert_memory_"))
    try:
        cmd = [*common.self_command(__spec__, __file__), "--worker", "convert",
               "--source-dir", str(source), "--output-dir", str(scratch / "preset")]
        if not args.verify:
            cmd.append("--no-verify")
        result = common.launch("convert", cmd, keras_backend="jax", retries=0,
                               max_other_cpu=args.max_other_cpu, timeout=args.timeout,
                               wait_idle=args.wait_idle, tag="convert_memory")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if "error" not in result:
        bound = figures["largest_shard_bytes"] + figures["largest_tensor_bytes"]
        result["peak_over_bound"] = result["peak_delta_mib"] * 2**20 / bound
        result["anon_peak_over_bound"] = result["anon_peak_delta_mib"] * 2**20 / bound
        result["preset_over_source"] = result["preset_weight_bytes"] / figures["source_bytes"]
    data = {"benchmark": "convert_memory", "date": common.utc_now(),
            "machine": common.machine_info(), "versions": common.versions(),
            "workload": {"smoke": args.smoke, "model": size, "dtype": "float16", **figures},
            "results": {"convert": result}}
    return common.finish_run(table(data), args.out, data, data["results"])


def table(data: dict[str, Any]) -> str:
    w, r = data["workload"], data["results"]["convert"]
    mib = 2**20
    lines = [f"\nConverting a float16 transformers OPT checkpoint of {w['source_bytes'] / mib:.0f} "
             f"MiB in {w['shards']} shards (largest shard {w['largest_shard_bytes'] / mib:.0f} "
             f"MiB, largest tensor {w['largest_tensor_bytes'] / mib:.0f} MiB)\n"]
    if "error" in r:
        return "\n".join(lines + [f"convert failed: {r['error']}"])
    lines += ["| convert (s) | peak RSS - RSS before (MiB) | / (largest shard + tensor) "
              "| anonymous peak (MiB) | / (largest shard + tensor) | preset / source bytes "
              "| max abs diff vs transformers |", "|---:|---:|---:|---:|---:|---:|---:|",
              f"| {r['convert_s']:.1f} | {r['peak_delta_mib']:.0f} | "
              f"**{r['peak_over_bound']:.2f}x** | {r['anon_peak_delta_mib']:.0f} | "
              f"{r['anon_peak_over_bound']:.2f}x | {r['preset_over_source']:.3f} | "
              f"{r['max_abs_diff_vs_transformers']} |"]
    met = "met" if r["peak_over_bound"] <= 1.0 else "MISSED"
    lines.append(f"\npeak {r['peak_over_bound']:.2f}x the largest shard plus the largest "
                 f"tensor (target <= 1: {met})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", help="where the random checkpoint is written / reused "
                        "(default: $TMPDIR/zoo_bench_opt_1.3b_f16)")
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)  # worker: the preset
    parser.add_argument("--shard-mb", type=float, default=500.0,
                        help="largest source shard, MB (default: %(default)s)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the check against transformers after the measurement")
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds")
    parser.add_argument("--out", help="JSON results file")
    args = common.parse_run_args(parser, argv, WORKERS, timeout=3600.0, retries=0,
                                 smoke_workload={})
    if args.smoke and "--shard-mb" not in (argv if argv is not None else sys.argv):
        args.shard_mb = 0.1  # several shards for the tiny model too
    return args


main = common.entry(parse_args, run_worker, run_parent)


if __name__ == "__main__":
    sys.exit(main())
