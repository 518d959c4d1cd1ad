"""Euler (Karras et al., 2022; k-diffusion's `sample_euler`), diffusers'
EulerDiscreteScheduler.

In sigma space the latents are x = x0 + sigma * eps; the UNet sees
x / sqrt(sigma^2 + 1). One Euler step of the probability-flow ODE:

    x0 = x - sigma * eps                                      (epsilon)
    x' = x + (x - x0) / sigma * (sigma_next - sigma)

`use_karras_sigmas` spaces the sigmas as Karras et al. do; the UNet then
sees fractional timesteps (each sigma mapped back by log-sigma interpolation).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from keras import ops

from zoo.diffusion.schedulers.scheduler import Schedule, Scheduler, SchedulerConfig
from zoo.diffusion.schedulers.sigmas import (
    interpolate_sigmas,
    karras_sigmas,
    sigma_to_t,
    training_sigmas,
)


@dataclasses.dataclass(frozen=True)
class EulerConfig(SchedulerConfig):
    """Euler settings (defaults: diffusers' EulerDiscreteScheduler under SD v1.5's config)."""

    timestep_spacing: str = "linspace"  # diffusers' default for this scheduler
    use_karras_sigmas: bool = False  # Karras sigmas (fractional timesteps)


class EulerScheduler(Scheduler):
    """Euler's method over sigmas; deterministic, no state.

    Table row (K=3): sigma, next sigma, sqrt(sigma^2 + 1) (the input scale).

    Args:
        config: an `EulerConfig` (default: SD v1.5's settings) or a dict.
        **overrides: fields of `EulerConfig` to replace (e.g.
            `use_karras_sigmas=True`).

    Example:

    >>> from zoo.diffusion.schedulers import EulerScheduler
    >>> plan = EulerScheduler().schedule(10)
    >>> round(plan.init_noise_sigma, 3), plan.timesteps[:2].tolist(), plan.sigmas.shape
    (14.615, [999.0, 888.0], (11,))
    >>> EulerScheduler(use_karras_sigmas=True).name
    'euler_karras'
    """

    config_cls = EulerConfig
    base_name = "euler"

    def timesteps_and_sigmas(self, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(timesteps (n,) float32, sigmas (n + 1,) float32 ending in 0), as
        diffusers' set_timesteps gives them."""
        train = training_sigmas(self.alphas_cumprod)
        timesteps = self.spaced_timesteps(num_steps).astype("float32")
        sigmas = interpolate_sigmas(timesteps, train)  # float64
        if getattr(self.config, "use_karras_sigmas", False):
            sigmas = karras_sigmas(float(sigmas[0]), float(sigmas[-1]), num_steps)
            timesteps = sigma_to_t(sigmas, train).astype("float32")
        return timesteps, np.concatenate([sigmas, [0.0]]).astype("float32")

    def _init_noise_sigma(self, sigmas: np.ndarray) -> float:
        top = float(sigmas.max())
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return top
        return float(np.sqrt(np.float64(top) ** 2 + 1))

    def _rows(self, sigma: np.ndarray, sigma_next: np.ndarray) -> np.ndarray:
        """(n, K) float64 table from this and the next sigma (float64)."""
        return np.stack([sigma, sigma_next, np.sqrt(sigma ** 2 + 1)], axis=1)

    def _plan(self, num_steps: int, start: int) -> Schedule:
        timesteps, sigmas = self.timesteps_and_sigmas(num_steps)
        s = sigmas.astype("float64")
        n = len(timesteps)
        table = self._rows(s[start:n], s[start + 1:n + 1])
        noise = np.stack([np.ones(n - start), s[start:n]], axis=1)  # add_noise: x + sigma * e
        return Schedule(timesteps=timesteps[start:], sigmas=sigmas, table=table.astype("float32"),
                        init_noise_sigma=self._init_noise_sigma(sigmas),
                        noise_coefficients=noise.astype("float32"))

    def scale_model_input(self, sample: Any, row: Any) -> Any:
        """`sample / sqrt(sigma^2 + 1)`: unit variance for the UNet."""
        return sample / ops.cast(row[2], sample.dtype)

    def _x0(self, model_output: Any, sample: Any, sigma: Any) -> Any:
        """The denoised estimate from the model output at `sigma`."""
        if self.config.prediction_type == "epsilon":
            return sample - sigma * model_output
        scale = sigma ** 2 + 1  # v_prediction
        return model_output * (-sigma / ops.sqrt(scale)) + sample / scale

    def step(self, model_output: Any, sample: Any, state: tuple, row: Any,
             noise: Any = None) -> tuple[Any, tuple]:
        """One Euler step (see `Scheduler.step`); the state stays ()."""
        sigma, sigma_next, _ = self._unpack(row, sample, 3)
        output = ops.cast(model_output, sample.dtype)
        derivative = (sample - self._x0(output, sample, sigma)) / sigma
        return sample + derivative * (sigma_next - sigma), state
