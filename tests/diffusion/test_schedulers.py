"""zoo's schedulers against diffusers': timesteps, sigmas and every step's output.

Both run the same loop: a deterministic fake model output at every call,
from the same latents, with the same noise for ancestral steps. zoo's step
runs in keras.ops on the current backend; diffusers' in torch float32. The
tolerance, 2e-5 times the sample's scale, is float32 rounding of a
reordered but equal computation (measured ~1e-6); a wrong coefficient
anywhere shows up as 1e-3 or more.
"""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest

from tests.diffusion.stable_diffusion.tiny_pipeline import SD15_SCHEDULER
from zoo.core.compiled_loop import compile_step
from zoo.diffusion.schedulers import SCHEDULERS, get_scheduler

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

STEP_TOLERANCE = 2e-5
DIFFUSERS = {"ddim": ("DDIMScheduler", {}), "pndm": ("PNDMScheduler", {}),
             "euler": ("EulerDiscreteScheduler", {}),
             "euler_karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
             "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
             "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
             "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True})}


def reference(name: str, **overrides) -> object:
    cls, kwargs = DIFFUSERS[name]
    return getattr(diffusers, cls).from_config(SD15_SCHEDULER, **kwargs, **overrides)


def fake_model(sample: np.ndarray, t: float) -> np.ndarray:
    """A smooth, nonlinear stand-in for the UNet (channels-last float32)."""
    return np.tanh(0.7 * sample + np.float32(t / 1000.0)).astype("float32") * 0.9


def run_zoo(name: str, steps: int, strength: float, latents: np.ndarray, noise: list,
            **overrides) -> tuple:
    scheduler = get_scheduler(name, **overrides)
    schedule = scheduler.schedule(steps, strength=strength)
    x = keras.ops.convert_to_tensor(latents)
    state = scheduler.initial_state(x)
    outputs = []
    for i, t in enumerate(schedule.timesteps):
        row = keras.ops.convert_to_tensor(schedule.table[i])
        scaled = np.asarray(keras.ops.convert_to_numpy(scheduler.scale_model_input(x, row)))
        eps = keras.ops.convert_to_tensor(fake_model(scaled, float(t)))
        step_noise = keras.ops.convert_to_tensor(noise[i]) if scheduler.stochastic else None
        x, state = scheduler.step(eps, x, state, row, step_noise)
        outputs.append(np.asarray(keras.ops.convert_to_numpy(x)))
    return schedule, outputs


def run_diffusers(name: str, steps: int, strength: float, latents: np.ndarray, noise: list,
                  monkeypatch, **overrides) -> tuple:
    scheduler = reference(name, **overrides)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    start = 0
    if strength < 1:
        start = max(steps - min(int(steps * strength), steps), 0) * scheduler.order
        timesteps = timesteps[start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
    draws = iter(noise)

    def randn(shape, generator=None, device=None, dtype=None, layout=None):
        return torch.from_numpy(np.ascontiguousarray(next(draws).transpose(0, 3, 1, 2)))

    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("diffusers.schedulers") and hasattr(module, "randn_tensor"):
            monkeypatch.setattr(module, "randn_tensor", randn)
    x = torch.from_numpy(latents.transpose(0, 3, 1, 2).copy())
    outputs = []
    for t in timesteps:
        scaled = scheduler.scale_model_input(x, t).numpy().transpose(0, 2, 3, 1)
        eps = torch.from_numpy(fake_model(scaled, float(t)).transpose(0, 3, 1, 2).copy())
        x = scheduler.step(eps, t, x).prev_sample
        outputs.append(x.numpy().transpose(0, 2, 3, 1))
    return scheduler, timesteps.numpy(), outputs


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("steps", [10, 25, 50])
def test_timesteps_sigmas_and_steps_equal_diffusers(name, steps, monkeypatch):
    rng = np.random.default_rng(steps)
    latents = rng.standard_normal((2, 8, 8, 4)).astype("float32")
    noise = [rng.standard_normal(latents.shape).astype("float32") for _ in range(steps + 1)]
    schedule, ours = run_zoo(name, steps, 1.0, latents * 10, noise)
    scheduler, timesteps, theirs = run_diffusers(name, steps, 1.0, latents * 10, noise,
                                                 monkeypatch)
    fractional = name == "euler_karras"
    np.testing.assert_allclose(schedule.timesteps, timesteps, rtol=0,
                               atol=1e-3 if fractional else 0)
    if hasattr(scheduler, "sigmas"):
        np.testing.assert_allclose(schedule.sigmas, scheduler.sigmas.numpy(), rtol=1e-6)
    assert schedule.init_noise_sigma == pytest.approx(float(scheduler.init_noise_sigma),
                                                      rel=1e-6)
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, atol=STEP_TOLERANCE * scale, rtol=0, err_msg=f"call {i}")


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_partial_strength_and_add_noise_equal_diffusers(name, monkeypatch):
    steps, strength = 25, 0.6
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, 4, 4, 4)).astype("float32")
    noise = [rng.standard_normal(latents.shape).astype("float32") for _ in range(steps + 1)]
    schedule, ours = run_zoo(name, steps, strength, latents, noise)
    scheduler, timesteps, theirs = run_diffusers(name, steps, strength, latents, noise,
                                                 monkeypatch)
    np.testing.assert_allclose(schedule.timesteps, timesteps, atol=1e-3)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=STEP_TOLERANCE * max(1.0, np.abs(b).max()))
    # add_noise at the first timestep (img2img) and after each step (inpainting)
    fresh = reference(name)
    fresh.set_timesteps(steps)
    start = len(fresh.timesteps) - len(timesteps)
    if hasattr(fresh, "set_begin_index"):
        fresh.set_begin_index(start)
    x0 = torch.from_numpy(latents.transpose(0, 3, 1, 2).copy())
    eps = torch.from_numpy(noise[0].transpose(0, 3, 1, 2).copy())
    for i in (0, 1, len(timesteps) - 1):
        if hasattr(fresh, "_step_index"):
            fresh._step_index = start + i if i else None
        expected = fresh.add_noise(x0, eps, torch.from_numpy(timesteps[i:i + 1])).numpy().transpose(0, 2, 3, 1)
        a, b = schedule.noise_coefficients[i]
        np.testing.assert_allclose(a * latents + b * noise[0], expected, atol=1e-5, rtol=1e-5)


def test_ddim_with_eta_is_stochastic_and_equal(monkeypatch):
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((1, 4, 4, 4)).astype("float32")
    noise = [rng.standard_normal(latents.shape).astype("float32") for _ in range(10)]
    assert get_scheduler("ddim", eta=1.0).stochastic and not get_scheduler("ddim").stochastic
    _, ours = run_zoo("ddim", 10, 1.0, latents, noise, eta=1.0)
    ref = reference("ddim")
    ref.set_timesteps(10)
    draws = iter(noise)
    monkeypatch.setattr(sys.modules["diffusers.schedulers.scheduling_ddim"], "randn_tensor",
                        lambda shape, **kw: torch.from_numpy(
                            np.ascontiguousarray(next(draws).transpose(0, 3, 1, 2))))
    x = torch.from_numpy(latents.transpose(0, 3, 1, 2).copy())
    for t, a in zip(ref.timesteps, ours):
        eps = torch.from_numpy(fake_model(x.numpy().transpose(0, 2, 3, 1), float(t)
                                          ).transpose(0, 3, 1, 2).copy())
        x = ref.step(eps, t, x, eta=1.0).prev_sample
        np.testing.assert_allclose(a, x.numpy().transpose(0, 2, 3, 1), atol=2e-5)


def test_v_prediction_matches_diffusers(monkeypatch):
    rng = np.random.default_rng(2)
    latents = rng.standard_normal((1, 4, 4, 4)).astype("float32")
    for name in ("ddim", "pndm", "euler", "dpmpp_2m"):
        _, ours = run_zoo(name, 10, 1.0, latents, [], prediction_type="v_prediction")
        _, _, theirs = run_diffusers(name, 10, 1.0, latents, [], monkeypatch,
                                     prediction_type="v_prediction")
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, atol=STEP_TOLERANCE * max(1, np.abs(b).max()),
                                       err_msg=name)


def test_steps_run_inside_one_compiled_function():
    scheduler = get_scheduler("pndm")
    schedule = scheduler.schedule(6)
    latents = np.random.default_rng(3).standard_normal((1, 4, 4, 4)).astype("float32")

    def step(x, state, i, table):
        row = keras.ops.take(table, i, axis=0)
        return scheduler.step(keras.ops.tanh(x), x, state, row)

    compiled = compile_step(step, [])
    x, state = latents, tuple(np.zeros_like(latents) for _ in range(4))
    eager_x = keras.ops.convert_to_tensor(latents)
    eager_state = scheduler.initial_state(eager_x)
    table = schedule.table
    for i in range(len(schedule.timesteps)):
        x, state = compiled(x, state, np.asarray(i, "int32"), table)
        eager_x, eager_state = scheduler.step(keras.ops.tanh(eager_x), eager_x, eager_state,
                                              keras.ops.convert_to_tensor(table[i]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(x),
                               keras.ops.convert_to_numpy(eager_x), atol=1e-5)
    if keras.backend.backend() != "torch":
        assert compiled.trace_count == 1


def test_bad_settings_give_clear_errors():
    with pytest.raises(ValueError, match="num_steps=0"):
        get_scheduler("ddim").schedule(0)
    for strength in (0.0, 1.5):
        with pytest.raises(ValueError, match="strength"):
            get_scheduler("euler").schedule(10, strength=strength)
    with pytest.raises(ValueError, match="Unknown scheduler 'heun'"):
        get_scheduler("heun")
    with pytest.raises(ValueError, match="beta_schedule='cosine'"):
        get_scheduler("ddim", beta_schedule="cosine")
    with pytest.raises(ValueError, match="no settings"):
        get_scheduler("pndm", use_karras_sigmas=True)
