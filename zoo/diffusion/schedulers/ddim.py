"""DDIM and PNDM (PLMS): schedulers over the alpha products at integer timesteps."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from keras import ops

from zoo.diffusion.schedulers.scheduler import (
    Schedule,
    Scheduler,
    SchedulerConfig,
    alpha_noise_coefficients,
)


@dataclasses.dataclass(frozen=True)
class DDIMConfig(SchedulerConfig):
    """DDIM settings (SD v1.5's by default)."""

    eta: float = 0.0  # 0: deterministic DDIM; 1: DDPM-like noise at each step
    set_alpha_to_one: bool = False  # the step after t=0 uses alpha 1 (else alpha_bar_0)


class DDIMScheduler(Scheduler):
    """DDIM (Song et al.): deterministic for `eta=0`.

    Example:

    >>> from zoo.diffusion.schedulers import DDIMScheduler
    >>> DDIMScheduler().schedule(10).timesteps.tolist()[:3]
    [901.0, 801.0, 701.0]
    """

    config_cls = DDIMConfig
    name = "ddim"

    @property
    def stochastic(self) -> bool:
        return self.config.eta > 0

    def _final_alpha(self) -> float:
        return 1.0 if self.config.set_alpha_to_one else float(self.alphas_cumprod[0])

    def _plan(self, num_steps: int, start: int) -> Schedule:
        ts = self.spaced_timesteps(num_steps).astype("int64")[start:]
        ratio = self.config.num_train_timesteps // num_steps
        a = self.alphas_cumprod[ts].astype("float64")
        prev = ts - ratio
        a_prev = np.where(prev >= 0, self.alphas_cumprod[np.maximum(prev, 0)], self._final_alpha())
        variance = (1 - a_prev) / (1 - a) * (1 - a / a_prev)
        std = self.config.eta * np.sqrt(variance)
        # row: sqrt(a), sqrt(1 - a), sqrt(a_prev), direction coefficient, noise std
        table = np.stack([np.sqrt(a), np.sqrt(1 - a), np.sqrt(a_prev),
                          np.sqrt(np.maximum(1 - a_prev - std ** 2, 0.0)), std], axis=1)
        return Schedule(ts.astype("float32"), np.zeros(0, "float32"), table.astype("float32"),
                        1.0, alpha_noise_coefficients(self.alphas_cumprod, ts))

    def step(self, model_output: Any, sample: Any, state: tuple, row: Any,
             noise: Any = None) -> tuple[Any, tuple]:
        sqrt_a, sqrt_b, sqrt_a_prev, direction, std = self._coefficients(row, sample, 5)
        if self.config.prediction_type == "epsilon":
            x0 = (sample - sqrt_b * model_output) / sqrt_a
            eps = model_output
        else:  # v_prediction
            x0 = sqrt_a * sample - sqrt_b * model_output
            eps = sqrt_a * model_output + sqrt_b * sample
        prev = sqrt_a_prev * x0 + direction * eps
        if noise is not None:
            prev = prev + std * ops.cast(noise, prev.dtype)
        return prev, state


@dataclasses.dataclass(frozen=True)
class PNDMConfig(SchedulerConfig):
    """PNDM settings (SD v1.5's by default; only the PLMS part, skip_prk_steps)."""

    set_alpha_to_one: bool = False  # the step after t=0 uses alpha 1 (else alpha_bar_0)


class PNDMScheduler(Scheduler):
    """PNDM's linear multistep part (PLMS), SD v1's default scheduler.

    `num_steps` steps take `num_steps + 1` UNet calls: the second call
    re-evaluates the first step with the average of two model outputs (as
    diffusers' `skip_prk_steps=True` does). State: the last three model
    outputs and the sample kept for that second call.

    Example:

    >>> from zoo.diffusion.schedulers import PNDMScheduler
    >>> PNDMScheduler().schedule(10).timesteps.tolist()[:4]
    [901.0, 801.0, 801.0, 701.0]
    """

    config_cls = PNDMConfig
    name = "pndm"

    def _plan(self, num_steps: int, start: int) -> Schedule:
        base = self.spaced_timesteps(num_steps).astype("int64")[::-1]  # ascending
        calls = np.concatenate([base[:-1], base[-2:-1], base[-1:]])[::-1][start:]
        ratio = self.config.num_train_timesteps // num_steps
        final = 1.0 if self.config.set_alpha_to_one else float(self.alphas_cumprod[0])
        rows, history = [], 0
        for counter, t in enumerate(calls):
            t_prev = t - ratio
            # weights of (current output, last, second-to-last, third-to-last stored output)
            if counter == 1:
                t_prev, t = t, t + ratio
                weights, use_stored, push = (0.5, 0.5, 0.0, 0.0), 1.0, 0.0
            else:
                history = min(history + 1, 4)
                weights = {1: (1, 0, 0, 0), 2: (1.5, -0.5, 0, 0),
                           3: (23 / 12, -16 / 12, 5 / 12, 0)}.get(
                               history, (55 / 24, -59 / 24, 37 / 24, -9 / 24))
                use_stored, push = 0.0, 1.0
            a = float(self.alphas_cumprod[t])
            a_prev = float(self.alphas_cumprod[t_prev]) if t_prev >= 0 else final
            b, b_prev = 1 - a, 1 - a_prev
            denominator = a * b_prev ** 0.5 + (a * b * a_prev) ** 0.5
            rows.append([*weights, use_stored, push, float(counter == 0),
                         (a_prev / a) ** 0.5, (a_prev - a) / denominator, a ** 0.5, b ** 0.5])
        return Schedule(calls.astype("float32"), np.zeros(0, "float32"),
                        np.asarray(rows, "float32"), 1.0,
                        alpha_noise_coefficients(self.alphas_cumprod, calls))

    def initial_state(self, sample: Any) -> tuple:
        zeros = ops.zeros_like(sample)
        return (zeros, zeros, zeros, zeros)  # three earlier outputs, the kept sample

    def step(self, model_output: Any, sample: Any, state: tuple, row: Any,
             noise: Any = None) -> tuple[Any, tuple]:
        (w0, w1, w2, w3, use_stored, push, store, sample_coeff, output_coeff, sqrt_a,
         sqrt_b) = self._coefficients(row, sample, 11)
        h1, h2, h3, kept = state
        output = w0 * model_output + w1 * h1 + w2 * h2 + w3 * h3
        base = (1 - use_stored) * sample + use_stored * kept
        if self.config.prediction_type == "v_prediction":
            output = sqrt_a * output + sqrt_b * base
        prev = sample_coeff * base - output_coeff * output
        keep = 1 - push
        new_state = (push * model_output + keep * h1, push * h1 + keep * h2,
                     push * h2 + keep * h3, store * sample + (1 - store) * kept)
        return prev, new_state
