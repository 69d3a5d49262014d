"""The forward (noising) process, for teaching: DDPM schedules, SNR, EDM sigmas.

DDPM (the seed's picture): x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps with
a_t = prod(1 - beta). SNR(t) = a_t / (1 - a_t).
EDM (what SVD uses): x_sigma = x0 + sigma * n, SNR = 1 / sigma². The two describe the
same family of noisy images: sigma = sqrt((1 - a_t) / a_t), x_sigma = x_t / sqrt(a_t).

Schedules come from diffusers' own schedulers, so the numbers are the library's.

Introduced in notebook 01 (forward process).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDPMScheduler

from .frames import to_model_range, to_uint8

DDPM_SCHEDULES = {"linear": "linear", "scaled-linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


# beta_start, beta_end of each schedule: the DDPM paper's (Ho et al. 2020) and Stable Diffusion's / SVD's
# scheduler config; the cosine schedule (Nichol & Dhariwal 2021) derives its betas and ignores these
DDPM_BETAS = {"linear": (1e-4, 0.02), "scaled-linear": (0.00085, 0.012), "cosine": (1e-4, 0.02)}


def ddpm_alphas_cumprod(schedule: str = "scaled-linear", num_train_timesteps: int = 1000,
                        beta_start: float | None = None, beta_end: float | None = None) -> torch.Tensor:
    """alpha-bar_t ``(T,)`` for ``linear`` (the DDPM paper: beta 1e-4..0.02), ``scaled-linear``
    (Stable Diffusion / SVD's betas, 0.00085..0.012) or ``cosine`` (Nichol & Dhariwal); other
    betas with ``beta_start`` / ``beta_end``."""

    if schedule not in DDPM_SCHEDULES:
        raise ValueError(f"schedule must be one of {list(DDPM_SCHEDULES)}, got {schedule!r}")
    default_start, default_end = DDPM_BETAS[schedule]
    s = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=beta_start or default_start,
                      beta_end=beta_end or default_end, beta_schedule=DDPM_SCHEDULES[schedule])
    return s.alphas_cumprod.clone()


def snr_from_alphas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio a / (1 - a)."""
    return alphas_cumprod / (1 - alphas_cumprod)


def sigma_from_alphas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The EDM noise level equivalent to a DDPM step: sqrt((1 - a) / a)."""
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def ddpm_noise(x0: torch.Tensor, t: int, alphas_cumprod: torch.Tensor, generator=None) -> torch.Tensor:
    """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, for any shape (e.g. a clip ``(F, 3, H, W)``)."""
    a = alphas_cumprod[t]
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def lognormal_sigma_density(sigmas: np.ndarray, p_mean: float = 0.7, p_std: float = 1.6) -> np.ndarray:
    """Density over ln(sigma) of SVD's training noise levels (a normal in log space)."""
    z = (np.log(sigmas) - p_mean) / p_std
    return np.exp(-0.5 * z**2) / (p_std * np.sqrt(2 * np.pi))


def karras_sigmas(steps: int = 25, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0):
    """The sampling noise levels SVD's scheduler uses (Karras et al.), ``(steps,)`` high → low."""
    ramp = np.linspace(0, 1, steps)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def pipeline_sigmas(pipe, steps: int = 25) -> np.ndarray:
    """The sigmas the pipeline's scheduler actually visits for ``steps`` steps (last one is 0)."""
    pipe.scheduler.set_timesteps(steps)
    return pipe.scheduler.sigmas.cpu().numpy()


def noised_clip(clip: np.ndarray, t: int, schedule: str = "scaled-linear", seed: int = 0) -> np.ndarray:
    """A real ``uint8`` clip ``(F, H, W, 3)`` after ``t`` forward-process steps of ``schedule``,
    back as ``uint8`` (values clipped to [-1, 1] for display). What notebook 01's widget shows."""
    x0 = to_model_range(clip).movedim(-3, -1)  # channels last again: the noise is drawn in the clip's layout
    xt = ddpm_noise(x0, int(t), ddpm_alphas_cumprod(schedule), torch.Generator().manual_seed(seed))
    return to_uint8(xt.movedim(-1, -3))
