"""Stable Diffusion conversion: diffusers folders, single-file checkpoints, handles, errors."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

from tests.diffusion.stable_diffusion.tiny_pipeline import make_pipeline
from tests.presets.test_handles import fake_hf_cache
from zoo.core.errors import ConversionError
from zoo.diffusion.stable_diffusion import stable_diffusion_checkpoints as ckpt
from zoo.diffusion.stable_diffusion.stable_diffusion_convert import (
    compare_with_diffusers,
    convert_diffusers,
    convert_single_file,
)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

#: every component on fixed inputs (see compare_with_diffusers), float32
COMPONENT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_sd_convert")
    pipe = make_pipeline(root)
    convert_diffusers(root / "diffusers", root / "preset", "tiny")
    return pipe, root


def _state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _original_state(pipe, root) -> dict[str, np.ndarray]:
    config = lambda name: json.loads((root / "diffusers" / name / "config.json").read_text())  # noqa: E731
    components = {"text_encoder": _state(pipe.text_encoder), "unet": _state(pipe.unet),
                  "vae": _state(pipe.vae)}
    return ckpt.diffusers_to_original(components, ckpt.unet_layout(config("unet")),
                                      ckpt.vae_layout(config("vae")))


def _weights(preset) -> dict[str, np.ndarray]:
    from zoo.models import StableDiffusionBackbone

    backbone = StableDiffusionBackbone.from_preset(preset)
    return {v.path: np.asarray(keras.ops.convert_to_numpy(v)) for v in backbone.weights}


def test_diffusers_folder_components_match(tiny):
    _, root = tiny
    diff = compare_with_diffusers(root / "preset", root / "diffusers")
    assert diff < COMPONENT_TOLERANCE, diff


def test_original_names_are_what_diffusers_reads(tiny):
    """Our original-format names, read back by diffusers' own single-file
    converters, give diffusers' state dicts exactly."""
    from diffusers.loaders import single_file_utils as sfu

    pipe, root = tiny
    original = {k: torch.from_numpy(v) for k, v in _original_state(pipe, root).items()}
    unet = sfu.convert_ldm_unet_checkpoint(dict(original), dict(pipe.unet.config))
    vae = sfu.convert_ldm_vae_checkpoint(dict(original), dict(pipe.vae.config))
    for ours, theirs in ((unet, pipe.unet), (vae, pipe.vae)):
        expected = _state(theirs)
        assert sorted(ours) == sorted(expected)
        for name, value in expected.items():
            np.testing.assert_array_equal(ours[name].reshape(value.shape).numpy(), value, name)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_converts_to_identical_weights(tiny, tmp_path, suffix):
    pipe, root = tiny
    state = _original_state(pipe, root)
    state["model_ema.decay"] = np.array(0.9999, "float32")  # training state is skipped
    state["alphas_cumprod"] = np.linspace(1, 0, 1000).astype("float32")
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": {k: torch.from_numpy(np.ascontiguousarray(v))
                                   for k, v in state.items()}, "global_step": 10}, path)
    from zoo.presets.formats import detect_format, torch_file_kind

    assert detect_format(path) == "torch_file" and torch_file_kind(path) == "stable_diffusion"
    convert_single_file(path, tmp_path / "preset", str(path), config_dir=root / "diffusers")
    ours, folder = _weights(tmp_path / "preset"), _weights(root / "preset")
    assert ours.keys() == folder.keys()
    for name in folder:
        np.testing.assert_array_equal(ours[name], folder[name], name)


def test_single_file_config_may_give_settings_per_level(tiny, tmp_path):
    """A config folder that spells `layers_per_block` / `cross_attention_dim`
    once per level (as diffusers allows) converts when the levels agree and
    is refused, naming the setting, when they differ."""
    from safetensors.numpy import save_file

    pipe, root = tiny
    path = tmp_path / "tiny.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in _original_state(pipe, root).items()},
              str(path))
    configs = tmp_path / "configs"
    shutil.copytree(root / "diffusers", configs)
    unet_file = configs / "unet" / "config.json"
    unet = json.loads(unet_file.read_text())
    levels = len(unet["block_out_channels"])
    unet["layers_per_block"] = [unet["layers_per_block"]] * levels
    unet["cross_attention_dim"] = [unet["cross_attention_dim"]] * levels
    unet_file.write_text(json.dumps(unet))
    convert_single_file(path, tmp_path / "preset", str(path), config_dir=configs)
    ours, folder = _weights(tmp_path / "preset"), _weights(root / "preset")
    assert ours.keys() == folder.keys()
    unet["layers_per_block"][-1] += 1
    unet_file.write_text(json.dumps(unet))
    with pytest.raises(ConversionError, match="layers_per_block=.* differs between levels"):
        convert_single_file(path, tmp_path / "refused", str(path), config_dir=configs)
    assert not (tmp_path / "refused").exists()


def test_single_file_errors(tiny, tmp_path):
    from safetensors.numpy import save_file

    pipe, root = tiny
    state = _original_state(pipe, root)
    broken = {k: v for k, v in state.items() if not k.startswith(ckpt.VAE_PREFIX)}
    save_file({k: np.ascontiguousarray(v) for k, v in broken.items()}, str(tmp_path / "a.safetensors"))
    with pytest.raises(ConversionError, match="no vae weights"):
        convert_single_file(tmp_path / "a.safetensors", tmp_path / "out", "a",
                            config_dir=root / "diffusers")
    extra = dict(state)
    extra["model.diffusion_model.input_blocks.99.0.in_layers.0.weight"] = np.zeros(3, "float32")
    save_file({k: np.ascontiguousarray(v) for k, v in extra.items()}, str(tmp_path / "b.safetensors"))
    with pytest.raises(ConversionError, match="no place"):
        convert_single_file(tmp_path / "b.safetensors", tmp_path / "out", "b",
                            config_dir=root / "diffusers")
    assert not (tmp_path / "out").exists()


def test_diffusers_folder_errors(tiny, tmp_path):
    _, root = tiny
    folder = tmp_path / "sdxl"
    shutil.copytree(root / "diffusers", folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(
        {**index, "_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(ConversionError, match="StableDiffusionXLPipeline"):
        convert_diffusers(folder, tmp_path / "out", "x")
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ConversionError, match="unet has no weights"):
        convert_diffusers(folder, tmp_path / "out", "x")


def test_hf_handle_converts_offline_from_cache(tiny, zoo_home, hf_cache):
    from zoo.models import StableDiffusion

    _, root = tiny
    fake_hf_cache(hf_cache, "someone/tiny-sd", root / "diffusers")
    sd = StableDiffusion.from_preset("hf://someone/tiny-sd")
    assert sd.default_scheduler == "pndm" and sd.backbone.image_size == 32
    image = sd.text_to_image("a red cube", num_steps=2, seed=0)
    assert image.shape == (1, 32, 32, 3) and image.dtype == np.uint8


def test_catalog_parameter_count_is_the_sd_v1_architecture():
    from zoo.core import deferred
    from zoo.models import StableDiffusionBackbone
    from zoo.presets import info

    backbone, _ = deferred.abstract_build(StableDiffusionBackbone)
    counts = {name: sum(int(np.prod(v.shape)) for v in getattr(backbone, name).weights)
              for name in ("text_encoder", "unet", "vae_encoder", "vae_decoder")}
    # transformers' CLIPTextModel (ViT-L/14 text tower), diffusers' SD v1 UNet and VAE
    assert counts["text_encoder"] == 123_060_480
    assert counts["unet"] == 859_520_964
    assert counts["vae_encoder"] + counts["vae_decoder"] == 83_653_863
    assert info("stable_diffusion_v1_5")["params"] == sum(counts.values())
    assert info("stable_diffusion_v1_4")["params"] == sum(counts.values())
