"""The scheduler base: a noise schedule planned on the host, steps in keras.ops.

A denoising loop runs as one compiled function per UNet call, so a step may
not branch on the step index. Each scheduler therefore plans the whole run on
the host (numpy, float64 math over the float32 training schedule diffusers
uses) as one table row per UNet call (`Schedule.table`). The compiled step
reads its row with `keras.ops.take(table, i, axis=0)` and does the same
arithmetic at every call; what changes from call to call (history weights,
"first step" flags) is a number in the row, and multistep history is an
explicit tuple of tensors shaped like the latents.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, ClassVar

import numpy as np
from keras import ops

from zoo.core.errors import InputError

BETA_SCHEDULES = ("linear", "scaled_linear")
PREDICTION_TYPES = ("epsilon", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """Settings every scheduler shares; the defaults are SD v1.5's."""

    num_train_timesteps: int = 1000  # length of the training noise schedule
    beta_start: float = 0.00085  # first beta of the training schedule
    beta_end: float = 0.012  # last beta of the training schedule
    beta_schedule: str = "scaled_linear"  # "linear", or "scaled_linear" (linear in sqrt(beta))
    prediction_type: str = "epsilon"  # what the UNet predicts: "epsilon" or "v_prediction"
    timestep_spacing: str = "leading"  # how timesteps are spread: "leading", "linspace", "trailing"
    steps_offset: int = 1  # added to every "leading" timestep


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """The plan of one denoising run: numpy arrays, one row per UNet call.

    Example:

    >>> from zoo.diffusion.schedulers import get_scheduler
    >>> plan = get_scheduler("euler").schedule(10, strength=0.5)
    >>> plan.timesteps.shape, plan.sigmas.shape, plan.noise_coefficients.shape
    ((5,), (11,), (5, 2))
    """

    timesteps: np.ndarray  # (n,) float32: the timestep the UNet sees at each call
    sigmas: np.ndarray  # all of diffusers' sigmas after set_timesteps, not sliced (empty: none)
    table: np.ndarray  # (n, K) float32: what scale_model_input and step read at each call
    init_noise_sigma: float  # text-to-image initial latents = unit noise * init_noise_sigma
    noise_coefficients: np.ndarray  # (n, 2) float32: add_noise(x, e, timesteps[i]) = a*x + b*e


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """`torch.linspace(start, end, steps)` in float32, value for value.

    torch steps by a float32 increment, from `start` for the first half of
    the points and back from `end` for the second half.
    """
    a, b = np.float32(start), np.float32(end)
    increment = np.float64((b - a) / np.float32(steps - 1)) if steps > 1 else 0.0
    i = np.arange(steps)
    values = np.where(i < steps // 2, np.float64(a) + increment * i,
                      np.float64(b) - increment * (steps - 1 - i))
    return values.astype("float32")


def check_steps(num_steps: Any, strength: Any, num_train_timesteps: int) -> tuple[int, float]:
    """`(num_steps, strength)` once checked: a positive int and a float in (0, 1]."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or (
            num_steps < 1):
        raise InputError(f"num_steps={num_steps!r} is not a positive int: a run needs at least "
                         "one denoising step. Fix: pass e.g. num_steps=50.")
    if num_steps > num_train_timesteps:
        raise InputError(f"num_steps={num_steps} is more than the {num_train_timesteps} training "
                         f"timesteps. Fix: pass num_steps <= {num_train_timesteps}.")
    if (isinstance(strength, bool) or not isinstance(strength, numbers.Real)
            or not 0.0 < float(strength) <= 1.0):
        raise InputError(f"strength={strength!r} is not in (0, 1] (the fraction of the schedule "
                         "that runs). Fix: pass e.g. strength=0.8, or 1.0 for a full run.")
    return int(num_steps), float(strength)


def first_call(num_steps: int, strength: float) -> int:
    """Index of the first scheduled call that runs (diffusers' img2img `get_timesteps`)."""
    init_timestep = min(int(num_steps * strength), num_steps)
    return max(num_steps - init_timestep, 0)


def alpha_noise_coefficients(alphas_cumprod: np.ndarray, timesteps: np.ndarray) -> np.ndarray:
    """(n, 2): (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) per timestep (DDPM's add_noise)."""
    a = alphas_cumprod[np.asarray(timesteps, "int64")].astype("float64")
    return np.stack([np.sqrt(a), np.sqrt(1.0 - a)], axis=1).astype("float32")


class Scheduler:
    """Base class of the schedulers.

    Subclasses set `config_cls` and `base_name`, and implement `_plan`
    (the host-side table) and `step` (keras.ops, no branching on values).

    Args:
        config: an instance of the scheduler's config dataclass (default:
            SD v1.5's settings), or a dict of its fields (as `get_config()`
            returns; a "name" key is ignored).
        **overrides: config fields to replace.

    Example:

    >>> from zoo.diffusion.schedulers import DDIMScheduler
    >>> scheduler = DDIMScheduler(timestep_spacing="trailing")
    >>> scheduler.schedule(4).timesteps.tolist()
    [999.0, 749.0, 499.0, 249.0]
    """

    config_cls: ClassVar[type] = SchedulerConfig
    base_name: ClassVar[str] = ""

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        if isinstance(config, dict):
            config = self.config_cls(**{k: v for k, v in config.items() if k != "name"})
        config = self.config_cls() if config is None else config
        if not isinstance(config, self.config_cls):
            raise InputError(f"{type(self).__name__} takes a {self.config_cls.__name__} or a dict,"
                             f" got {type(config).__name__}. Fix: pass e.g. "
                             f"{type(self).__name__}({self.config_cls.__name__}()).")
        fields = sorted(f.name for f in dataclasses.fields(config))
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise InputError(f"{type(self).__name__} has no setting(s) {unknown}. Fix: use its "
                             f"settings, {fields}.")
        self.config = dataclasses.replace(config, **overrides)
        self._check_config()
        self.alphas_cumprod = self._alphas_cumprod()  # (num_train_timesteps,) float32

    def _check_config(self) -> None:
        c = self.config
        for option, value, supported in (("beta_schedule", c.beta_schedule, BETA_SCHEDULES),
                                         ("prediction_type", c.prediction_type, PREDICTION_TYPES),
                                         ("timestep_spacing", c.timestep_spacing,
                                          TIMESTEP_SPACINGS)):
            if value not in supported:
                raise InputError(f"{option}={value!r} is not supported by "
                                 f"{type(self).__name__}. Fix: use one of {list(supported)}.")
        if int(c.num_train_timesteps) < 2:
            raise InputError(f"num_train_timesteps={c.num_train_timesteps!r} is below 2. Fix: "
                             "pass the model's own, e.g. num_train_timesteps=1000.")

    @property
    def name(self) -> str:
        """The registry name (`get_scheduler(name)` builds this kind of scheduler)."""
        karras = getattr(self.config, "use_karras_sigmas", False)
        return self.base_name + ("_karras" if karras else "")

    @property
    def stochastic(self) -> bool:
        """True when `step` consumes noise."""
        return False

    def _alphas_cumprod(self) -> np.ndarray:
        """Cumulative products of (1 - beta), as diffusers builds them: a float32
        torch linspace, each product accumulated in float64, stored float32."""
        c = self.config
        if c.beta_schedule == "linear":
            betas = torch_linspace(c.beta_start, c.beta_end, c.num_train_timesteps)
        else:
            betas = torch_linspace(c.beta_start ** 0.5, c.beta_end ** 0.5,
                                   c.num_train_timesteps) ** 2
        alphas = (np.float32(1.0) - betas).astype("float64")
        return np.cumprod(alphas).astype("float32")

    def spaced_timesteps(self, num_steps: int) -> np.ndarray:
        """(num_steps,) float64, descending: the timesteps `timestep_spacing` picks
        (not rounded for "linspace"; DDIM and PNDM round them)."""
        c, n = self.config, num_steps
        train = int(c.num_train_timesteps)
        if c.timestep_spacing == "linspace":
            return np.linspace(0, train - 1, n)[::-1].copy()
        if c.timestep_spacing == "leading":
            return (np.arange(0, n) * (train // n)).round()[::-1] + c.steps_offset
        return np.round(np.arange(train, 0, -train / n)) - 1.0  # trailing

    # -- the interface the denoising loop uses -----------------------------------
    def schedule(self, num_steps: int, strength: float = 1.0) -> Schedule:
        """The plan of a run of `num_steps` steps, of which the last `strength` run.

        Args:
            num_steps: denoising steps of the full schedule (a positive int).
            strength: in (0, 1]: the fraction of the schedule that runs
                (img2img, inpainting); 1 runs all of it.

        Returns:
            a `Schedule` holding only the calls that run.

        Raises:
            ValueError: num_steps is not a positive int, or strength not in (0, 1].
        """
        num_steps, strength = check_steps(num_steps, strength, self.config.num_train_timesteps)
        return self._plan(num_steps, first_call(num_steps, strength))

    def _plan(self, num_steps: int, start: int) -> Schedule:
        raise NotImplementedError

    def scale_model_input(self, sample: Any, row: Any) -> Any:
        """The UNet's input at this call (the sample itself unless overridden)."""
        return sample

    def initial_state(self, sample: Any) -> tuple:
        """The multistep state before the first call: zeros shaped like `sample`, or ()."""
        return ()

    def step(self, model_output: Any, sample: Any, state: tuple, row: Any,
             noise: Any = None) -> tuple[Any, tuple]:
        """`(previous sample, new state)` after one UNet call.

        Args:
            model_output: the UNet's output at this call, shaped like `sample`.
            sample: the current latents, e.g. `(B, H, W, C)`.
            state: the state from `initial_state` or the previous step.
            row: this call's row of `Schedule.table`, a `(K,)` tensor.
            noise: unit Gaussian noise shaped like `sample` (only read when
                `stochastic`).
        """
        raise NotImplementedError

    # -- helpers for subclasses ----------------------------------------------------
    @staticmethod
    def _unpack(row: Any, sample: Any, count: int) -> list:
        """The first `count` entries of `row`, cast to the sample's dtype."""
        row = ops.cast(row, sample.dtype)
        return [row[k] for k in range(count)]

    def _noise(self, noise: Any, sample: Any) -> Any:
        if noise is None:
            raise InputError(f"{type(self).__name__}.step is stochastic and needs `noise` (unit "
                             "Gaussian noise shaped like the sample). Fix: pass noise=...")
        return ops.cast(noise, sample.dtype)

    @classmethod
    def from_config(cls, config: dict) -> Scheduler:
        """The scheduler `get_config()` describes."""
        return cls(dict(config))

    def get_config(self) -> dict:
        """The settings as a plain dict, with the registry name under "name"."""
        return {"name": self.name, **dataclasses.asdict(self.config)}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self.config).items())
        return f"{type(self).__name__}({fields})"
