"""StableDiffusion pipelines against diffusers', on a tiny random model.

Both sides draw their random numbers from the same NumPy generator: diffusers'
`randn_tensor` is patched to return `default_rng(seed)` draws (channels-last,
transposed), in the order diffusers asks for them, which is the order zoo
documents (image encoding, initial noise, masked-image encoding, per-step
noise). So the pipelines must agree to float32 rounding: the tolerance is
1e-3 on pixels in [0, 1] (measured on jax: 5e-6 to 1.2e-5).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from tests.diffusion.stable_diffusion.tiny_pipeline import (
    IMAGE_SIZE,
    SD15_SCHEDULER,
    make_pipeline,
    sample_image,
    sample_mask,
)
from tests.once import spread

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

PIXEL_TOLERANCE = 1e-3
SCHEDULERS = ["pndm", "ddim", "euler", "euler_karras", "euler_ancestral", "dpmpp_2m",
              "dpmpp_2m_karras"]
PROMPTS = ["a photo of an astronaut riding a horse", "a watercolor of a red fox"]
STEPS = 8
# Text to image checks every scheduler on every backend. Image to image and
# inpainting add scheduler-independent work around the same steps (encoding
# the image, the strength cut, the mask blend): `make test` runs each of their
# schedulers on one backend (tests/once.py), so every backend still checks
# each mode with two or three schedulers.
SPREAD_SCHEDULERS = spread(SCHEDULERS)


def diffusers_scheduler(name: str) -> object:
    classes = {"pndm": ("PNDMScheduler", {}), "ddim": ("DDIMScheduler", {}),
               "euler": ("EulerDiscreteScheduler", {}),
               "euler_karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
               "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
               "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
               "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True})}
    cls, kwargs = classes[name]
    return getattr(diffusers, cls).from_config(SD15_SCHEDULER, **kwargs)


def patch_randn(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Make every diffusers `randn_tensor` draw from `default_rng(seed)` as zoo does."""
    rng = np.random.default_rng(seed)

    def randn(shape, generator=None, device=None, dtype=None, layout=None):
        b, c, h, w = shape
        draw = rng.standard_normal((b, h, w, c)).astype("float32").transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(draw)).to(dtype or torch.float32)

    for name, module in list(sys.modules.items()):
        if name.startswith("diffusers") and hasattr(module, "randn_tensor"):
            monkeypatch.setattr(module, "randn_tensor", randn)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from zoo.diffusion.stable_diffusion.stable_diffusion_convert import convert_diffusers
    from zoo.models import StableDiffusion

    root = tmp_path_factory.mktemp("tiny_sd")
    pipe = make_pipeline(root)
    convert_diffusers(root / "diffusers", root / "preset", "tiny")
    return pipe, StableDiffusion.from_preset(root / "preset")


@pytest.fixture(scope="module")
def tiny_inpainting(tmp_path_factory):
    from zoo.diffusion.stable_diffusion.stable_diffusion_convert import convert_diffusers
    from zoo.models import StableDiffusion

    root = tmp_path_factory.mktemp("tiny_sd_inpaint")
    pipe = make_pipeline(root, unet_in_channels=9)
    convert_diffusers(root / "diffusers", root / "preset", "tiny-inpaint")
    return pipe, StableDiffusion.from_preset(root / "preset")


def _close(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=PIXEL_TOLERANCE, rtol=0)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("negative", [None, "blurry, low quality"])
def test_text_to_image_matches_diffusers(tiny, monkeypatch, scheduler, negative):
    pipe, sd = tiny
    pipe.scheduler = diffusers_scheduler(scheduler)
    patch_randn(monkeypatch, 7)
    expected = pipe(PROMPTS, negative_prompt=negative and [negative] * 2,
                    num_inference_steps=STEPS, guidance_scale=7.5, height=IMAGE_SIZE,
                    width=IMAGE_SIZE, output_type="np").images
    ours = sd.text_to_image(PROMPTS, negative_prompt=negative, num_steps=STEPS, seed=7,
                            scheduler=scheduler, height=IMAGE_SIZE, width=IMAGE_SIZE,
                            output_type="float")
    _close(ours, expected)


def test_without_guidance_and_several_images_per_prompt(tiny, monkeypatch):
    pipe, sd = tiny
    pipe.scheduler = diffusers_scheduler("ddim")
    for scale in (1.0, 5.0):
        patch_randn(monkeypatch, 3)
        expected = pipe(PROMPTS[0], num_inference_steps=5, guidance_scale=scale,
                        num_images_per_prompt=2, height=IMAGE_SIZE, width=IMAGE_SIZE,
                        output_type="np").images
        ours = sd.text_to_image(PROMPTS[0], num_steps=5, guidance_scale=scale, seed=3,
                                batch_size=2, scheduler="ddim", height=IMAGE_SIZE,
                                width=IMAGE_SIZE, output_type="float")
        _close(ours, expected)


@pytest.mark.parametrize("scheduler", SPREAD_SCHEDULERS)
def test_image_to_image_matches_diffusers(tiny, monkeypatch, scheduler):
    pipe, sd = tiny
    img2img = diffusers.StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    img2img.scheduler = diffusers_scheduler(scheduler)
    image = sample_image(1)
    patch_randn(monkeypatch, 11)
    expected = img2img(PROMPTS[1], image=Image.fromarray(image), strength=0.6,
                       negative_prompt="dark", num_inference_steps=STEPS, guidance_scale=6.0,
                       output_type="np").images
    ours = sd.image_to_image(image, PROMPTS[1], strength=0.6, negative_prompt="dark",
                             num_steps=STEPS, guidance_scale=6.0, seed=11, scheduler=scheduler,
                             output_type="float")
    _close(ours, expected)


def _inpaint_both(pipe, sd, monkeypatch, scheduler, strength, seed=5):
    inpaint = diffusers.StableDiffusionInpaintPipeline(**pipe.components)
    inpaint.set_progress_bar_config(disable=True)
    inpaint.scheduler = diffusers_scheduler(scheduler)
    image, mask = sample_image(2), sample_mask()
    patch_randn(monkeypatch, seed)
    expected = inpaint(PROMPTS[0], image=Image.fromarray(image), mask_image=Image.fromarray(mask),
                       strength=strength, num_inference_steps=STEPS, height=IMAGE_SIZE,
                       width=IMAGE_SIZE, output_type="np").images
    ours = sd.inpaint(image, mask, PROMPTS[0], strength=strength, num_steps=STEPS, seed=seed,
                      scheduler=scheduler, output_type="float")
    return ours, expected


@pytest.mark.parametrize("scheduler", spread(SCHEDULERS, start=1))
def test_inpaint_matches_diffusers(tiny, monkeypatch, scheduler):
    _close(*_inpaint_both(*tiny, monkeypatch, scheduler, strength=1.0))


@pytest.mark.parametrize("scheduler", ["ddim", "euler_ancestral"])
def test_inpaint_partial_strength_matches_diffusers(tiny, monkeypatch, scheduler):
    _close(*_inpaint_both(*tiny, monkeypatch, scheduler, strength=0.7))


@pytest.mark.parametrize("scheduler,strength", [("pndm", 1.0), ("dpmpp_2m", 0.75)])
def test_inpainting_unet_matches_diffusers(tiny_inpainting, monkeypatch, scheduler, strength):
    _close(*_inpaint_both(*tiny_inpainting, monkeypatch, scheduler, strength=strength))


def test_seeded_runs_repeat_and_outputs_are_uint8(tiny):
    _, sd = tiny
    kwargs = dict(num_steps=3, scheduler="euler_ancestral", height=IMAGE_SIZE, width=IMAGE_SIZE)
    first = sd.text_to_image("a cat", seed=42, **kwargs)
    again = sd.text_to_image("a cat", seed=42, **kwargs)
    other = sd.text_to_image("a cat", seed=43, **kwargs)
    assert first.dtype == np.uint8 and first.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).max() > 0


def test_empty_prompt_is_unconditional(tiny, monkeypatch):
    pipe, sd = tiny
    pipe.scheduler = diffusers_scheduler("pndm")
    patch_randn(monkeypatch, 1)
    expected = pipe("", num_inference_steps=4, height=IMAGE_SIZE, width=IMAGE_SIZE,
                    output_type="np").images
    ours = sd.text_to_image("", num_steps=4, seed=1, height=IMAGE_SIZE, width=IMAGE_SIZE,
                            output_type="float")
    _close(ours, expected)


def test_long_prompt_is_truncated_with_a_warning(tiny):
    _, sd = tiny
    long = " ".join(["a very detailed painting of a lighthouse"] * 20)
    with pytest.warns(UserWarning, match="tokens long"):
        sd.text_to_image(long, num_steps=1, seed=0, height=IMAGE_SIZE, width=IMAGE_SIZE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd.text_to_image("short", num_steps=1, seed=0, height=IMAGE_SIZE, width=IMAGE_SIZE)
    assert not [w for w in caught if "tokens long" in str(w.message)]


def test_bad_inputs_give_clear_errors(tiny, tmp_path):
    from zoo.utils.images import ImageError

    _, sd = tiny
    image = sample_image(0)
    with pytest.raises(ValueError, match="num_steps=0"):
        sd.text_to_image("a cat", num_steps=0)
    with pytest.raises(ValueError, match="multiples of"):
        sd.text_to_image("a cat", num_steps=1, height=31, width=IMAGE_SIZE)
    with pytest.raises(ValueError, match="mask is 16x16 pixels but the image is 32x32"):
        sd.inpaint(image, np.zeros((16, 16), "uint8"), "a cat", num_steps=1)
    with pytest.raises(ImageError):
        sd.image_to_image(np.zeros((IMAGE_SIZE, IMAGE_SIZE, 5), "uint8"), "a cat", num_steps=2)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    with pytest.raises(ImageError, match="notes.png"):
        sd.image_to_image(str(not_an_image), "a cat", num_steps=2)
    with pytest.raises(ValueError, match="strength"):
        sd.image_to_image(image, "a cat", strength=0.0, num_steps=2)
    with pytest.raises(ValueError, match="prompt"):
        sd.text_to_image(None, num_steps=1)
    with pytest.raises(ValueError, match="negative prompts"):
        sd.text_to_image(["a", "b"], negative_prompt=["x", "y", "z"], num_steps=1)


def test_bfloat16_load_generates_close_images(tiny, tmp_path):
    from zoo.models import StableDiffusion

    _, sd = tiny
    sd.save_to_preset(tmp_path / "preset")
    half = StableDiffusion.from_preset(tmp_path / "preset", dtype="bfloat16")
    assert half.backbone.unet.compute_dtype == "bfloat16"
    kwargs = dict(num_steps=4, seed=3, scheduler="ddim", output_type="float")
    full, low = sd.text_to_image("a cat", **kwargs), half.text_to_image("a cat", **kwargs)
    assert np.isfinite(low).all()
    # bfloat16 keeps 8 bits of mantissa: pixels stay within a few levels on average
    assert np.abs(full - low).mean() < 0.02, np.abs(full - low).mean()


def test_default_preset_needs_the_hub_and_says_so(zoo_home, hf_cache):
    from zoo.core.errors import PresetNotFoundError
    from zoo.models import StableDiffusion

    with pytest.raises(PresetNotFoundError, match="stable-diffusion-v1-5/stable-diffusion-v1-5"):
        StableDiffusion()
