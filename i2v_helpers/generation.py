"""Generating videos: one call around the diffusers pipeline, a step-by-step trace of the
reverse process, and video writers.

``generate`` passes every setting explicitly, so a course cell and ``i2v sample`` make
the same video from the same seed. ``trace_reverse_process`` runs the same pipeline
with a ``callback_on_step_end`` hook and records, at each step, the noisy latent and
the model's current estimate of the clean video (the EDM denoiser output D), decoded.

Introduced in notebook 00 (one photo to video) and 02 (reverse process).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import EDMDPMSolverMultistepScheduler, EulerDiscreteScheduler
from PIL import Image

from .conditioning import DEFAULT_FPS, DEFAULT_MOTION_BUCKET
from .frames import crop_box, float01_to_uint8, resize_crop, to_uint8
from .models import model_geometry


def _as_uint8(image) -> np.ndarray:
    """PIL image, ``uint8`` or float-in-[0, 1] ``(H, W, 3)`` array → ``uint8`` ``(H, W, 3)``."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    return float01_to_uint8(image)


def as_pil(image) -> Image.Image:
    return Image.fromarray(_as_uint8(image))


def fit_image(image, size: tuple[int, int]) -> np.ndarray:
    """``image`` ``(h, w, 3)`` → ``uint8`` ``(H, W, 3)`` resized to cover ``size`` and centre-cropped,
    as training prepares its frames (:func:`i2v_helpers.frames.crop_box`, ``resize_crop``); the
    pipeline itself would stretch it."""
    arr = _as_uint8(image)
    return resize_crop(arr[None], size, crop_box(*arr.shape[:2], size))[0]


@torch.no_grad()
def generate(pipe, image, num_frames: int | None = None, steps: int = 25, fps: float = DEFAULT_FPS,
             motion_bucket_id: float = DEFAULT_MOTION_BUCKET, noise_aug_strength: float = 0.02,
             min_guidance: float = 1.0, max_guidance: float = 3.0, seed: int = 0, height: int | None = None,
             width: int | None = None, decode_chunk_size: int | None = None, callback=None) -> np.ndarray:
    """Image → video frames ``uint8`` ``(F, H, W, 3)``.

    ``image``: PIL image or ``uint8`` ``(h, w, 3)`` array, fitted to ``(H, W)`` by :func:`fit_image`.
    ``num_frames``, ``height``, ``width`` default to the model's own
    (:func:`i2v_helpers.models.model_geometry`: 16 × 64 × 64 for the tiny SVD, 25 × 576 × 1024
    for a model trained so). ``fps`` is the real frame rate you want, not rounded (the
    pipeline passes ``fps - 1`` to the UNet, as SVD was trained); with ``motion_bucket_id`` see
    :mod:`i2v_helpers.conditioning`. Guidance ramps linearly from ``min_guidance`` (first frame)
    to ``max_guidance``.
    """
    frames, h, w = model_geometry(pipe)
    num_frames, height, width = num_frames or frames, height or h, width or w
    g = torch.Generator("cpu").manual_seed(seed)
    out = pipe(as_pil(fit_image(image, (height, width))), height=height, width=width,
               num_frames=num_frames, num_inference_steps=steps, fps=float(fps),
               motion_bucket_id=float(motion_bucket_id), noise_aug_strength=noise_aug_strength,
               min_guidance_scale=min_guidance, max_guidance_scale=max_guidance,
               decode_chunk_size=decode_chunk_size, generator=g, output_type="np", callback_on_step_end=callback,
               callback_on_step_end_tensor_inputs=["latents"] if callback else None)
    frames = out.frames[0]  # (F, H, W, 3) floats in [0, 1]
    return float01_to_uint8(frames)


SAMPLERS = ("euler", "dpm++2m")


def use_sampler(pipe, name: str = "euler"):
    """Swap the pipeline's scheduler for another sampler of the same EDM model; returns ``pipe``.

    ``euler``: SVD's own ``EulerDiscreteScheduler`` (v-prediction, continuous timesteps,
    Karras sigmas), rebuilt from the pipeline's scheduler config.
    ``dpm++2m``: diffusers' ``EDMDPMSolverMultistepScheduler`` (second order) set to the same
    model: sigma_data = 1, v-prediction, the same sigma range; it passes the UNet the same
    ``c_noise = 0.25 ln sigma``, so no retraining is needed.
    """

    if not hasattr(pipe, "_i2v_euler_config"):  # the pipeline's own (Euler) settings, kept for swapping back
        pipe._i2v_euler_config = dict(pipe.scheduler.config)
    base = pipe._i2v_euler_config
    if name == "euler":
        pipe.scheduler = EulerDiscreteScheduler.from_config(base)
    elif name == "dpm++2m":
        pipe.scheduler = EDMDPMSolverMultistepScheduler(
            sigma_min=base.get("sigma_min", 0.002), sigma_max=base.get("sigma_max", 700.0), sigma_data=1.0,
            sigma_schedule="karras", prediction_type=base.get("prediction_type", "v_prediction"),
            solver_order=2, final_sigmas_type="zero")
    else:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {name!r}")
    return pipe


def decode_latents(pipe, latents: torch.Tensor, decode_chunk_size: int | None = None) -> np.ndarray:
    """Scaled latents ``(1, F, C, h, w)`` → ``uint8`` ``(F, H, W, 3)`` through the pipeline's VAE."""
    f = latents.shape[1]
    video = pipe.decode_latents(latents.to(pipe.vae.dtype), f, decode_chunk_size or f)  # (1, 3, F, H, W)
    return to_uint8(video[0].transpose(0, 1))


@torch.no_grad()
def trace_reverse_process(pipe, image, every: int = 1, **kwargs) -> dict:
    """Run :func:`generate` and record the reverse process, step by step.

    Returns ``{"frames": final (F, H, W, 3), "sigmas": [...], "noisy": [...], "denoised": [...]}``
    where, for every ``every``-th step, ``noisy`` is the UNet's input ``c_in * x_sigma``
    decoded (the noisy latent at unit scale, so the noise is visible) and ``denoised`` is
    the scheduler's current estimate of the clean video (``pred_original_sample``, the
    EDM denoiser output after guidance), decoded. Both are ``uint8`` ``(F, H, W, 3)``.
    """
    rec = {"sigmas": [], "noisy": [], "denoised": []}
    orig_step = pipe.scheduler.step
    count = [0]

    def step(model_output, timestep, sample, *args, **kw):
        out = orig_step(model_output, timestep, sample, *args, **kw)
        i = count[0]
        count[0] += 1
        if i % every == 0:
            sigma = float(pipe.scheduler.sigmas[i])
            rec["sigmas"].append(sigma)
            rec["noisy"].append(decode_latents(pipe, sample / (sigma**2 + 1) ** 0.5))
            rec["denoised"].append(decode_latents(pipe, out.pred_original_sample))
        return out

    pipe.scheduler.step = step
    try:
        rec["frames"] = generate(pipe, image, **kwargs)
    finally:
        del pipe.scheduler.step  # back to the class method
    return rec
