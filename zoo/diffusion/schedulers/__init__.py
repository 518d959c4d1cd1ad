"""Noise schedulers for latent diffusion, equal to diffusers' step for step.

`get_scheduler(name)` builds one by name: "ddim", "pndm", "euler",
"euler_karras", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_karras".
"""

from __future__ import annotations

from typing import Any

from zoo.diffusion.schedulers.ddim import DDIMConfig, DDIMScheduler, PNDMConfig, PNDMScheduler
from zoo.diffusion.schedulers.dpm_solver import DPMSolverConfig, DPMSolverMultistepScheduler
from zoo.diffusion.schedulers.euler import (
    EulerAncestralConfig,
    EulerAncestralScheduler,
    EulerConfig,
    EulerScheduler,
)
from zoo.diffusion.schedulers.scheduler import Schedule, Scheduler, SchedulerConfig

#: registry name -> (class, config overrides)
SCHEDULERS: dict[str, tuple[type[Scheduler], dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "pndm": (PNDMScheduler, {}),
    "euler": (EulerScheduler, {}),
    "euler_karras": (EulerScheduler, {"use_karras_sigmas": True}),
    "euler_ancestral": (EulerAncestralScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
}


def get_scheduler(scheduler: str | Scheduler, **overrides: Any) -> Scheduler:
    """A scheduler by registry name (with config `overrides`), or `scheduler` itself.

    Example:

    >>> from zoo.diffusion.schedulers import get_scheduler
    >>> get_scheduler("euler_karras").config.use_karras_sigmas
    True

    Raises:
        ValueError: the name is not in the registry.
    """
    if isinstance(scheduler, Scheduler):
        return scheduler
    if scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {scheduler!r}; choose from {sorted(SCHEDULERS)} "
                         "or pass a zoo.diffusion.schedulers.Scheduler instance.")
    cls, preset = SCHEDULERS[scheduler]
    return cls(**{**preset, **overrides})


__all__ = ["DDIMConfig", "DDIMScheduler", "DPMSolverConfig", "DPMSolverMultistepScheduler",
           "EulerAncestralConfig", "EulerAncestralScheduler", "EulerConfig", "EulerScheduler",
           "PNDMConfig", "PNDMScheduler", "Schedule", "Scheduler", "SchedulerConfig",
           "SCHEDULERS", "get_scheduler"]
