"""Seeded sweep of random Stable Diffusion configs made and saved by diffusers.

Each config (`sweep_configs.sd_space`) is a pipeline of a random
`UNet2DConditionModel` (1 to 4 levels, plain and cross-attention levels in
any position, head counts per level or not, linear or 1x1 projections,
inpainting inputs, ...), `AutoencoderKL` (levels, widths, latent channels,
scaling factor) and `CLIPTextModel` (gelu / quick_gelu, its own vocabulary
with a tokenizer in either folder layout), every weight perturbed, saved
with `save_pretrained`, converted by zoo's `convert_diffusers` and compared
with diffusers / transformers reading the same folder: text encoder hidden
states, UNet noise prediction (odd latent sizes: diffusers' resize path),
VAE encoder moments and decoded pixels within 1e-4 (as
`test_components.py`), the tokenizer's ids equal, the scaling factor equal.
An unusual setting (`sweep_configs.UNUSUAL`) must convert exactly or be
zoo's own ConversionError naming it; a setting spelled as its default must
convert. Sweep size: `tests/sweeps.py` (`ZOO_SWEEP_FULL=1` runs them all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.diffusion.stable_diffusion.sweep_configs import (
    UNUSUAL,
    cheap,
    save_pipeline,
    sd_space,
    unusual,
)
from tests.sweeps import FULL_SIZE, assert_close, draw, sweep_indices
from zoo.core.errors import ConversionError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")

TOLERANCE = 1e-4  # float32, as test_components.py
SAMPLE_SIZE = 1  # configs per backend inside make test (each compiles a whole pipeline)


def run_indices() -> list[int]:
    """`tests/sweeps.py`'s indices; `make test`'s sample drawn from the cheap,
    convertible configs (a 4-level UNet takes a minute to compile on jax)."""
    everything = sweep_indices(FULL_SIZE, sample_size=0)  # empty: make test's sample
    if everything:
        return everything
    small = [i for i in range(FULL_SIZE) if cheap(draw("sd", i, sd_space))]
    return [small[p] for p in sweep_indices(len(small), SAMPLE_SIZE)]


CONFIGS = [pytest.param(draw("sd", i, sd_space), id=f"sd-{i:02d}") for i in run_indices()]
#: every unusual setting in the full sweep, one per backend in make test
SETTINGS = [UNUSUAL[i] for i in sweep_indices(len(UNUSUAL), 1) if i < len(UNUSUAL)]


def inputs(config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Seeded inputs of every component, at the config's odd sizes."""
    rng = np.random.default_rng(config["seed"])
    tokens = 512 + config["num_merges"] + 2
    ids = rng.integers(0, tokens - 2, size=(2, 77)).astype("int32")
    ids[:, 0] = tokens - 2
    for row, length in enumerate(rng.integers(2, 77, size=2)):
        ids[row, length:] = tokens - 1
    levels = len(config["vae"]["block_out_channels"])
    h, w = (2 ** (levels - 1) * k for k in config["image_factor"])
    unet = config["unet"]
    context = unet["cross_attention_dim"]
    context = context[0] if isinstance(context, list) else context
    return {
        "token_ids": ids,
        "latents": rng.normal(size=(2, *config["latent_size"], unet["in_channels"])),
        "timesteps": np.array([999.0, rng.uniform(0, 1000)]),
        "context": rng.normal(size=(2, int(rng.integers(1, 20)), context)),
        "images": rng.uniform(-1, 1, size=(1, h, w, 3)),
        "image_latents": rng.normal(size=(1, *config["latent_size"],
                                          config["vae"]["latent_channels"])),
    }


def reference_outputs(folder: Path, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What transformers / diffusers compute from the saved folder (float32)."""
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)  # noqa: E731
    with torch.no_grad():
        text = transformers.CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
        unet = diffusers.UNet2DConditionModel.from_pretrained(folder / "unet").eval()
        vae = diffusers.AutoencoderKL.from_pretrained(folder / "vae").eval()
        return {
            "text_embeddings": text(torch.from_numpy(x["token_ids"]).long()
                                    ).last_hidden_state.numpy(),
            "noise_pred": nhwc(unet(nchw(x["latents"]), torch.from_numpy(x["timesteps"]),
                                    encoder_hidden_states=torch.from_numpy(x["context"])
                                    ).sample),
            "latent_moments": nhwc(vae.encode(nchw(x["images"])).latent_dist.parameters),
            "decoded_images": nhwc(vae.decode(nchw(x["image_latents"])).sample),
            "scaling_factor": np.float32(vae.config.scaling_factor),
        }


def check_tokenizer(task: Any, folder: Path, config: dict[str, Any]) -> None:
    from tests.presets.test_vocabulary_fit import TEXTS

    reference = transformers.CLIPTokenizer.from_pretrained(folder / "tokenizer")
    expected = reference(TEXTS, padding="max_length", max_length=77, truncation=True).input_ids
    ours = task.preprocessor.tokenizer.encode(TEXTS)["token_ids"]
    assert ours.tolist() == expected, f"token ids differ for config {config}"


def check_config(config: dict[str, Any], tmp_path: Path) -> None:
    """Save the config's pipeline, convert it with zoo and compare (see above)."""
    from zoo.diffusion.stable_diffusion.stable_diffusion_convert import convert_diffusers
    from zoo.models import StableDiffusion

    save_pipeline(config, tmp_path)
    folder, preset = tmp_path / "diffusers", tmp_path / "preset"
    setting = unusual(config)
    try:
        convert_diffusers(folder, preset, "sweep")
    except ConversionError as error:
        assert setting is not None, f"a supported config was refused: {error}"
        assert setting in str(error), f"the error does not name {setting}: {error}"
        assert error.__cause__ is None, f"a converter crash, not a clean error: {error}"
        assert not preset.exists()
        return
    task = StableDiffusion.from_preset(preset)
    check_tokenizer(task, folder, config)
    x = {k: v.astype("int32" if k == "token_ids" else "float32") for k, v in
         inputs(config).items()}
    ours = task.backbone.predict_on_batch(x)
    expected = reference_outputs(folder, x)
    assert task.backbone.latent_scaling_factor == pytest.approx(expected.pop("scaling_factor"))
    for name, value in expected.items():
        assert_close(ours[name], value, TOLERANCE, name, config)


@pytest.mark.parametrize("config", CONFIGS)
def test_random_config_matches_diffusers(config, tmp_path):
    check_config(config, tmp_path)


@pytest.mark.parametrize("setting", SETTINGS, ids=[f"{s[0]}-{s[1]}" for s in SETTINGS])
def test_unusual_setting_is_exact_or_refused(setting, tmp_path):
    """Each unusual setting on the first cheap config of the sweep."""
    section, key, value, _ = setting
    base = next(c for c in (draw("sd", i, sd_space) for i in range(FULL_SIZE)) if cheap(c))
    base[section][key] = value
    assert unusual(base) is not None
    check_config(base, tmp_path)
