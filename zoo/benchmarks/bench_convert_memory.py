"""Peak host memory of converting a large float16 checkpoint, streaming.

A random checkpoint is saved by its own library in float16, laid out as the
released ones are: an OPT of OPT-1.3b's shape (2.6 GB) and a whisper-medium
(1.5 GB) by transformers in several safetensors shards with an index
(``--shard-mb``), a Stable Diffusion v1 (2.1 GB) by diffusers and
transformers as a diffusers folder (one file per component). `zoo
convert`'s converter for the family (``--family``) turns it into a float16
preset in a fresh process. Converters build the model without values and
write one weight at a time (`zoo.core.deferred.streamed_values`), unmapping
the source's pages after each (`checkpoint_io.release_mapped_pages`), so the
issue-24 target is a peak of at most the largest source file plus the
largest output tensor.

Reported, over the RSS just before the conversion: the peak RSS (`VmHWM`),
which counts the pages of the memory-mapped source the process has mapped,
and the peak of anonymous memory alone (`RssAnon`, sampled every 5 ms):
what the converter allocated. Then, outside the measurement, the preset is
checked against the reference library (``--no-verify`` skips it: for full
sizes it loads both models in float32).

    .venv/bin/python -m zoo.benchmarks.bench_convert_memory --no-verify \
        --out benchmarks/results/convert_memory.json
    .venv/bin/python -m zoo.benchmarks.bench_convert_memory --family whisper --no-verify \
        --out benchmarks/results/convert_memory_whisper.json
    .venv/bin/python -m zoo.benchmarks.bench_convert_memory --family stable_diffusion \
        --no-verify --out benchmarks/results/convert_memory_stable_diffusion.json
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
FAMILIES = ("opt", "whisper", "stable_diffusion")
#: OPT-1.3b: 24 layers, 32 heads, hidden 2048, MLP 8192
FULL = dict(vocab_size=50272, hidden_size=2048, num_hidden_layers=24, ffn_dim=8192,
            num_attention_heads=32, max_position_embeddings=2048, word_embed_proj_dim=2048)
SMOKE = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, ffn_dim=128,
             num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64)
#: whisper-medium (769M parameters, 1.5 GB in float16)
WHISPER_FULL = dict(vocab_size=51865, num_mel_bins=80, d_model=1024, encoder_layers=24,
                    decoder_layers=24, encoder_attention_heads=16, decoder_attention_heads=16,
                    encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_source_positions=1500,
                    max_target_positions=448)
WHISPER_SMOKE = dict(vocab_size=300, num_mel_bins=16, d_model=32, encoder_layers=2,
                     decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                     encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=32,
                     max_target_positions=32)
#: Stable Diffusion v1 (UNet 860M, VAE 84M, CLIP text 123M: 2.1 GB in float16)
SD_SMOKE = dict(block_out_channels=[32, 64], layers_per_block=1, text_hidden=32,
                text_layers=2, vocab_size=49408)
SIZES = {("opt", False): FULL, ("opt", True): SMOKE, ("whisper", False): WHISPER_FULL,
         ("whisper", True): WHISPER_SMOKE, ("stable_diffusion", True): SD_SMOKE,
         ("stable_diffusion", False): {"sd_v1": True}}


def make_source(directory: Path, size: dict[str, Any], shard_mb: float,
                family: str = "opt") -> None:
    """A random float16 checkpoint of `family` and `size` in `directory`, as its
    peers publish it (reused when it exists): a transformers folder in shards of
    at most `shard_mb` MB with an index (OPT, Whisper), or a diffusers folder
    (Stable Diffusion: one file per component)."""
    if (directory / "model_index.json").is_file() or (
            directory / "model.safetensors.index.json").is_file():
        return
    import torch
    import transformers

    torch.manual_seed(0)
    if family == "stable_diffusion":
        _make_diffusers(directory, size)
        return
    if family == "whisper":
        model = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(
            **size, decoder_start_token_id=size["vocab_size"] - 2,
            eos_token_id=size["vocab_size"] - 1, pad_token_id=size["vocab_size"] - 1,
            bos_token_id=size["vocab_size"] - 1, torch_dtype="float16")).half()
    else:
        config = transformers.OPTConfig(**size, torch_dtype="float16")
        model = transformers.OPTForCausalLM(config).half()
    model.save_pretrained(directory, max_shard_size=f"{shard_mb}MB")
    if not (directory / "model.safetensors.index.json").is_file():
        raise RuntimeError(f"transformers wrote one file into {directory}: lower --shard-mb")


def _make_diffusers(directory: Path, size: dict[str, Any]) -> None:
    """A diffusers Stable Diffusion v1 folder (random, float16) without a
    tokenizer: the converter then uses CLIP's own vocabulary (open_clip)."""
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from zoo.diffusion.stable_diffusion import stable_diffusion_convert as sd

    text = dict(sd.SD_V1_TEXT_CONFIG)
    unet, vae = dict(sd.SD_V1_UNET_CONFIG), dict(sd.SD_V1_VAE_CONFIG)
    if "sd_v1" not in size:  # the smoke size: two levels of small channels
        levels, channels = len(size["block_out_channels"]), size["block_out_channels"]
        text.update(hidden_size=size["text_hidden"], num_hidden_layers=size["text_layers"],
                    num_attention_heads=4, intermediate_size=2 * size["text_hidden"])
        unet.update(block_out_channels=channels, layers_per_block=size["layers_per_block"],
                    down_block_types=["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"],
                    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1),
                    cross_attention_dim=size["text_hidden"], sample_size=8)
        vae.update(block_out_channels=channels, layers_per_block=size["layers_per_block"],
                   down_block_types=["DownEncoderBlock2D"] * levels,
                   up_block_types=["UpDecoderBlock2D"] * levels, sample_size=16)
    directory.mkdir(parents=True, exist_ok=True)
    transformers.CLIPTextModel(transformers.CLIPTextConfig(**text)).half().save_pretrained(
        directory / "text_encoder")
    UNet2DConditionModel(**unet).half().save_pretrained(directory / "unet")
    AutoencoderKL(**vae).half().save_pretrained(directory / "vae")
    (directory / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline"}))


def source_figures(directory: Path) -> dict[str, Any]:
    """Total and largest weight-file bytes, and the largest tensor's bytes."""
    from zoo.presets.checkpoint_io import read_safetensors

    files = sorted(directory.rglob("*.safetensors"))
    sizes = [f.stat().st_size for f in files]
    largest_tensor = max(a.nbytes for f in files for a in read_safetensors(f).values())
    return {"shards": len(files), "source_bytes": sum(sizes), "largest_shard_bytes": max(sizes),
            "largest_tensor_bytes": largest_tensor}


def _converter(family: str) -> tuple[Any, Any]:
    """(convert, compare) of `family`'s converter from its peers' folders."""
    if family == "whisper":
        from zoo.audio.whisper import whisper_convert as module

        return module.convert_transformers, module.compare_with_transformers
    if family == "stable_diffusion":
        from zoo.diffusion.stable_diffusion import stable_diffusion_convert as module

        return module.convert_diffusers, module.compare_with_diffusers
    from zoo.nlp.opt import opt_convert as module

    return module.convert_transformers, module.compare_with_transformers


def run_worker(args: argparse.Namespace) -> int:
    common.start_zoo_worker("jax")
    from zoo.benchmarks.bench_sharded_load import AnonPeak, peak_mib, rss_mib

    convert, compare = _converter(args.family)
    source, output = Path(args.source_dir), Path(args.output_dir)
    start_load = common.loadavg()
    before_rss, before_anon = rss_mib(), rss_mib("RssAnon")
    start = time.perf_counter()
    with AnonPeak() as anon:
        convert(source, output, str(source))
    seconds = time.perf_counter() - start
    peak = peak_mib()
    verified = None
    if args.verify:
        verified = float(compare(output, source))
    preset_bytes = sum(f.stat().st_size for f in output.glob("*.weights.*"))
    common.emit_result({
        "convert_s": seconds, "peak_delta_mib": peak - before_rss,
        "anon_peak_delta_mib": anon.peak - before_anon, "rss_before_mib": before_rss,
        "preset_weight_bytes": preset_bytes, "max_abs_diff_vs_reference": verified,
    }, start_load)
    return 0


def run_parent(args: argparse.Namespace) -> int:
    size = SIZES[args.family, args.smoke]
    default = {"opt": "zoo_bench_opt_1.3b_f16", "whisper": "zoo_bench_whisper_medium_f16",
               "stable_diffusion": "zoo_bench_sd_v1_f16"}[args.family]
    source = Path(args.source_dir or Path(os.environ.get("TMPDIR", "/tmp")) /
                  (f"zoo_bench_{args.family}_smoke_f16" if args.smoke else default))
    print(f"[convert_memory] source: {source}", file=sys.stderr, flush=True)
    make_source(source, size, args.shard_mb, args.family)
    figures = source_figures(source)
    scratch = Path(tempfile.mkdtemp(prefix="zoo_bench_convert_memory_"))
    try:
        cmd = [*common.self_command(__spec__, __file__), "--worker", "convert",
               "--family", args.family, "--source-dir", str(source), "--output-dir", str(scratch / "preset")]
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
            "workload": {"family": args.family, "smoke": args.smoke, "model": size,
                         "dtype": "float16", **figures},
            "results": {"convert": result}}
    return common.finish_run(table(data), args.out, data, data["results"])


def table(data: dict[str, Any]) -> str:
    w, r = data["workload"], data["results"]["convert"]
    mib = 2**20
    lines = [f"\nConverting a float16 {w['family']} checkpoint of {w['source_bytes'] / mib:.0f} "
             f"MiB in {w['shards']} files (largest file {w['largest_shard_bytes'] / mib:.0f} "
             f"MiB, largest tensor {w['largest_tensor_bytes'] / mib:.0f} MiB)\n"]
    if "error" in r:
        return "\n".join(lines + [f"convert failed: {r['error']}"])
    lines += ["| convert (s) | peak RSS - RSS before (MiB) | / (largest shard + tensor) "
              "| anonymous peak (MiB) | / (largest shard + tensor) | preset / source bytes "
              "| max abs diff vs reference |", "|---:|---:|---:|---:|---:|---:|---:|",
              f"| {r['convert_s']:.1f} | {r['peak_delta_mib']:.0f} | "
              f"**{r['peak_over_bound']:.2f}x** | {r['anon_peak_delta_mib']:.0f} | "
              f"{r['anon_peak_over_bound']:.2f}x | {r['preset_over_source']:.3f} | "
              f"{r['max_abs_diff_vs_reference']} |"]
    met = "met" if r["peak_over_bound"] <= 1.0 else "MISSED"
    lines.append(f"\npeak {r['peak_over_bound']:.2f}x the largest shard plus the largest "
                 f"tensor (target <= 1: {met})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=FAMILIES, default="opt",
                        help="whose converter (default: %(default)s)")
    parser.add_argument("--source-dir", help="where the random checkpoint is written / reused "
                        "(default: under $TMPDIR, by family)")
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)  # worker: the preset
    parser.add_argument("--shard-mb", type=float, default=500.0,
                        help="largest source shard, MB, where transformers shards "
                        "(default: %(default)s)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the check against the reference library after the measurement")
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
