"""DPM-Solver++ 2M (Lu et al., 2022), diffusers' DPMSolverMultistepScheduler
with algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
lower_order_final=True and final_sigmas_type="zero".

With alpha = 1 / sqrt(sigma^2 + 1), s = sigma * alpha and lambda = log(alpha / s),
each call turns the model output into a data estimate m = (x - s * eps) / alpha
and steps from sigma to the next sigma (h = lambda_next - lambda):

    first order:  x' = (s' / s) x - alpha' (e^-h - 1) m
    second order: x' = (s' / s) x - alpha' (e^-h - 1) (m + (m - m_prev) / (2 r)),
                  r = (lambda - lambda_prev) / h

The first call of a run and the last call (its next sigma is 0: the step
lands on the estimate) are first order.
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
class DPMSolverConfig(SchedulerConfig):
    """DPM-Solver++ 2M settings (defaults: diffusers' DPMSolverMultistepScheduler
    under SD v1.5's config)."""

    timestep_spacing: str = "linspace"  # diffusers' default for this scheduler
    use_karras_sigmas: bool = False  # Karras sigmas (their timesteps rounded to integers)


def alpha_sigma(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha_t, sigma_t) of the variance-preserving process at k-diffusion `sigma`."""
    alpha = 1.0 / np.sqrt(sigma ** 2 + 1.0)
    return alpha, sigma * alpha


class DPMSolverMultistepScheduler(Scheduler):
    """DPM-Solver++ 2M; deterministic. State: the previous data estimate.

    Table row (K=5): the data estimate's coefficients on the sample and the
    model output, then the update's coefficients on the sample, this
    estimate and the previous one.

    Args:
        config: a `DPMSolverConfig` (default: SD v1.5's settings) or a dict.
        **overrides: fields of `DPMSolverConfig` to replace (e.g.
            `use_karras_sigmas=True`).

    Example:

    >>> from zoo.diffusion.schedulers import DPMSolverMultistepScheduler
    >>> DPMSolverMultistepScheduler().schedule(5).timesteps.tolist()
    [999.0, 799.0, 599.0, 400.0, 200.0]
    """

    config_cls = DPMSolverConfig
    base_name = "dpmpp_2m"

    def timesteps_and_sigmas(self, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(integer timesteps (n,) int64, sigmas (n + 1,) float32 ending in 0), as
        diffusers' set_timesteps gives them."""
        c, n = self.config, num_steps
        train_steps = int(c.num_train_timesteps)
        if c.timestep_spacing == "linspace":  # n + 1 points, the last (0) dropped
            ts = np.linspace(0, train_steps - 1, n + 1).round()[::-1][:-1]
        elif c.timestep_spacing == "leading":
            ratio = train_steps // (n + 1)
            ts = (np.arange(0, n + 1) * ratio).round()[::-1][:-1] + c.steps_offset
        else:  # trailing
            ts = np.arange(train_steps, 0, -train_steps / n).round() - 1
        ts = ts.astype("int64")
        train = training_sigmas(self.alphas_cumprod)
        if c.use_karras_sigmas:  # over the whole training range, not the spaced timesteps
            sigmas = karras_sigmas(float(train[-1]), float(train[0]), n)
            ts = sigma_to_t(sigmas, train).round().astype("int64")
        else:
            sigmas = interpolate_sigmas(ts, train)
        return ts, np.concatenate([sigmas, [0.0]]).astype("float32")

    def _plan(self, num_steps: int, start: int) -> Schedule:
        ts, sigmas = self.timesteps_and_sigmas(num_steps)
        n = len(ts)
        s = sigmas.astype("float64")  # (n + 1,)
        alpha, sig = alpha_sigma(s)
        with np.errstate(divide="ignore"):
            lam = np.log(alpha) - np.log(sig)  # (n + 1,), +inf at sigma = 0
        if self.config.prediction_type == "epsilon":
            x0 = np.stack([1 / alpha, -sig / alpha], axis=1)  # m = (x - s eps) / alpha
        else:
            x0 = np.stack([alpha, -sig], axis=1)  # v_prediction: m = alpha x - s v
        rows = []
        for i in range(start, n):
            if s[i + 1] == 0:  # h = inf: the step lands on this estimate
                update = [0.0, 1.0, 0.0]
            else:
                h = lam[i + 1] - lam[i]
                b = -alpha[i + 1] * np.expm1(-h)
                update = [sig[i + 1] / sig[i], b, 0.0]
                if i > start and i < n - 1:  # second order once a previous estimate exists
                    r = (lam[i] - lam[i - 1]) / h
                    update = [update[0], b + 0.5 * b / r, -0.5 * b / r]
            rows.append([*x0[i], *update])
        return Schedule(timesteps=ts[start:].astype("float32"), sigmas=sigmas,
                        table=np.asarray(rows, "float64").reshape(n - start, 5).astype("float32"),
                        init_noise_sigma=1.0,
                        noise_coefficients=np.stack([alpha[start:n], sig[start:n]],
                                                    axis=1).astype("float32"))

    def initial_state(self, sample: Any) -> tuple:
        """(previous data estimate,): zeros shaped like `sample`."""
        return (ops.zeros_like(sample),)

    def step(self, model_output: Any, sample: Any, state: tuple, row: Any,
             noise: Any = None) -> tuple[Any, tuple]:
        """One DPM-Solver++ 2M call (see `Scheduler.step`)."""
        on_sample, on_output, a, b, c = self._unpack(row, sample, 5)
        estimate = on_sample * sample + on_output * ops.cast(model_output, sample.dtype)
        (previous,) = state
        return a * sample + b * estimate + c * previous, (estimate,)
