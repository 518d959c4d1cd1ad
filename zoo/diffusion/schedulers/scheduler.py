"""The scheduler base: noise schedules as host-side tables, steps in keras.ops.

A denoising loop runs as one compiled step function per call of the UNet, so
nothing in a step may branch on the step index. Each scheduler therefore
computes, on the host (numpy, float64 over diffusers' float32 noise
schedule), one row of coefficients per UNet call (`Schedule.table`); the
compiled step takes its row with `keras.ops.take(table, i, axis=0)` and
does the same arithmetic for every call. Multistep state (earlier model
outputs) is an explicit tuple of tensors shaped like the latents.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, ClassVar

import numpy as np
from keras import ops

BETA_SCHEDULES = ("linear", "scaled_linear")
PREDICTION_TYPES = ("epsilon", "v_prediction")
SPACINGS = ("leading", "linspace", "trailing")


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """Settings every scheduler shares (defaults: SD v1.5's scheduler_config.json)."""

    num_train_timesteps: int = 1000  # length of the training noise schedule
    beta_start: float = 0.00085  # first beta of the schedule
    beta_end: float = 0.012  # last beta
    beta_schedule: str = "scaled_linear"  # "linear" or "scaled_linear" (linear in sqrt(beta))
    prediction_type: str = "epsilon"  # what the UNet predicts: "epsilon" or "v_prediction"
    timestep_spacing: str = "leading"  # "leading", "linspace" or "trailing"
    steps_offset: int = 1  # added to "leading" timesteps


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The host-side plan of one denoising run (numpy arrays, one row per UNet call)."""

    timesteps: np.ndarray  # (n,) float32: the timestep the UNet sees at each call
    sigmas: np.ndarray  # the scheduler's sigmas as diffusers has them (empty: none)
    table: np.ndarray  # (n, K) float32: the coefficients each call's step reads
    init_noise_sigma: float  # text-to-image latents = noise * init_noise_sigma
    noise_coefficients: np.ndarray  # (n, 2): add_noise(x, noise, t_i) = a_i x + b_i noise


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """float32 `torch.linspace`: a float32 step, each value rounded once from
    the start (first half) or back from the end (second half)."""
    a, b = np.float32(start), np.float32(end)
    step = np.float64((b - a) / np.float32(steps - 1))
    i = np.arange(steps)
    return np.where(i < steps // 2, np.float64(a) + step * i,
                    np.float64(b) - step * (steps - 1 - i)).astype("float32")


def check_steps(num_steps: Any, strength: Any) -> tuple[int, float]:
    """Validate `num_steps` (a positive int) and `strength` (in (0, 1])."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or (
            num_steps < 1):
        raise ValueError(f"num_steps={num_steps!r} is not a positive int: diffusion needs at "
                         "least one denoising step. Fix: pass e.g. num_steps=50.")
    if not isinstance(strength, numbers.Real) or not 0.0 < float(strength) <= 1.0:
        raise ValueError(f"strength={strength!r} must be in (0, 1] (the fraction of the "
                         "schedule to run). Fix: pass e.g. strength=0.8.")
    return int(num_steps), float(strength)


def start_index(num_steps: int, strength: float) -> int:
    """First call run for `strength` (diffusers' img2img `get_timesteps`)."""
    init = min(int(num_steps * strength), num_steps)
    return max(num_steps - init, 0)


class Scheduler:
    """Base class: subclasses define `config_cls`, `name` and `_plan`, `step`.

    Args:
        config: a config of the scheduler's dataclass (default: SD v1.5's settings).
        **overrides: fields to replace in the config.
    """

    config_cls: ClassVar[type] = SchedulerConfig
    name: ClassVar[str] = ""

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        config = self.config_cls() if config is None else config
        if not isinstance(config, self.config_cls):
            raise TypeError(f"{type(self).__name__} needs a {self.config_cls.__name__}, got "
                            f"{type(config).__name__}.")
        fields = {f.name for f in dataclasses.fields(config)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"{type(self).__name__} has no settings {unknown}; it has "
                             f"{sorted(fields)}.")
        self.config = dataclasses.replace(config, **overrides)
        for value, allowed, what in (
                (self.config.beta_schedule, BETA_SCHEDULES, "beta_schedule"),
                (self.config.prediction_type, PREDICTION_TYPES, "prediction_type"),
                (self.config.timestep_spacing, SPACINGS, "timestep_spacing")):
            if value not in allowed:
                raise ValueError(f"{what}={value!r} is not supported; choose from {allowed}.")
        self.alphas_cumprod = self._alphas_cumprod()

    @property
    def stochastic(self) -> bool:
        """Whether `step` consumes noise."""
        return False

    def _alphas_cumprod(self) -> np.ndarray:
        """The training schedule's cumulative alpha products, bit for bit as
        diffusers computes them (torch float32 linspace, float64 products)."""
        c = self.config
        if c.beta_schedule == "linear":
            betas = torch_linspace(c.beta_start, c.beta_end, c.num_train_timesteps)
        else:
            betas = torch_linspace(c.beta_start ** 0.5, c.beta_end ** 0.5,
                                   c.num_train_timesteps) ** 2
        return np.cumprod((np.float32(1.0) - betas).astype("float64")).astype("float32")

    def spaced_timesteps(self, num_steps: int) -> np.ndarray:
        """Descending timesteps (float64) for `num_steps` per `timestep_spacing`."""
        c, n = self.config, num_steps
        train = c.num_train_timesteps
        if c.timestep_spacing == "linspace":
            return np.linspace(0, train - 1, n)[::-1].copy()
        if c.timestep_spacing == "leading":
            return (np.arange(0, n) * (train // n)).round()[::-1] + c.steps_offset
        return np.round(np.arange(train, 0, -train / n)) - 1.0

    # -- the interface the task uses --------------------------------------------
    def schedule(self, num_steps: int, strength: float = 1.0) -> Schedule:
        """The plan of a run of `num_steps` (the last `strength` of it).

        Raises:
            ValueError: num_steps is not a positive int, or strength not in (0, 1].
        """
        num_steps, strength = check_steps(num_steps, strength)
        return self._plan(num_steps, start_index(num_steps, strength))

    def _plan(self, num_steps: int, start: int) -> Schedule:
        raise NotImplementedError

    def scale_model_input(self, sample: Any, row: Any) -> Any:
        """The UNet's input at this call (the identity unless overridden)."""
        return sample

    def initial_state(self, sample: Any) -> tuple:
        """The multistep state before the first call (no state by default)."""
        return ()

    def step(self, model_output: Any, sample: Any, state: tuple, row: Any,
             noise: Any = None) -> tuple[Any, tuple]:
        """(previous sample, new state) after one UNet call."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------
    @staticmethod
    def _coefficients(row: Any, sample: Any, count: int) -> list:
        row = ops.cast(row, sample.dtype)
        return [row[k] for k in range(count)]

    def get_config(self) -> dict:
        """The scheduler's settings as a dict (with its registry name)."""
        return {"name": self.name, **dataclasses.asdict(self.config)}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self.config).items())
        return f"{type(self).__name__}({fields})"


def alpha_noise_coefficients(alphas_cumprod: np.ndarray, timesteps: np.ndarray) -> np.ndarray:
    """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) per timestep: DDPM's add_noise."""
    a = alphas_cumprod[np.asarray(timesteps, "int64")].astype("float64")
    return np.stack([np.sqrt(a), np.sqrt(1.0 - a)], axis=1).astype("float32")
