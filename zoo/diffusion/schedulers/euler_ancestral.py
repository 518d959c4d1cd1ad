"""Euler ancestral (k-diffusion's `sample_euler_ancestral`), diffusers'
EulerAncestralDiscreteScheduler.

Each step goes from sigma down to sigma_down by Euler's method, then adds
fresh noise of standard deviation sigma_up, with sigma_down^2 + sigma_up^2 =
sigma_next^2:

    sigma_up   = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)
    sigma_down = sqrt(sigma_next^2 - sigma_up^2)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from keras import ops

from zoo.diffusion.schedulers.euler import EulerScheduler
from zoo.diffusion.schedulers.scheduler import SchedulerConfig


@dataclasses.dataclass(frozen=True)
class EulerAncestralConfig(SchedulerConfig):
    """Euler ancestral settings (defaults: diffusers' EulerAncestralDiscreteScheduler
    under SD v1.5's config; diffusers offers no Karras sigmas for it)."""

    timestep_spacing: str = "linspace"  # diffusers' default for this scheduler


class EulerAncestralScheduler(EulerScheduler):
    """Euler ancestral: stochastic, `step` needs unit Gaussian `noise` at every call.

    Table row (K=4): sigma, sigma_down, sqrt(sigma^2 + 1), sigma_up.

    Args:
        config: an `EulerAncestralConfig` (default: SD v1.5's settings) or a dict.
        **overrides: fields of `EulerAncestralConfig` to replace.

    Example:

    >>> from zoo.diffusion.schedulers import EulerAncestralScheduler
    >>> scheduler = EulerAncestralScheduler()
    >>> scheduler.stochastic, scheduler.schedule(10).table.shape
    (True, (10, 4))
    """

    config_cls = EulerAncestralConfig
    base_name = "euler_ancestral"

    @property
    def stochastic(self) -> bool:
        """Always True: every step adds fresh noise."""
        return True

    def _rows(self, sigma: np.ndarray, sigma_next: np.ndarray) -> np.ndarray:
        up = np.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2)
        down = np.sqrt(np.maximum(sigma_next ** 2 - up ** 2, 0.0))
        return np.stack([sigma, down, np.sqrt(sigma ** 2 + 1), up], axis=1)

    def step(self, model_output: Any, sample: Any, state: tuple, row: Any,
             noise: Any = None) -> tuple[Any, tuple]:
        """One ancestral step (see `Scheduler.step`); `noise` is required."""
        sigma, sigma_down, _, sigma_up = self._unpack(row, sample, 4)
        output = ops.cast(model_output, sample.dtype)
        derivative = (sample - self._x0(output, sample, sigma)) / sigma
        prev = sample + derivative * (sigma_down - sigma)
        return prev + self._noise(noise, sample) * sigma_up, state
