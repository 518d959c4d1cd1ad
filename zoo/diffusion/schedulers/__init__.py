"""Noise schedulers for latent diffusion, equal to diffusers' call for call.

Each scheduler plans a run on the host (`schedule(num_steps, strength)`: a
`Schedule` of numpy arrays, one table row per UNet call) and steps in
keras.ops with explicit state, so a whole denoising step compiles once.

`get_scheduler(name)` builds one by registry name: "ddim", "pndm", "euler",
"euler_karras", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_karras".
"""

from __future__ import annotations

from typing import Any

from zoo.core.errors import InputError
from zoo.diffusion.schedulers.ddim import DDIMConfig, DDIMScheduler
from zoo.diffusion.schedulers.dpm_solver import DPMSolverConfig, DPMSolverMultistepScheduler
from zoo.diffusion.schedulers.euler import EulerConfig, EulerScheduler
from zoo.diffusion.schedulers.euler_ancestral import (
    EulerAncestralConfig,
    EulerAncestralScheduler,
)
from zoo.diffusion.schedulers.pndm import PNDMConfig, PNDMScheduler
from zoo.diffusion.schedulers.scheduler import Schedule, Scheduler, SchedulerConfig

#: registry name -> (scheduler class, the config fields the name sets)
SCHEDULERS: dict[str, tuple[type[Scheduler], dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "pndm": (PNDMScheduler, {}),
    "euler": (EulerScheduler, {}),
    "euler_karras": (EulerScheduler, {"use_karras_sigmas": True}),
    "euler_ancestral": (EulerAncestralScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
}


def get_scheduler(name_or_instance: str | Scheduler, **overrides: Any) -> Scheduler:
    """A scheduler by registry name, or a copy of an instance, with config `overrides`.

    Args:
        name_or_instance: a registry name (see `SCHEDULERS`) or a `Scheduler`
            (returned as is when there are no overrides).
        **overrides: config fields to replace (e.g. `eta=1.0` for DDIM,
            `timestep_spacing="trailing"`).

    Raises:
        ValueError: an unknown name, or a setting the scheduler does not have.

    Example:

    >>> from zoo.diffusion.schedulers import get_scheduler
    >>> scheduler = get_scheduler("dpmpp_2m_karras")
    >>> scheduler.name, scheduler.config.use_karras_sigmas
    ('dpmpp_2m_karras', True)
    >>> get_scheduler(scheduler, timestep_spacing="trailing").config.timestep_spacing
    'trailing'
    """
    if isinstance(name_or_instance, Scheduler):
        if not overrides:
            return name_or_instance
        return type(name_or_instance)(name_or_instance.config, **overrides)
    if not isinstance(name_or_instance, str) or name_or_instance not in SCHEDULERS:
        raise InputError(f"Unknown scheduler {name_or_instance!r}. Fix: use one of "
                         f"{list(SCHEDULERS)}, or pass a zoo.diffusion.schedulers.Scheduler.")
    cls, preset = SCHEDULERS[name_or_instance]
    return cls(**{**preset, **overrides})


__all__ = ["DDIMConfig", "DDIMScheduler", "DPMSolverConfig", "DPMSolverMultistepScheduler",
           "EulerAncestralConfig", "EulerAncestralScheduler", "EulerConfig", "EulerScheduler",
           "PNDMConfig", "PNDMScheduler", "SCHEDULERS", "Schedule", "Scheduler",
           "SchedulerConfig", "get_scheduler"]
