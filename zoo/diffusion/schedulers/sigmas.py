"""Sigma schedules shared by the k-diffusion style schedulers (Euler, DPM-Solver).

A noise level sigma is noise over signal: x_t = alpha_t (x0 + sigma eps) with
sigma = sqrt((1 - alpha_bar) / alpha_bar). These helpers follow the float
widths diffusers uses (training sigmas in float32, interpolation in float64).
"""

from __future__ import annotations

import numpy as np

KARRAS_RHO = 7.0  # Karras et al.'s rho


def training_sigmas(alphas_cumprod: np.ndarray) -> np.ndarray:
    """(num_train_timesteps,) float32 sigma of every training timestep.

    Example:

    >>> import numpy as np
    >>> training_sigmas(np.array([0.5, 0.2], "float32")).tolist()
    [1.0, 2.0]
    """
    a = alphas_cumprod.astype("float32")
    return np.sqrt((np.float32(1.0) - a) / a)


def interpolate_sigmas(timesteps: np.ndarray, train_sigmas: np.ndarray) -> np.ndarray:
    """float64 sigmas at (possibly fractional) `timesteps`, linear between timesteps."""
    return np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)


def karras_sigmas(sigma_max: float, sigma_min: float, num_steps: int) -> np.ndarray:
    """(num_steps,) float64 sigmas evenly spaced in sigma ** (1 / rho), max to min.

    Example:

    >>> karras_sigmas(10.0, 0.1, 3).round(4).tolist()
    [10.0, 1.4507, 0.1]
    """
    ramp = np.linspace(0, 1, num_steps)
    lo, hi = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
    return (hi + ramp * (lo - hi)) ** KARRAS_RHO


def sigma_to_t(sigmas: np.ndarray, train_sigmas: np.ndarray) -> np.ndarray:
    """Fractional timesteps of `sigmas`: log-sigma interpolated linearly between
    the two training timesteps around it (clamped to the training range).

    Example:

    >>> import numpy as np
    >>> train = np.array([1.0, 2.0, 4.0], "float32")
    >>> sigma_to_t(np.array([4.0, np.sqrt(2.0), 0.5]), train).round(4).tolist()
    [2.0, 0.5, 0.0]
    """
    log_train = np.log(train_sigmas)  # (T,) in the training sigmas' float32, like diffusers
    log_sigma = np.log(np.maximum(sigmas, 1e-10))  # (n,) float64
    above = (log_sigma[None, :] - log_train[:, None]) >= 0  # (T, n)
    # the last training timestep whose sigma is <= sigma (argmax of the running count)
    low = np.cumsum(above, axis=0).argmax(axis=0).clip(max=len(log_train) - 2)  # (n,)
    w = (log_train[low] - log_sigma) / (log_train[low] - log_train[low + 1])
    w = np.clip(w, 0, 1)
    return (1 - w) * low + w * (low + 1)
