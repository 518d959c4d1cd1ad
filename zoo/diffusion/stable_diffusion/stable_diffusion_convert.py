"""Stable Diffusion checkpoints -> zoo presets.

Two origins, one port per component:

- diffusers folders (`model_index.json`, `text_encoder/`, `unet/`, `vae/`,
  `tokenizer/`, `scheduler/`), e.g. hf://stable-diffusion-v1-5/stable-diffusion-v1-5;
- single-file original checkpoints (`.safetensors`, or `.ckpt` through the
  restricted unpickler) with the original module names, renamed to
  diffusers' names first (`stable_diffusion_checkpoints.py`). Their configs
  come from a diffusers folder when one is given, else SD v1's.

The backbone is built without random initialisation (`deferred`), every
variable gets its weight from the checkpoint, and a weight left unused is
an error, so nothing is dropped silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from zoo.core import deferred
from zoo.core.errors import ConversionError
from zoo.core.preset_io import write_preset
from zoo.core.tokenizer import check_fits_embedding
from zoo.diffusion.stable_diffusion.clip_convert import port_text_encoder, text_encoder_config
from zoo.diffusion.stable_diffusion.stable_diffusion_checkpoints import (
    UNET_PREFIX,
    original_to_diffusers,
    unet_layout,
    vae_layout,
)
from zoo.diffusion.stable_diffusion.unet_convert import (
    one_value_per_level,
    port_unet,
    unet_config,
)
from zoo.diffusion.stable_diffusion.vae_convert import (
    port_vae_decoder,
    port_vae_encoder,
    vae_config,
)
from zoo.presets.checkpoint_io import (
    WeightReader,
    load_reference,
    read_safetensors,
    storage_dtype,
)
from zoo.presets.formats import SourceFormat

#: the checkpoints this module converts, and how each is checked (zoo.families)
SOURCE_FORMATS = {
    "diffusers": SourceFormat("convert_diffusers", "compare_with_diffusers",
                              "torch,transformers,diffusers",
                              "max abs difference vs diffusers/transformers", tolerance=1e-3),
    "torch_file": SourceFormat("convert_single_file", None, "", ""),
}

#: pipelines whose folders hold an SD v1-style text encoder, UNet and VAE
SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionInpaintPipeline",
                       "StableDiffusionImg2ImgPipeline")
#: diffusers scheduler class -> zoo scheduler name (the task's default)
SCHEDULER_NAMES = {"PNDMScheduler": "pndm", "DDIMScheduler": "ddim",
                   "EulerDiscreteScheduler": "euler",
                   "EulerAncestralDiscreteScheduler": "euler_ancestral",
                   "DPMSolverMultistepScheduler": "dpmpp_2m"}

#: SD v1's component configs in diffusers' / transformers' terms (single files)
SD_V1_TEXT_CONFIG = {"vocab_size": 49408, "hidden_size": 768, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "intermediate_size": 3072,
                     "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                     "layer_norm_eps": 1e-5}
SD_V1_UNET_CONFIG = {
    "in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "layers_per_block": 2,
    "attention_head_dim": 8, "cross_attention_dim": 768, "norm_num_groups": 32,
    "sample_size": 64}
SD_V1_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215, "sample_size": 512}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ConversionError(f"{path.parent.parent} is missing {path.parent.name}/{path.name}. "
                              "Fix: download the complete diffusers folder.")
    return json.loads(path.read_text())


def _component_weights(folder: Path, stems: tuple[str, ...]) -> dict[str, np.ndarray]:
    """A component's state dict: `<stem>.safetensors` preferred, else `<stem>.bin`."""
    for stem in stems:
        if (folder / f"{stem}.safetensors").is_file():
            return read_safetensors(folder / f"{stem}.safetensors")
    for stem in stems:
        if (folder / f"{stem}.bin").is_file():
            from zoo.presets.checkpoint_io import _read_torch

            return _read_torch(folder / f"{stem}.bin")
    raise ConversionError(
        f"{folder} has no weights (looked for {', '.join(s + '.safetensors' for s in stems)} "
        "and .bin). Fix: download the complete diffusers folder (float32 or float16 "
        "variants named like the plain files are not read).")


def read_diffusers_folder(source: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """(configs, state dicts) by component of a diffusers Stable Diffusion folder."""
    index = _read_json(source / "model_index.json")
    pipeline = index.get("_class_name")
    if pipeline not in SUPPORTED_PIPELINES:
        raise ConversionError(
            f"{source} holds a diffusers {pipeline}, which zoo cannot convert (supported: "
            f"{', '.join(SUPPORTED_PIPELINES)}: Stable Diffusion v1-style models).")
    configs = {name: _read_json(source / name / "config.json")
               for name in ("text_encoder", "unet", "vae")}
    configs["scheduler"] = (_read_json(source / "scheduler" / "scheduler_config.json")
                            if (source / "scheduler").is_dir() else {})
    weights = {"text_encoder": _component_weights(source / "text_encoder",
                                                  ("model", "pytorch_model")),
               "unet": _component_weights(source / "unet", ("diffusion_pytorch_model",)),
               "vae": _component_weights(source / "vae", ("diffusion_pytorch_model",))}
    return configs, weights


def backbone_kwargs(configs: dict[str, dict]) -> dict[str, Any]:
    """`StableDiffusionBackbone` arguments from diffusers / transformers configs."""
    vae = configs["vae"]
    encoder_kwargs = vae_config(vae)
    return {"text_encoder": text_encoder_config(configs["text_encoder"]),
            "unet": unet_config(configs["unet"]),
            "vae": encoder_kwargs,
            "latent_scaling_factor": float(vae.get("scaling_factor", 0.18215)),
            # diffusers' default size: the UNet's sample size times the VAE's factor
            "image_size": int(configs["unet"].get("sample_size", 64))
            * 2 ** (len(vae["block_out_channels"]) - 1)}


def build_backbone(configs: dict[str, dict], weights: dict[str, dict], source: str,
                   dtype: str = "float32") -> Any:
    """A `StableDiffusionBackbone` holding the checkpoint's weights, built in
    `dtype` (converters: the storage dtype, so a 16-bit checkpoint is never
    held as float32)."""
    from zoo.diffusion.stable_diffusion.stable_diffusion_backbone import (
        StableDiffusionBackbone,
    )

    backbone, created = deferred.abstract_build(
        lambda: StableDiffusionBackbone(**backbone_kwargs(configs), dtype=dtype))
    readers = {name: WeightReader(arrays, f"{source} ({name})") for name, arrays in
               weights.items()}
    port_text_encoder(backbone.text_encoder, readers["text_encoder"])
    port_unet(backbone.unet, readers["unet"])
    port_vae_encoder(backbone.vae_encoder, readers["vae"])
    port_vae_decoder(backbone.vae_decoder, readers["vae"])
    for name, reader in readers.items():
        unused = [k for k in reader.unused() if not k.endswith("position_ids")]
        if unused:
            raise ConversionError(
                f"{source}: the {name} has weights the converted model would drop: "
                f"{unused[:5]}{' ...' if len(unused) > 5 else ''}.")
    deferred.require_values(backbone, created, source)
    return backbone


def _tokenizer(source: Path | None, backbone: Any, what: str) -> Any:
    """The folder's own CLIP tokenizer (vocab.json + merges.txt, or the
    tokenizer.json that current transformers writes alone), else CLIP's
    vocabulary from open_clip_torch; either must fit the text encoder."""
    from zoo.tokenizers.clip import CLIPTokenizer

    folder = None if source is None else source / "tokenizer"
    if folder is not None and folder.is_dir():
        try:
            tokenizer = CLIPTokenizer.from_huggingface(folder)
        except (FileNotFoundError, ValueError) as error:
            raise ConversionError(f"{folder}: {error}") from None
    else:
        tokenizer = CLIPTokenizer.from_open_clip()
    check_fits_embedding(tokenizer, backbone.text_encoder.vocabulary_size, what,
                         embedding="text encoder's token embedding")
    return tokenizer


def _write(backbone: Any, tokenizer: Any, scheduler_config: dict, output: Path,
           handle: str, storage: str) -> None:
    from zoo.diffusion.stable_diffusion.stable_diffusion import StableDiffusion
    from zoo.diffusion.stable_diffusion.stable_diffusion_preprocessor import (
        StableDiffusionPreprocessor,
    )

    scheduler = SCHEDULER_NAMES.get(scheduler_config.get("_class_name", ""), "pndm")
    task = StableDiffusion(backbone, StableDiffusionPreprocessor(tokenizer),
                           default_scheduler=scheduler)
    write_preset(output, task=task, source=handle, storage_dtype=storage,
                 config_dtype="float32")


def convert_diffusers(source: str | Path, output: str | Path, handle: str,
                      dtype: str = "source") -> None:
    """Convert a diffusers Stable Diffusion folder into a zoo preset at `output`,
    its weights stored in `dtype` (`zoo.presets.checkpoint_io.storage_dtype`)."""
    source = Path(source)
    configs, weights = read_diffusers_folder(source)
    storage = storage_dtype((a for arrays in weights.values() for a in arrays.values()), dtype)
    with deferred.streamed_values():  # each weight read, ported and written in turn
        backbone = build_backbone(configs, weights, str(source), storage)
        _write(backbone, _tokenizer(source, backbone, str(source)), configs["scheduler"],
               Path(output), handle, storage)


def read_single_file(path: Path) -> dict[str, np.ndarray]:
    """The state dict of a single-file checkpoint (`.safetensors` or `.ckpt`)."""
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    from zoo.presets.checkpoint_io import _read_torch

    return _read_torch(path)


def convert_single_file(source: str | Path, output: str | Path, handle: str,
                        config_dir: str | Path | None = None, dtype: str = "source") -> None:
    """Convert a single-file original checkpoint into a zoo preset at `output`.

    Args:
        source: the `.safetensors` / `.ckpt` file.
        output: the preset directory to write.
        handle: the source handle recorded in the preset's metadata.
        config_dir: a diffusers folder whose configs (and tokenizer) describe
            the checkpoint; None: SD v1's configs, with the UNet's input
            channels read from the weights (9 for inpainting models).
        dtype: the dtype the preset stores its weights in
            (`zoo.presets.checkpoint_io.storage_dtype`; "source": the file's).
    """
    source = Path(source)
    state = read_single_file(source)
    storage = storage_dtype(state.values(), dtype)
    if f"{UNET_PREFIX}input_blocks.0.0.weight" not in state:
        raise ConversionError(
            f"{source} is not a single-file Stable Diffusion checkpoint (no "
            f"{UNET_PREFIX}input_blocks.0.0.weight). Fix: pass an SD v1 .safetensors/.ckpt.")
    if config_dir is not None:
        config_dir = Path(config_dir)
        configs = {name: _read_json(config_dir / name / "config.json")
                   for name in ("text_encoder", "unet", "vae")}
        configs["unet"] = one_value_per_level(configs["unet"])
        scheduler_file = config_dir / "scheduler" / "scheduler_config.json"
        configs["scheduler"] = _read_json(scheduler_file) if scheduler_file.is_file() else {}
    else:
        unet = dict(SD_V1_UNET_CONFIG)
        unet["in_channels"] = int(state[f"{UNET_PREFIX}input_blocks.0.0.weight"].shape[1])
        configs = {"text_encoder": dict(SD_V1_TEXT_CONFIG), "unet": unet,
                   "vae": dict(SD_V1_VAE_CONFIG), "scheduler": {}}
    weights = original_to_diffusers(state, unet_layout(configs["unet"]),
                                    vae_layout(configs["vae"]), str(source))
    with deferred.streamed_values():  # each weight read, ported and written in turn
        backbone = build_backbone(configs, weights, str(source), storage)
        _write(backbone, _tokenizer(config_dir, backbone, str(source)), configs["scheduler"],
               Path(output), handle, storage)


def _verification_inputs(backbone: Any) -> dict[str, np.ndarray]:
    """Fixed pseudo-random inputs for every component (small spatial sizes)."""
    rng = np.random.default_rng(0)
    f = backbone.vae_scale_factor
    side = 8
    vocabulary = backbone.text_encoder.vocabulary_size
    ids = rng.integers(0, vocabulary - 2, size=(2, 77)).astype("int32")
    ids[:, 0], ids[:, 40:] = vocabulary - 2, vocabulary - 1  # BOS, prompt, EOS padding
    return {
        "token_ids": ids,
        "latents": rng.normal(size=(2, side, side, backbone.unet.in_channels)).astype("float32"),
        "timesteps": np.array([999.0, 37.5], "float32"),
        "context": rng.normal(size=(2, 77, backbone.unet.cross_attention_dim)).astype("float32"),
        "images": rng.uniform(-1, 1, size=(1, side * f, side * f, 3)).astype("float32"),
        "image_latents": rng.normal(size=(1, side, side, backbone.latent_channels)
                                    ).astype("float32"),
    }


def compare_with_diffusers(preset_dir: Path, source: Path) -> float:
    """Largest abs difference against diffusers / transformers (float32, from
    the weights as the preset stores them: `load_reference`) over
    the text encoder's hidden states, the UNet's noise prediction and the
    VAE's encoder moments and decoded pixels, on fixed pseudo-random inputs
    (77 token ids, 8x8 latents, one 64x64 image for SD). Needs `torch`,
    `transformers` and `diffusers`."""
    import torch
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from zoo.diffusion.stable_diffusion.stable_diffusion import StableDiffusion

    task = StableDiffusion.from_preset(preset_dir)
    inputs = _verification_inputs(task.backbone)
    ours = {k: np.asarray(v, "float32") for k, v in task.backbone.predict_on_batch(inputs).items()}
    source = Path(source)
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1)  # noqa: E731
    with torch.no_grad():
        text = load_reference(transformers.CLIPTextModel, source / "text_encoder", preset_dir)
        hidden = text(torch.from_numpy(inputs["token_ids"]).long()).last_hidden_state.numpy()
        del text
        unet = load_reference(UNet2DConditionModel, source / "unet", preset_dir)
        eps = nhwc(unet(nchw(inputs["latents"]), torch.from_numpy(inputs["timesteps"]),
                        encoder_hidden_states=torch.from_numpy(inputs["context"])).sample)
        del unet
        vae = load_reference(AutoencoderKL, source / "vae", preset_dir)
        moments = nhwc(vae.encode(nchw(inputs["images"])).latent_dist.parameters)
        decoded = nhwc(vae.decode(nchw(inputs["image_latents"])).sample)
    return float(max(np.abs(ours["text_embeddings"] - hidden).max(),
                     np.abs(ours["noise_pred"] - eps).max(),
                     np.abs(ours["latent_moments"] - moments).max(),
                     np.abs(ours["decoded_images"] - decoded).max()))
