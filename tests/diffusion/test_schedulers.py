"""zoo's schedulers against diffusers': timesteps, sigmas and every call's output.

Both sides run the same loop: a deterministic stand-in for the UNet at every
call, the same starting latents, and for stochastic steps the same noise
(diffusers' `randn_tensor` is patched to hand out our draws in order). zoo
steps in keras.ops on the current backend, channels-last; diffusers in torch
float32, channels-first.

Tolerances:
- steps: max |zoo - diffusers| <= STEP_TOLERANCE * max(1, max |sample|).
  Both sides compute the same float32 update from coefficients rounded
  differently (zoo: float64 on the host, diffusers: float32 torch); the
  measured gap is below 1e-6 of the sample's scale, while a wrong
  coefficient shows as 1e-3 or more.
- timesteps: exactly equal, except Euler with Karras sigmas (fractional
  timesteps, within TIMESTEP_TOLERANCE): diffusers' training sigmas come
  from torch's CPU float32 sqrt, which is not correctly rounded (1 ulp off
  for some timesteps); zoo uses numpy's. Given torch's sigmas, zoo's
  timesteps are bit-equal (test_equal_training_sigmas_give_equal_schedules).
- sigmas: 1e-6 relative (the same 1-ulp sqrt difference).
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import sys

import keras
import numpy as np
import pytest

from zoo.core.compiled_loop import compile_step
from zoo.diffusion.schedulers import SCHEDULERS, get_scheduler

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

STEP_TOLERANCE = 1e-5  # times max(1, max |sample|)
TIMESTEP_TOLERANCE = 1e-3  # euler_karras only (see above)
SIGMA_RTOL = 1e-6
SHAPE = (2, 8, 8, 4)  # channels-last latents
#: SD v1.5's scheduler/scheduler_config.json
SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                  "num_train_timesteps": 1000, "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
                  "trained_betas": None}
DIFFUSERS = {"ddim": ("DDIMScheduler", {}), "pndm": ("PNDMScheduler", {}),
             "euler": ("EulerDiscreteScheduler", {}),
             "euler_karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
             "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
             "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
             "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True})}
NAMES = list(SCHEDULERS)
_RNG = np.random.default_rng(0)
GAIN = _RNG.uniform(0.3, 1.0, SHAPE[1:]).astype("float32")  # the fake UNet's weights
IMAGE = _RNG.standard_normal(SHAPE).astype("float32")  # "image latents" for add_noise


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(x: torch.Tensor) -> np.ndarray:
    return x.numpy().transpose(0, 2, 3, 1)


def fake_unet(sample: np.ndarray, t: float) -> np.ndarray:
    """A smooth, nonlinear stand-in for the UNet (channels-last float32)."""
    return (0.9 * np.tanh(sample * GAIN + np.float32(t / 1000.0))).astype("float32")


def reference(name: str, **overrides) -> object:
    cls, kwargs = DIFFUSERS[name]
    return getattr(diffusers, cls).from_config(SD15_SCHEDULER, **{**kwargs, **overrides})


def start_index(steps: int, strength: float) -> int:
    """StableDiffusionImg2ImgPipeline.get_timesteps."""
    return max(steps - min(int(steps * strength), steps), 0)


def run_diffusers(name, steps, strength, noise, monkeypatch, overrides=(), step_kwargs=()):
    """diffusers' loop; returns (scheduler, timesteps, start latents, outputs, add_noise)."""
    scheduler = reference(name, **dict(overrides))
    scheduler.set_timesteps(steps)
    start = start_index(steps, strength) * scheduler.order
    timesteps = scheduler.timesteps[start:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    draws = iter(noise[1:])
    monkeypatch.setattr(sys.modules[type(scheduler).__module__], "randn_tensor",
                        lambda *args, **kwargs: nchw(next(draws)), raising=False)
    image, first = nchw(IMAGE), nchw(noise[0])
    noised = [nhwc(scheduler.add_noise(image, first, timesteps[:1]))]  # img2img's start
    if strength < 1:
        x = scheduler.add_noise(image, first, timesteps[:1])
    else:
        x = first * scheduler.init_noise_sigma
    latents, outputs = nhwc(x), []
    for i, t in enumerate(timesteps):
        scaled = nhwc(scheduler.scale_model_input(x, t))
        x = scheduler.step(nchw(fake_unet(scaled, float(t))), t, x, **dict(step_kwargs)
                           ).prev_sample
        outputs.append(nhwc(x))
        if i + 1 < len(timesteps):  # legacy inpainting re-noises the known region here
            noised.append(nhwc(scheduler.add_noise(image, first, timesteps[i + 1:i + 2])))
    return scheduler, timesteps.numpy(), latents, outputs, noised


def run_zoo(scheduler, schedule, latents, noise) -> list[np.ndarray]:
    """zoo's loop, eager, one table row per call."""
    x = keras.ops.convert_to_tensor(latents)
    state = scheduler.initial_state(x)
    outputs = []
    for i, t in enumerate(schedule.timesteps):
        row = keras.ops.convert_to_tensor(schedule.table[i])
        scaled = keras.ops.convert_to_numpy(scheduler.scale_model_input(x, row))
        eps = keras.ops.convert_to_tensor(fake_unet(scaled, float(t)))
        step_noise = keras.ops.convert_to_tensor(noise[i + 1]) if scheduler.stochastic else None
        x, state = scheduler.step(eps, x, state, row, step_noise)
        outputs.append(np.asarray(keras.ops.convert_to_numpy(x)))
    return outputs


def compare(name, steps, strength, monkeypatch, overrides=(), step_kwargs=(), seed=0):
    """Run both loops and check every part of the schedule and every call."""
    rng = np.random.default_rng(seed)
    noise = [rng.standard_normal(SHAPE).astype("float32") for _ in range(steps + 2)]
    scheduler = get_scheduler(name, **dict(overrides), **dict(step_kwargs))
    schedule = scheduler.schedule(steps, strength=strength)
    ref, timesteps, latents, theirs, noised = run_diffusers(
        name, steps, strength, noise, monkeypatch, overrides, step_kwargs)
    assert schedule.timesteps.dtype == np.float32 and schedule.table.dtype == np.float32
    if name == "euler_karras":
        np.testing.assert_allclose(schedule.timesteps, timesteps, rtol=0, atol=TIMESTEP_TOLERANCE)
    else:
        np.testing.assert_array_equal(schedule.timesteps, timesteps.astype("float32"))
    expected_sigmas = ref.sigmas.numpy() if hasattr(ref, "sigmas") else np.zeros(0)
    np.testing.assert_allclose(schedule.sigmas, expected_sigmas, rtol=SIGMA_RTOL, atol=0)
    assert schedule.init_noise_sigma == pytest.approx(float(ref.init_noise_sigma), rel=1e-6)
    a, b = schedule.noise_coefficients.T[:, :, None, None, None, None]  # (n, 1, 1, 1, 1)
    np.testing.assert_allclose(a * IMAGE + b * noise[0], np.stack(noised), rtol=0,
                               atol=1e-5 * np.abs(noised).max())
    ours = run_zoo(scheduler, schedule, latents, noise)
    assert len(ours) == len(theirs) == len(schedule.table)
    worst = 0.0
    for i, (mine, expected) in enumerate(zip(ours, theirs)):
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(mine, expected, rtol=0, atol=STEP_TOLERANCE * scale,
                                   err_msg=f"{name}: call {i} of {len(theirs)}")
        worst = max(worst, float(np.abs(mine - expected).max()) / scale)
    return worst


@pytest.mark.parametrize("steps", [10, 25, 50])
@pytest.mark.parametrize("name", NAMES)
def test_text_to_image_run_matches_diffusers(name, steps, monkeypatch):
    compare(name, steps, 1.0, monkeypatch, seed=steps)


@pytest.mark.parametrize("name", NAMES)
def test_img2img_strength_matches_diffusers(name, monkeypatch):
    compare(name, 25, 0.6, monkeypatch)


VARIANTS = {"leading": {"timestep_spacing": "leading"},
            "linspace": {"timestep_spacing": "linspace"},
            "trailing": {"timestep_spacing": "trailing"},
            "v_prediction": {"prediction_type": "v_prediction"},
            "linear_betas": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", NAMES)
def test_options_match_diffusers(name, variant, monkeypatch):
    compare(name, 7, 1.0, monkeypatch, overrides=VARIANTS[variant])  # 7: uneven spacing


@pytest.mark.parametrize("eta, strength", [(1.0, 1.0), (0.5, 0.6)])
def test_ddim_with_eta_matches_diffusers(eta, strength, monkeypatch):
    assert get_scheduler("ddim", eta=eta).stochastic
    compare("ddim", 10, strength, monkeypatch, step_kwargs={"eta": eta})


@pytest.mark.parametrize("name", ["euler", "euler_karras", "euler_ancestral", "dpmpp_2m_karras"])
def test_equal_training_sigmas_give_equal_schedules(name, monkeypatch):
    """With torch's float32 training sigmas, zoo's timesteps and sigmas are bit-equal."""
    def torch_sigmas(alphas_cumprod):
        a = torch.from_numpy(alphas_cumprod)
        return (((1 - a) / a) ** 0.5).numpy()

    for module in ("euler", "dpm_solver"):
        monkeypatch.setattr(f"zoo.diffusion.schedulers.{module}.training_sigmas", torch_sigmas)
    for steps in (10, 25, 50):
        ref = reference(name)
        ref.set_timesteps(steps)
        schedule = get_scheduler(name).schedule(steps)
        np.testing.assert_array_equal(schedule.timesteps, ref.timesteps.numpy().astype("float32"))
        np.testing.assert_array_equal(schedule.sigmas, ref.sigmas.numpy())


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_diffusers_from_sd15_config(name):
    scheduler, ref = get_scheduler(name), reference(name)
    for field, value in dataclasses.asdict(scheduler.config).items():
        # eta is an argument of diffusers' DDIM step (default 0), not a config field
        expected = ref.config[field] if field in ref.config else {"eta": 0.0}[field]
        assert value == expected, f"{name}.{field}: {value!r} != diffusers' {expected!r}"
    np.testing.assert_array_equal(scheduler.alphas_cumprod, ref.alphas_cumprod.numpy())


@pytest.mark.parametrize("name", ["pndm", "euler_ancestral", "dpmpp_2m_karras"])
def test_steps_run_inside_one_compiled_function(name):
    scheduler = get_scheduler(name)
    schedule = scheduler.schedule(6)
    rng = np.random.default_rng(3)
    latents = rng.standard_normal(SHAPE).astype("float32")
    noise = rng.standard_normal((len(schedule.table),) + SHAPE).astype("float32")

    def step(x, state, i, table, noises):
        row = keras.ops.take(table, i, axis=0)
        eps = keras.ops.tanh(scheduler.scale_model_input(x, row))
        return scheduler.step(eps, x, state, row, keras.ops.take(noises, i, axis=0))

    compiled = compile_step(step, variables=[])
    x = latents
    state = tuple(keras.ops.convert_to_numpy(s) for s in scheduler.initial_state(
        keras.ops.convert_to_tensor(latents)))
    eager_x = keras.ops.convert_to_tensor(latents)
    eager_state = scheduler.initial_state(eager_x)
    for i in range(len(schedule.table)):
        x, state = compiled(x, state, np.asarray(i, "int32"), schedule.table, noise)
        row = keras.ops.convert_to_tensor(schedule.table[i])
        eps = keras.ops.tanh(scheduler.scale_model_input(eager_x, row))
        eager_x, eager_state = scheduler.step(eps, eager_x, eager_state, row,
                                              keras.ops.convert_to_tensor(noise[i]))
    assert compiled.trace_count == 1
    eager_x = keras.ops.convert_to_numpy(eager_x)  # XLA may fuse and reorder float32 math:
    np.testing.assert_allclose(keras.ops.convert_to_numpy(x), eager_x, rtol=0,
                               atol=STEP_TOLERANCE * max(1.0, float(np.abs(eager_x).max())))


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_samples(name):
    scheduler = get_scheduler(name)
    schedule = scheduler.schedule(4)
    rng = np.random.default_rng(4)
    start = rng.standard_normal(SHAPE).astype("float32") * schedule.init_noise_sigma
    results = {}
    for dtype in ("float32", "bfloat16"):
        x = keras.ops.cast(start, dtype)
        state = scheduler.initial_state(x)
        for i in range(len(schedule.table)):
            row = keras.ops.convert_to_tensor(schedule.table[i])  # float32 rows
            eps = keras.ops.tanh(scheduler.scale_model_input(x, row))
            x, state = scheduler.step(eps, x, state, row, keras.ops.cast(start / 10, dtype))
            assert keras.backend.standardize_dtype(x.dtype) == dtype
        results[dtype] = keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))
    assert np.isfinite(results["bfloat16"]).all()
    scale = np.abs(results["float32"]).max()
    np.testing.assert_allclose(results["bfloat16"], results["float32"], rtol=0,
                               atol=0.05 * scale)  # bfloat16 keeps 8 bits of mantissa


def test_bad_arguments_give_clear_errors():
    for steps in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"num_steps={steps!r}.*Fix:"):
            get_scheduler("ddim").schedule(steps)
    for strength in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=f"strength={strength!r}.*Fix:"):
            get_scheduler("euler").schedule(10, strength=strength)
    with pytest.raises(ValueError, match="Unknown scheduler 'heun'.*dpmpp_2m_karras"):
        get_scheduler("heun")
    with pytest.raises(ValueError, match=r"beta_schedule='cosine'.*\['linear', 'scaled_linear'\]"):
        get_scheduler("ddim", beta_schedule="cosine")
    with pytest.raises(ValueError, match="timestep_spacing='uniform'.*'trailing'"):
        get_scheduler("euler", timestep_spacing="uniform")
    with pytest.raises(ValueError, match="prediction_type='sample'.*'v_prediction'"):
        get_scheduler("dpmpp_2m", prediction_type="sample")
    with pytest.raises(ValueError, match="no setting.*use_karras_sigmas"):
        get_scheduler("pndm", use_karras_sigmas=True)
    with pytest.raises(ValueError, match="eta=-1"):
        get_scheduler("ddim", eta=-1.0)
    x = keras.ops.zeros(SHAPE)
    row = keras.ops.convert_to_tensor(get_scheduler("euler_ancestral").schedule(2).table[0])
    with pytest.raises(ValueError, match="needs `noise`"):
        get_scheduler("euler_ancestral").step(x, x, (), row)


@pytest.mark.parametrize("name", NAMES)
def test_registry_names_configs_and_reprs(name):
    scheduler = get_scheduler(name)
    assert scheduler.name == name
    assert get_scheduler(scheduler) is scheduler
    config = scheduler.get_config()
    assert config["name"] == name
    restored = type(scheduler).from_config(config)
    assert repr(restored) == repr(scheduler) and type(scheduler).__name__ in repr(scheduler)
    changed = get_scheduler(scheduler, timestep_spacing="trailing")
    assert changed.config.timestep_spacing == "trailing"
    assert scheduler.config.timestep_spacing in ("leading", "linspace")  # unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        scheduler.config.steps_offset = 0


@pytest.mark.parametrize("module", ["", ".scheduler", ".sigmas", ".ddim", ".pndm", ".euler",
                                    ".euler_ancestral", ".dpm_solver"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module("zoo.diffusion.schedulers" + module),
                             optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
