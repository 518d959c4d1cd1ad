"""Euler and Euler ancestral: k-diffusion samplers over sigmas (noise / signal)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from keras import ops

from zoo.diffusion.schedulers.scheduler import Schedule, Scheduler, SchedulerConfig

KARRAS_RHO = 7.0


def karras_sigmas(sigma_max: float, sigma_min: float, num_steps: int) -> np.ndarray:
    """Karras et al.'s sigmas: evenly spaced in sigma ** (1 / 7), from max to min."""
    ramp = np.linspace(0, 1, num_steps)
    lo, hi = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
    return (hi + ramp * (lo - hi)) ** KARRAS_RHO


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional timesteps of `sigmas`, interpolating log-sigma linearly
    between the two neighbouring training timesteps."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma[None, :] - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=len(log_sigmas) - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return (1 - w) * low + w * (low + 1)


@dataclasses.dataclass(frozen=True)
class EulerConfig(SchedulerConfig):
    """Euler settings (diffusers' defaults under SD v1.5's config)."""

    timestep_spacing: str = "linspace"  # diffusers' default for this scheduler
    use_karras_sigmas: bool = False  # Karras sigmas (fractional timesteps)


class EulerScheduler(Scheduler):
    """Euler's method on the probability-flow ODE (k-diffusion's `sample_euler`).

    Example:

    >>> from zoo.diffusion.schedulers import EulerScheduler
    >>> round(EulerScheduler().schedule(10).init_noise_sigma, 3)
    14.615
    """

    config_cls = EulerConfig
    name = "euler"

    def training_sigmas(self) -> np.ndarray:
        a = self.alphas_cumprod
        return ((1 - a) / a) ** 0.5  # float32, as diffusers computes them

    def full_sigmas(self, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(timesteps (n,), sigmas (n + 1,) ending with 0) as diffusers sets them."""
        train = self.training_sigmas()
        timesteps = self.spaced_timesteps(num_steps).astype("float32")
        sigmas = np.interp(timesteps, np.arange(len(train)), train)
        if getattr(self.config, "use_karras_sigmas", False):
            sigmas = karras_sigmas(float(sigmas[0]), float(sigmas[-1]), num_steps)
            timesteps = sigma_to_t(sigmas, np.log(train))
        return timesteps.astype("float32"), np.concatenate([sigmas, [0.0]]).astype("float32")

    def _init_sigma(self, sigmas: np.ndarray) -> float:
        top = float(sigmas.max())
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return top
        return float((top ** 2 + 1) ** 0.5)

    def _rows(self, sigma: np.ndarray, sigma_next: np.ndarray) -> np.ndarray:
        return np.stack([sigma, sigma_next, 1 / np.sqrt(sigma ** 2 + 1)], axis=1)

    def _plan(self, num_steps: int, start: int) -> Schedule:
        timesteps, sigmas = self.full_sigmas(num_steps)
        s = sigmas.astype("float64")
        table = self._rows(s[start:-1], s[start + 1:])
        noise = np.stack([np.ones(num_steps - start), s[start:-1]], axis=1)
        return Schedule(timesteps[start:], sigmas, table.astype("float32"),
                        self._init_sigma(sigmas), noise.astype("float32"))

    def scale_model_input(self, sample: Any, row: Any) -> Any:
        return sample * ops.cast(row[2], sample.dtype)

    def _denoised(self, model_output: Any, sample: Any, sigma: Any) -> Any:
        if self.config.prediction_type == "epsilon":
            return sample - sigma * model_output
        return model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + sample / (sigma ** 2 + 1)

    def step(self, model_output: Any, sample: Any, state: tuple, row: Any,
             noise: Any = None) -> tuple[Any, tuple]:
        sigma, sigma_next, _ = self._coefficients(row, sample, 3)
        derivative = (sample - self._denoised(model_output, sample, sigma)) / sigma
        return sample + derivative * (sigma_next - sigma), state


@dataclasses.dataclass(frozen=True)
class EulerAncestralConfig(SchedulerConfig):
    """Euler ancestral settings (diffusers' defaults under SD v1.5's config)."""

    timestep_spacing: str = "linspace"  # diffusers' default for this scheduler


class EulerAncestralScheduler(EulerScheduler):
    """Euler steps down to a lower sigma, then fresh noise back up (stochastic).

    Example:

    >>> from zoo.diffusion.schedulers import EulerAncestralScheduler
    >>> EulerAncestralScheduler().stochastic
    True
    """

    config_cls = EulerAncestralConfig
    name = "euler_ancestral"

    @property
    def stochastic(self) -> bool:
        return True

    def _rows(self, sigma: np.ndarray, sigma_next: np.ndarray) -> np.ndarray:
        up = np.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2)
        down = np.sqrt(sigma_next ** 2 - up ** 2)
        return np.stack([sigma, down, 1 / np.sqrt(sigma ** 2 + 1), up], axis=1)

    def step(self, model_output: Any, sample: Any, state: tuple, row: Any,
             noise: Any = None) -> tuple[Any, tuple]:
        sigma, sigma_down, _, sigma_up = self._coefficients(row, sample, 4)
        derivative = (sample - self._denoised(model_output, sample, sigma)) / sigma
        prev = sample + derivative * (sigma_down - sigma)
        if noise is not None:
            prev = prev + ops.cast(noise, prev.dtype) * sigma_up
        return prev, state
