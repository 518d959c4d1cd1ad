"""DPM-Solver++ (2M): a second-order multistep solver in data prediction."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from keras import ops

from zoo.diffusion.schedulers.euler import karras_sigmas, sigma_to_t
from zoo.diffusion.schedulers.scheduler import Schedule, Scheduler, SchedulerConfig


@dataclasses.dataclass(frozen=True)
class DPMSolverConfig(SchedulerConfig):
    """DPM-Solver++ 2M settings (diffusers' defaults under SD v1.5's config:
    algorithm dpmsolver++, order 2, midpoint, final sigma 0)."""

    timestep_spacing: str = "linspace"  # diffusers' default for this scheduler
    use_karras_sigmas: bool = False  # Karras sigmas (timesteps rounded)


class DPMSolverMultistepScheduler(Scheduler):
    """DPM-Solver++ (2M): each step combines this and the previous step's
    denoised estimates. State: the previous estimate.

    Example:

    >>> from zoo.diffusion.schedulers import DPMSolverMultistepScheduler
    >>> DPMSolverMultistepScheduler().schedule(5).timesteps.tolist()
    [999.0, 799.0, 599.0, 400.0, 200.0]
    """

    config_cls = DPMSolverConfig
    name = "dpmpp_2m"

    def full_sigmas(self, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(integer timesteps (n,), sigmas (n + 1,) ending with 0) as diffusers sets them."""
        c = self.config
        a = self.alphas_cumprod
        train = ((1 - a) / a) ** 0.5
        if c.timestep_spacing == "linspace":
            ts = np.linspace(0, c.num_train_timesteps - 1, num_steps + 1).round()[::-1][:-1]
        elif c.timestep_spacing == "leading":
            ratio = c.num_train_timesteps // (num_steps + 1)
            ts = (np.arange(0, num_steps + 1) * ratio).round()[::-1][:-1] + c.steps_offset
        else:
            ts = np.arange(c.num_train_timesteps, 0, -c.num_train_timesteps / num_steps
                           ).round() - 1
        ts = ts.astype("int64")
        if c.use_karras_sigmas:
            flipped = train[::-1]
            sigmas = karras_sigmas(float(flipped[0]), float(flipped[-1]), num_steps)
            ts = sigma_to_t(sigmas, np.log(train)).round().astype("int64")
        else:
            sigmas = np.interp(ts, np.arange(len(train)), train)
        return ts, np.concatenate([sigmas, [0.0]]).astype("float32")

    @staticmethod
    def _alpha_sigma(sigma: float) -> tuple[float, float]:
        alpha = 1 / (sigma ** 2 + 1) ** 0.5
        return alpha, sigma * alpha

    def _plan(self, num_steps: int, start: int) -> Schedule:
        ts, sigmas = self.full_sigmas(num_steps)
        s = sigmas.astype("float64")
        n = len(ts)
        lam = lambda sig: np.log(self._alpha_sigma(sig)[0]) - np.log(  # noqa: E731
            self._alpha_sigma(sig)[1])
        rows, done = [], 0
        for g in range(start, n):
            alpha_s, sigma_s = self._alpha_sigma(s[g])
            if self.config.prediction_type == "epsilon":
                x0 = (1 / alpha_s, -sigma_s / alpha_s)
            else:
                x0 = (alpha_s, -sigma_s)
            final = g == n - 1  # with a final sigma of 0 the last step is first order
            if s[g + 1] == 0:
                a, b, c = 0.0, 1.0, 0.0  # sigma_t = 0: the step lands on the estimate
            else:
                alpha_t, sigma_t = self._alpha_sigma(s[g + 1])
                h = lam(s[g + 1]) - lam(s[g])
                a, b, c = sigma_t / sigma_s, -alpha_t * (np.exp(-h) - 1.0), 0.0
                if done >= 1 and not final:  # second order once an estimate exists
                    r0 = (lam(s[g]) - lam(s[g - 1])) / h
                    b, c = b + 0.5 * b / r0, -0.5 * b / r0
            rows.append([*x0, a, b, c])
            done += 1
        alphas_sigmas = np.array([self._alpha_sigma(v) for v in s[start:n]])
        return Schedule(ts[start:].astype("float32"), sigmas, np.asarray(rows, "float32"), 1.0,
                        alphas_sigmas.astype("float32"))

    def initial_state(self, sample: Any) -> tuple:
        return (ops.zeros_like(sample),)

    def step(self, model_output: Any, sample: Any, state: tuple, row: Any,
             noise: Any = None) -> tuple[Any, tuple]:
        x0_sample, x0_output, a, b, c = self._coefficients(row, sample, 5)
        estimate = x0_sample * sample + x0_output * model_output
        (previous,) = state
        return a * sample + b * estimate + c * previous, (estimate,)
