"""Stable Diffusion benchmark: zoo on jax/tensorflow/torch vs diffusers (torch).

What it measures, at 512x512 with SD v1.5-size networks (random weights):

* one guided denoising step: the latents (1, 64, 64, 4) doubled into a
  batch of 2 (unconditional + conditional), the UNet (859.5 M parameters)
  with 77-token cross-attention context at timestep 501, the guidance
  combination and a DDIM update;
* one VAE decode: latents (1, 64, 64, 4) -> a 512x512 image.

* diffusers (the peer): `UNet2DConditionModel` and `AutoencoderKL` with SD
  v1.5's configs, float32, `torch.no_grad()`, every core (`torch` threads =
  CPU count); the same step written as diffusers' pipeline does it.
* zoo: `StableDiffusion`'s own compiled denoising step (`_denoise` with a
  one-step DDIM schedule) and `decode_latents`, per backend, each in its own
  process. The networks hold the peer's random weights (written once by the
  peer worker, ported with zoo's converters), so the outputs are compared:
  `max_abs_diff` of the noise prediction after guidance and of the decoded
  pixels (in [0, 1]). zoo's float32 3x3 convolutions with many channels
  and tiles run through Winograd F(4x4, 3x3) (`zoo.layers.conv`), as they do
  for users; `--conv direct` measures the direct op instead. MFU always
  counts the direct algorithm's FLOPs (XLA's count with Winograd off), so a
  Winograd row can pass 100%.

bfloat16 (`--dtypes float32,bfloat16`, the default): both libraries also
run the networks in bfloat16 (diffusers: `.to(torch.bfloat16)`; zoo:
`dtype="bfloat16"`); this CPU runs bfloat16 matrix products much faster
than float32. The ratio is `diffusers_s / zoo_s` in the same dtype (> 1:
zoo faster). Target: best backend >= 1.2x in float32.

Reproduce (from the repository root)::

    .venv/bin/python -m zoo.benchmarks.bench_stable_diffusion
    .venv/bin/python -m zoo.benchmarks.bench_stable_diffusion --backends jax --dtypes float32
    .venv/bin/python -m zoo.benchmarks.bench_stable_diffusion --backends tensorflow --conv direct
    .venv/bin/python -m zoo.benchmarks.bench_stable_diffusion --smoke --out /tmp/r.json  # seconds

`--smoke` runs a tiny UNet/VAE at 64x64 once (no warm-up, no idle wait,
no retries). Internally the script re-invokes itself as
`bench_stable_diffusion.py --worker NAME ...`; a worker prints one
`BENCH_RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from zoo.benchmarks import common
from zoo.benchmarks import skeleton
from zoo.benchmarks.common import fmt

BACKENDS = ("jax", "tensorflow", "torch")
PEER = "diffusers"
DTYPES = ("float32", "bfloat16")
DEFAULT_OUT = common.results_dir() / "stable_diffusion.json"
TARGET_RATIO = 1.2  # best backend at least 1.2x faster than diffusers (float32)
GUIDANCE = 7.5
TIMESTEP = 501  # the first of DDIM's 2 steps ("leading" spacing, offset 1): 501, then 1

#: SD v1.5's UNet and VAE configs (diffusers' names)
SD15_UNET = {"sample_size": 64, "in_channels": 4, "out_channels": 4,
             "block_out_channels": [320, 640, 1280, 1280],
             "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
             "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
             "layers_per_block": 2, "attention_head_dim": 8, "cross_attention_dim": 768,
             "norm_num_groups": 32}
SD15_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4,
            "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
            "norm_num_groups": 32, "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "sample_size": 512}
#: --smoke: the same structure, tiny
TINY_UNET = {**SD15_UNET, "sample_size": 8, "block_out_channels": [32, 64],
             "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1,
             "attention_head_dim": 4, "cross_attention_dim": 32}
TINY_VAE = {**SD15_VAE, "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1,
            "sample_size": 64}
TEXT = {"hidden_size": 768, "num_hidden_layers": 12}


def configs(smoke: bool) -> tuple[dict, dict, int]:
    """(UNet config, VAE config, image size in pixels)."""
    return (TINY_UNET, TINY_VAE, 64) if smoke else (SD15_UNET, SD15_VAE, 512)


def inputs(smoke: bool) -> dict[str, np.ndarray]:
    """Fixed latents (1, h, w, 4) and context (2, 77, dim): unconditional, conditional."""
    unet, _, size = configs(smoke)
    rng = np.random.default_rng(0)
    side = size // 8
    return {"latents": rng.standard_normal((1, side, side, 4)).astype("float32"),
            "context": rng.standard_normal((2, 77, unet["cross_attention_dim"])
                                           ).astype("float32") * 0.5}


# --------------------------------------------------------------------------- #
# Workers.
# --------------------------------------------------------------------------- #


def worker_peer(args: argparse.Namespace) -> dict[str, Any]:
    import os

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    unet_config, vae_config, _ = configs(args.smoke)
    start = time.perf_counter()
    unet = UNet2DConditionModel(**unet_config).eval()
    vae = AutoencoderKL(**vae_config).eval()
    load_s = time.perf_counter() - start
    if args.share_dir:
        share = Path(args.share_dir)
        save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, share / "unet.st")
        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, share / "vae.st")
    data = inputs(args.smoke)
    latents = torch.from_numpy(data["latents"].transpose(0, 3, 1, 2).copy())
    context = torch.from_numpy(data["context"])
    out: dict[str, Any] = {"path": "diffusers UNet2DConditionModel + AutoencoderKL, "
                                   "torch.no_grad()", "load_s": load_s, "dtypes": {}}
    for dtype in args.dtypes:
        torch_dtype = getattr(torch, dtype)
        unet.to(torch_dtype)
        vae.to(torch_dtype)
        x, c = latents.to(torch_dtype), context.to(torch_dtype)

        def step() -> Any:
            with torch.no_grad():
                eps = unet(torch.cat([x, x]), TIMESTEP, encoder_hidden_states=c).sample
                uncond, cond = eps.chunk(2)
                return uncond + GUIDANCE * (cond - uncond)

        def decode() -> Any:
            with torch.no_grad():
                image = vae.decode(x / 0.18215).sample
                return (image / 2 + 0.5).clamp(0, 1)

        entry = {"step": common.time_calls(step, args.warmup, args.runs),
                 "decode": common.time_calls(decode, args.warmup, args.runs)}
        if args.share_dir and dtype == "float32":
            np.save(Path(args.share_dir) / "eps.npy",
                    step().float().numpy().transpose(0, 2, 3, 1))
            np.save(Path(args.share_dir) / "image.npy",
                    decode().float().numpy().transpose(0, 2, 3, 1))
        out["dtypes"][dtype] = entry
    return out


def build_zoo(smoke: bool, dtype: str, share_dir: str | None) -> Any:
    """A StableDiffusion task whose UNet and VAE decoder hold the peer's weights."""
    from zoo.core import deferred
    from zoo.diffusion.stable_diffusion.stable_diffusion_backbone import (
        StableDiffusionBackbone,
    )
    from zoo.diffusion.stable_diffusion.unet_convert import port_unet, unet_config
    from zoo.diffusion.stable_diffusion.vae_convert import port_vae_decoder, vae_config
    from zoo.models import StableDiffusion
    from zoo.presets.checkpoint_io import WeightReader, read_safetensors
    from zoo.tokenizers.clip import CLIPTokenizer
    from zoo.models import StableDiffusionPreprocessor

    unet, vae, size = configs(smoke)
    text = ({"hidden_dim": unet["cross_attention_dim"], "num_layers": 1, "num_heads": 2,
             "intermediate_dim": 64} if smoke else {})
    backbone, created = deferred.abstract_build(lambda: StableDiffusionBackbone(
        text_encoder=text, unet=unet_config(unet), vae=vae_config(vae), image_size=size,
        dtype=dtype))
    if share_dir:
        share = Path(share_dir)
        port_unet(backbone.unet, WeightReader(read_safetensors(share / "unet.st"), "unet"))
        port_vae_decoder(backbone.vae_decoder,
                         WeightReader(read_safetensors(share / "vae.st"), "vae"))
    deferred.initialize_rest(created)
    return StableDiffusion(backbone, StableDiffusionPreprocessor(CLIPTokenizer.from_open_clip()))


def worker_zoo(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    common.start_zoo_worker(backend)
    from zoo.diffusion.schedulers import get_scheduler
    from zoo.layers import conv as zoo_conv

    zoo_conv.ENABLED = args.conv == "winograd"
    data = inputs(args.smoke)
    out: dict[str, Any] = {"path": "StableDiffusion compiled denoising step (UNet on the "
                                   "guided batch of 2, guidance, DDIM update) and "
                                   "decode_latents; large float32 3x3 convolutions by "
                                   + ("Winograd F(4x4, 3x3)" if zoo_conv.ENABLED else
                                      "the direct op (--conv direct)"),
                           "conv": args.conv, "dtypes": {}}
    scheduler = get_scheduler("ddim")
    full = scheduler.schedule(2)  # run its first call only: t = 501 -> 1
    schedule = dataclasses.replace(full, timesteps=full.timesteps[:1], table=full.table[:1],
                                   noise_coefficients=full.noise_coefficients[:1])
    if int(schedule.timesteps[0]) != TIMESTEP:
        raise RuntimeError(f"DDIM's first timestep is {schedule.timesteps[0]}, not {TIMESTEP}")
    for dtype in args.dtypes:
        start = time.perf_counter()
        task = build_zoo(args.smoke, dtype, args.share_dir)
        load_s = time.perf_counter() - start
        rng = np.random.default_rng(0)

        def step() -> np.ndarray:
            return task._denoise(data["latents"], data["context"], scheduler, schedule,
                                 GUIDANCE, rng, {})

        def decode() -> np.ndarray:
            return task.decode_latents(data["latents"])

        entry = {"load_s": load_s, "step": common.time_calls(step, args.warmup, args.runs),
                 "decode": common.time_calls(decode, args.warmup, args.runs)}
        share = Path(args.share_dir or "/nonexistent")
        if dtype == "float32" and (share / "eps.npy").is_file():
            # The step's output is the DDIM update of the guided prediction; the
            # peer saved the prediction itself, so compare through the update.
            eps = np.load(share / "eps.npy")
            a, b = _ddim_coefficients(scheduler)
            entry["max_abs_diff_step"] = float(np.abs(step() - (a * data["latents"] + b * eps)
                                                      ).max())
            entry["max_abs_diff_decode"] = float(np.abs(decode() - np.load(share / "image.npy")
                                                        ).max())
        if dtype == "float32":  # XLA's count of the UNet call and the decode (jax only)
            # counted with direct convolutions: the model's FLOPs, whichever
            # algorithm ran (Winograd's rows can pass 100% MFU)
            unet, decoder = task.backbone.unet, task.backbone.vae_decoder
            doubled = np.concatenate([data["latents"]] * 2)
            t = np.full((2,), TIMESTEP, "float32")
            enabled, zoo_conv.ENABLED = zoo_conv.ENABLED, False
            out["flops"] = {"step": common.jax_flops(lambda x, c: unet(x, t, c), doubled,
                                                     data["context"]),
                            "decode": common.jax_flops(decoder, data["latents"])}
            zoo_conv.ENABLED = enabled
        out["dtypes"][dtype] = entry
        del task
    return out


def _ddim_coefficients(scheduler: Any) -> tuple[float, float]:
    """(a, b) with DDIM's update from TIMESTEP to 1, x_prev = a * x + b * eps (eta 0)."""
    alphas = np.cumprod(1.0 - np.linspace(scheduler.config.beta_start ** 0.5,
                                          scheduler.config.beta_end ** 0.5, 1000) ** 2)
    alpha_t, alpha_prev = alphas[TIMESTEP], alphas[1]
    a = np.sqrt(alpha_prev / alpha_t)
    b = np.sqrt(1 - alpha_prev) - np.sqrt(alpha_prev) * np.sqrt(1 - alpha_t) / np.sqrt(alpha_t)
    return float(a), float(b)


FAMILY = skeleton.Family("bench_stable_diffusion", "zoo.benchmarks.bench_stable_diffusion", PEER,
                       worker_peer, worker_zoo)


# --------------------------------------------------------------------------- #
# Parent.
# --------------------------------------------------------------------------- #


def markdown_table(results: dict[str, Any]) -> str:
    table = skeleton.Table(
        ["library", "backend", "dtype", "step (s)", "decode (s)", "step first call (s)",
         "max abs diff (step / decode)", "diffusers s / zoo s (step, decode)"], "lllrrrlr")
    peer = results[PEER]
    if "dtypes" not in peer:
        table.error(["diffusers", "-", "-"], peer.get("error", ""), 60)
        peer = {"dtypes": {}}
    for dtype, res in peer["dtypes"].items():
        table.add("diffusers", "-", dtype, f"{res['step']['ms'] / 1e3:.2f}",
                  f"{res['decode']['ms'] / 1e3:.2f}", f"{res['step']['first_call_s']:.2f}",
                  "(reference)", "1.00, 1.00")
    for backend, res in results["zoo"].items():
        if "dtypes" not in res:
            table.error(["zoo", backend, "-"], res.get("error", "missing"), 60)
            continue
        for dtype, r in res["dtypes"].items():
            diff = (f"{fmt(r.get('max_abs_diff_step'), '.1e')} / "
                    f"{fmt(r.get('max_abs_diff_decode'), '.1e')}"
                    if "max_abs_diff_step" in r else "-")
            table.add("zoo", backend, dtype, f"**{r['step']['ms'] / 1e3:.2f}**",
                      f"**{r['decode']['ms'] / 1e3:.2f}**", f"{r['step']['first_call_s']:.2f}",
                      diff, f"**{fmt(r.get('ratio_step'), '.2f')}**, "
                      f"**{fmt(r.get('ratio_decode'), '.2f')}**")
    return table.render()


def run_parent(args: argparse.Namespace) -> int:
    backends = common.parse_list(args.backends, BACKENDS)
    unet, vae, size = configs(args.smoke)
    results: dict[str, Any] = {
        **skeleton.results_header("stable_diffusion_step_and_decode",
                                "zoo.benchmarks.bench_stable_diffusion",
                                (*common.DEFAULT_DISTRIBUTIONS, "diffusers")),
        "workload": {"model": "tiny SD-structured UNet/VAE" if args.smoke else
                     "SD v1.5-size UNet and VAE (random weights)",
                     "image_size": [size, size], "unet_batch": 2, "guidance_scale": GUIDANCE,
                     "dtypes": list(args.dtypes), "runs": args.runs, "warmup": args.warmup,
                     "smoke": args.smoke, "unet_config": unet, "vae_config": vae},
        "ratio_definition": "diffusers_s / zoo_s in the same dtype (> 1: zoo faster)",
    }
    results[PEER], zoo = FAMILY.run(args, backends, ",".join(args.dtypes),
                                    ["--conv", args.conv])
    peer = results[PEER].get("dtypes", {})
    for res in zoo.values():
        for dtype, r in res.get("dtypes", {}).items():
            if dtype in peer:
                r["ratio_step"] = peer[dtype]["step"]["ms"] / r["step"]["ms"]
                r["ratio_decode"] = peer[dtype]["decode"]["ms"] / r["decode"]["ms"]
    results["zoo"] = zoo
    float32 = {b: r["dtypes"]["float32"] for b, r in zoo.items()
               if "ratio_step" in r.get("dtypes", {}).get("float32", {})}
    target = skeleton.best_target({b: r["ratio_step"] for b, r in float32.items()}, TARGET_RATIO)
    if target:  # the target is the step's; the decode's ratio beside it
        target["best_ratio_step"] = target.pop("best_ratio")
        target["best_ratio_decode"] = float32[target["best_backend"]]["ratio_decode"]
    results["target"] = target
    out = skeleton.write_results(
        results, args.out, markdown_table(results),
        f"Stable Diffusion at {size}x{size}: one guided UNet step (batch 2) and one VAE "
        f"decode, median of {args.runs} runs")
    if target:
        print(skeleton.target_line({**target, "best_ratio": target["best_ratio_step"]},
                                   "diffusers' UNet step speed in float32", TARGET_RATIO))
    print(f"results written to {out}")
    return common.exit_code(PEER, results[PEER], zoo)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dtypes", default=",".join(DTYPES),
                            help="comma-separated dtypes (default: %(default)s)")
        parser.add_argument("--conv", choices=("winograd", "direct"), default="winograd",
                            help="zoo's large float32 3x3 convolutions: Winograd F(4x4, 3x3) "
                                 "(zoo's default) or the direct op (default: %(default)s)")

    args = FAMILY.parse_args(argv, __doc__, runs=3, warmup=1, out=DEFAULT_OUT, timeout=3600.0,
                             retries=1, options=options, dtypes=False,
                             runs_help="timed calls of each workload",
                             smoke_help="tiny model, 1 run, no warm-up")[1]
    args.dtypes = common.parse_list(args.dtypes, DTYPES, "dtype")
    return args


#: XLA's FLOP count of the full-size (512x512) workload, from the jax worker
#: of the 2026-12-05 run (results/stable_diffusion.json): runs without a jax
#: worker (tensorflow/torch only) report their MFU against it.
XLA_FLOPS_512 = {"step": 1346204598272.0, "decode": 2504076820480.0}


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """`zoo benchmark`'s rows: the guided UNet step and the VAE decode, per zoo
    backend and dtype, against diffusers in the same dtype. FLOPs are XLA's
    count from the jax worker, or `XLA_FLOPS_512` for a full-size run
    without one (None for other sizes)."""
    size = results["workload"]["image_size"][0]
    peer = results.get(PEER) or {}
    flops = next((r["flops"] for r in results["zoo"].values()
                  if any((r.get("flops") or {}).values())),  # tf/torch workers count None
                 XLA_FLOPS_512 if size == 512 else {})
    rows = []
    for backend, res in results["zoo"].items():
        for dtype in res.get("dtypes") or {d: {} for d in results["workload"]["dtypes"]}:
            entry = (res.get("dtypes") or {}).get(dtype) or {"error": res.get("error")}
            theirs = (peer.get("dtypes") or {}).get(dtype) or {}
            for part, name in (("step", f"UNet step {size}px, guided batch 2"),
                               ("decode", f"VAE decode {size}px")):
                diff = entry.get(f"max_abs_diff_{part}")
                rows.append(common.row(
                    "stable_diffusion", name, backend, entry.get(part, entry), PEER,
                    theirs.get(part), dtype=dtype, flops=flops.get(part),
                    match=None if diff is None else diff < 1e-3))
    return rows


main = FAMILY.entry(parse_args, run_parent)


if __name__ == "__main__":
    sys.exit(main())
