"""DDIM (Song et al., 2020): denoising diffusion implicit models.

Each step estimates the clean sample x0 from the model output, then moves
to the previous timestep along the predicted noise direction:

    x0   = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)           (epsilon)
    x_t' = sqrt(a_t') * x0 + sqrt(1 - a_t' - std^2) * eps + std * noise

with a_t = alpha_bar at t, t' = t - num_train_timesteps // num_steps (for
every spacing, as diffusers does) and std = eta * sqrt(variance(t, t')).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from keras import ops

from zoo.core.errors import InputError
from zoo.diffusion.schedulers.scheduler import (
    Schedule,
    Scheduler,
    SchedulerConfig,
    alpha_noise_coefficients,
)


@dataclasses.dataclass(frozen=True)
class DDIMConfig(SchedulerConfig):
    """DDIM settings (defaults: diffusers' DDIMScheduler under SD v1.5's config)."""

    eta: float = 0.0  # weight of fresh noise per step: 0 deterministic DDIM, 1 DDPM-like
    set_alpha_to_one: bool = False  # after t=0 step to alpha_bar = 1 (else to alpha_bar[0])


def final_alpha(alphas_cumprod: np.ndarray, set_alpha_to_one: bool) -> float:
    """alpha_bar of the step past timestep 0."""
    return 1.0 if set_alpha_to_one else float(alphas_cumprod[0])


def integer_timesteps(scheduler: Scheduler, num_steps: int) -> np.ndarray:
    """(num_steps,) int64, descending: `spaced_timesteps`, rounded (DDIM, PNDM)."""
    return np.round(scheduler.spaced_timesteps(num_steps)).astype("int64")


class DDIMScheduler(Scheduler):
    """DDIM; deterministic for `eta=0`, stochastic (consumes noise) for `eta>0`.

    Table row (K=5): sqrt(a_t), sqrt(1 - a_t), sqrt(a_t'), the noise
    direction coefficient sqrt(1 - a_t' - std^2), and std.

    Args:
        config: a `DDIMConfig` (default: SD v1.5's settings) or a dict.
        **overrides: fields of `DDIMConfig` to replace (e.g. `eta=1.0`).

    Example:

    >>> from zoo.diffusion.schedulers import DDIMScheduler
    >>> plan = DDIMScheduler().schedule(10)
    >>> plan.timesteps.tolist()[:3], plan.table.shape
    ([901.0, 801.0, 701.0], (10, 5))
    >>> DDIMScheduler(eta=1.0).stochastic
    True
    """

    config_cls = DDIMConfig
    base_name = "ddim"

    def _check_config(self) -> None:
        super()._check_config()
        if not 0.0 <= float(self.config.eta) <= 1.0:
            raise InputError(f"eta={self.config.eta!r} must be in [0, 1] (0: deterministic "
                             "DDIM, 1: DDPM-like noise). Fix: pass e.g. eta=0.0.")

    @property
    def stochastic(self) -> bool:
        """True when `eta > 0`."""
        return float(self.config.eta) > 0.0

    def _plan(self, num_steps: int, start: int) -> Schedule:
        ts = integer_timesteps(self, num_steps)[start:]  # (n,)
        prev = ts - self.config.num_train_timesteps // num_steps
        a = self.alphas_cumprod[ts].astype("float64")
        a_prev = np.where(prev >= 0, self.alphas_cumprod[np.maximum(prev, 0)],
                          final_alpha(self.alphas_cumprod, self.config.set_alpha_to_one))
        variance = (1 - a_prev) / (1 - a) * (1 - a / a_prev)
        std = float(self.config.eta) * np.sqrt(variance)
        direction = np.sqrt(np.maximum(1 - a_prev - std ** 2, 0.0))
        table = np.stack([np.sqrt(a), np.sqrt(1 - a), np.sqrt(a_prev), direction, std], axis=1)
        return Schedule(timesteps=ts.astype("float32"), sigmas=np.zeros(0, "float32"),
                        table=table.astype("float32"), init_noise_sigma=1.0,
                        noise_coefficients=alpha_noise_coefficients(self.alphas_cumprod, ts))

    def step(self, model_output: Any, sample: Any, state: tuple, row: Any,
             noise: Any = None) -> tuple[Any, tuple]:
        """One DDIM step (see `Scheduler.step`); the state stays ()."""
        sqrt_a, sqrt_b, sqrt_a_prev, direction, std = self._unpack(row, sample, 5)
        output = ops.cast(model_output, sample.dtype)
        if self.config.prediction_type == "epsilon":
            x0 = (sample - sqrt_b * output) / sqrt_a
            eps = output
        else:  # v_prediction: v = sqrt(a) * eps - sqrt(1 - a) * x0
            x0 = sqrt_a * sample - sqrt_b * output
            eps = sqrt_a * output + sqrt_b * sample
        prev = sqrt_a_prev * x0 + direction * eps
        if self.stochastic:
            prev = prev + std * self._noise(noise, sample)
        return prev, state
