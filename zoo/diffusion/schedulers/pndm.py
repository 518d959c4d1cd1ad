"""PNDM's linear multistep part, PLMS (Liu et al., 2022): SD v1's scheduler.

diffusers runs it with `skip_prk_steps=True`: no Runge-Kutta warm-up, and
`num_steps` steps take `num_steps + 1` UNet calls. Call 0 steps from the
first timestep with its model output e0 and keeps the sample; call 1 sees
the *next* timestep's latents but redoes step 0 from the kept sample with
(e0 + e1) / 2; later calls combine the last outputs with the Adams-Bashforth
weights of order 2, 3, 4. The update from t to t' = t - num_train_timesteps
// num_steps, with a = alpha_bar[t], a' = alpha_bar[t']:

    x_t' = sqrt(a' / a) * x_t - (a' - a) * e / (a * sqrt(1 - a') + sqrt(a (1 - a) a'))
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from keras import ops

from zoo.diffusion.schedulers.ddim import final_alpha, integer_timesteps
from zoo.diffusion.schedulers.scheduler import (
    Schedule,
    Scheduler,
    SchedulerConfig,
    alpha_noise_coefficients,
)

# Adams-Bashforth weights of (this output, the last, second-to-last, third-to-last
# stored output), by how many outputs are stored (this one included).
_PLMS_WEIGHTS = {1: (1.0, 0.0, 0.0, 0.0), 2: (1.5, -0.5, 0.0, 0.0),
                 3: (23 / 12, -16 / 12, 5 / 12, 0.0), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@dataclasses.dataclass(frozen=True)
class PNDMConfig(SchedulerConfig):
    """PNDM settings (defaults: diffusers' PNDMScheduler under SD v1.5's config,
    i.e. skip_prk_steps=True, the only mode here)."""

    set_alpha_to_one: bool = False  # after t=0 step to alpha_bar = 1 (else to alpha_bar[0])


class PNDMScheduler(Scheduler):
    """PLMS, the pseudo linear multistep sampler (SD v1's default scheduler).

    State: the last three stored model outputs and the sample kept at call 0
    (for call 1). Table row (K=11): four output weights, "use the kept
    sample", "store this output", "keep this sample", the two update
    coefficients, sqrt(a) and sqrt(1 - a) (for v_prediction).

    Args:
        config: a `PNDMConfig` (default: SD v1.5's settings) or a dict.
        **overrides: fields of `PNDMConfig` to replace.

    Example:

    >>> from zoo.diffusion.schedulers import PNDMScheduler
    >>> PNDMScheduler().schedule(10).timesteps.tolist()[:4]  # 11 calls
    [901.0, 801.0, 801.0, 701.0]
    """

    config_cls = PNDMConfig
    base_name = "pndm"

    def call_timesteps(self, num_steps: int) -> np.ndarray:
        """(num_steps + 1,) int64: the timestep of every call, the second one repeated."""
        ascending = integer_timesteps(self, num_steps)[::-1]
        calls = np.concatenate([ascending[:-1], ascending[-2:-1], ascending[-1:]])
        return calls[::-1].copy()

    def _plan(self, num_steps: int, start: int) -> Schedule:
        calls = self.call_timesteps(num_steps)[start:]  # (n,)
        ratio = self.config.num_train_timesteps // num_steps
        last = final_alpha(self.alphas_cumprod, self.config.set_alpha_to_one)
        rows, stored = [], 0
        # `counter` restarts at the first call that runs, as in diffusers' img2img
        for counter, t in enumerate(calls.tolist()):
            if counter == 1:  # redo step 0 from the kept sample: from t + ratio to t
                t, t_prev = t + ratio, t
                weights, use_kept, store = (0.5, 0.5, 0.0, 0.0), 1.0, 0.0
            else:
                t_prev = t - ratio
                stored = min(stored + 1, 4)
                weights, use_kept, store = _PLMS_WEIGHTS[stored], 0.0, 1.0
            a = float(self.alphas_cumprod[t])
            a_prev = float(self.alphas_cumprod[t_prev]) if t_prev >= 0 else last
            denominator = a * (1 - a_prev) ** 0.5 + (a * (1 - a) * a_prev) ** 0.5
            rows.append([*weights, use_kept, store, float(counter == 0), (a_prev / a) ** 0.5,
                         (a_prev - a) / denominator, a ** 0.5, (1 - a) ** 0.5])
        return Schedule(timesteps=calls.astype("float32"), sigmas=np.zeros(0, "float32"),
                        table=np.asarray(rows, "float32").reshape(len(calls), 11),
                        init_noise_sigma=1.0,
                        noise_coefficients=alpha_noise_coefficients(self.alphas_cumprod, calls))

    def initial_state(self, sample: Any) -> tuple:
        """(e_1, e_2, e_3, kept sample): zeros shaped like `sample`."""
        zeros = ops.zeros_like(sample)
        return (zeros, zeros, zeros, zeros)

    def step(self, model_output: Any, sample: Any, state: tuple, row: Any,
             noise: Any = None) -> tuple[Any, tuple]:
        """One PLMS call (see `Scheduler.step`)."""
        (w0, w1, w2, w3, use_kept, store, keep_sample, sample_coeff, output_coeff, sqrt_a,
         sqrt_b) = self._unpack(row, sample, 11)
        output = ops.cast(model_output, sample.dtype)
        e1, e2, e3, kept = state
        combined = w0 * output + w1 * e1 + w2 * e2 + w3 * e3
        base = (1 - use_kept) * sample + use_kept * kept
        if self.config.prediction_type == "v_prediction":  # to epsilon (of the combination)
            combined = sqrt_a * combined + sqrt_b * base
        prev = sample_coeff * base - output_coeff * combined
        skip = 1 - store
        new_state = (store * output + skip * e1, store * e1 + skip * e2,
                     store * e2 + skip * e3, keep_sample * sample + (1 - keep_sample) * kept)
        return prev, new_state
