"""The training objective of Stable Video Diffusion, matched to what the pipeline samples.

SVD is **not** trained with the seed's ``mse(predicted_noise, noise)``. It is an EDM
model (Karras et al. 2022) with v-prediction and sigma_data = 1:

    x_sigma = x0 + sigma * n,                 sigma ~ LogNormal(P_mean, P_std)
    D(x_sigma) = c_skip * x_sigma + c_out * F(c_in * x_sigma, c_noise)
    c_skip = 1 / (sigma² + 1)    c_out = -sigma / sqrt(sigma² + 1)
    c_in   = 1 / sqrt(sigma² + 1) c_noise = 0.25 ln sigma
    loss   = (sigma² + 1) / sigma² * |D - x0|²

These are exactly what diffusers' ``EulerDiscreteScheduler`` (``v_prediction``,
``timestep_type="continuous"``) does at sampling time: ``scale_model_input`` multiplies
by c_in, the timestep it passes is c_noise, and ``step`` forms D with c_skip/c_out.

Conditioning, as ``StableVideoDiffusionPipeline.__call__`` builds it:

* the first frame, noise-augmented (``image + aug * randn``), is VAE-encoded
  **unscaled** (posterior mode) and concatenated on channels to every frame's latent;
* the CLIP image embedding of the first frame is ``encoder_hidden_states`` ``(B, 1, D)``;
* ``added_time_ids = [fps - 1, motion_bucket_id, noise_aug_strength]``.

The seed's noise-MSE is kept as :func:`epsilon_loss`, a teaching variant that changes one
thing only, the target (the noise ``n`` instead of EDM's weighted clean-sample error), and keeps
SVD's noise levels, input scaling, timestep and CFG dropout: notebook 02 measures what that one
change does to SVD's sampler.

Introduced in notebook 02 (reverse process) and 03 (inside SVD).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# ------------------------------------------------------------------ EDM / v-prediction

def edm_preconditioning(sigma: torch.Tensor):
    """``(c_skip, c_out, c_in, c_noise)`` for v-prediction with sigma_data = 1 (same shape as sigma)."""
    s2 = sigma**2 + 1
    return 1 / s2, -sigma / s2.sqrt(), 1 / s2.sqrt(), 0.25 * sigma.log()


def edm_loss_weight(sigma: torch.Tensor) -> torch.Tensor:
    """lambda(sigma) = (sigma² + 1) / sigma²: makes the loss of every noise level O(1)."""
    return (sigma**2 + 1) / sigma**2


def min_snr_weight(sigma: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-γ (Hang et al. 2023) as a weight on ``|D - x0|²``: ``min(SNR, γ)`` with SNR = 1 / σ².

    For v-prediction the paper weights the v-error by ``min(SNR, γ) / (SNR + 1)``; the v-error is
    ``|D - x0|² / c_out²`` and ``1 / c_out² = (σ² + 1) / σ² = SNR + 1``, so on the clean-sample
    error the same weight is ``min(SNR, γ)``. Against EDM's λ(σ) it down-weights both ends:
    near-clean levels (σ < 1/√γ) are capped, and high noise falls as 1/σ²."""
    return torch.clamp(sigma.pow(-2), max=gamma)


def sample_sigmas(batch: int, p_mean: float = 0.7, p_std: float = 1.6, generator=None, device=None):
    """Noise levels ``(B,)`` drawn log-normally: ln sigma ~ N(p_mean, p_std²)."""
    return (_randn((batch,), generator, device) * p_std + p_mean).exp()


def _bcast(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *([1] * (like.ndim - 1)))


def _randn(shape, generator=None, device=None, dtype=None) -> torch.Tensor:
    """``torch.randn``; ``generator`` may be a list with one generator per sample (dim 0), so a
    sample's noise depends on its own seed only, not on batch size or process count."""
    if isinstance(generator, (list, tuple)):
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=dtype) for g in generator]).to(device)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def _rand(batch: int, generator=None, device=None) -> torch.Tensor:
    if isinstance(generator, (list, tuple)):
        return torch.stack([torch.rand((), generator=g) for g in generator]).to(device)
    return torch.rand(batch, generator=generator, device=device)


def per_sample_generators(seed: int, step: int, indices) -> list[torch.Generator]:
    """One generator per sample, seeded by (seed, step, global sample index)."""

    return [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, int(i)]).generate_state(1)[0]))
            for i in indices]


def denoise(unet, noisy: torch.Tensor, sigma: torch.Tensor, image_latents: torch.Tensor,
            image_embeds: torch.Tensor, added_time_ids: torch.Tensor) -> torch.Tensor:
    """The EDM denoiser D(x_sigma): the clean-latent estimate ``(B, F, C, h, w)``.

    ``noisy`` ``(B, F, C, h, w)``; ``sigma`` ``(B,)``; ``image_latents`` ``(B, F, C, h, w)``
    (unscaled, already repeated over frames); ``image_embeds`` ``(B, 1, D)``;
    ``added_time_ids`` ``(B, 3)``.
    """
    c_skip, c_out, _, _ = edm_preconditioning(sigma)
    model_out = unet_output(unet, noisy, sigma, image_latents, image_embeds, added_time_ids)
    return _bcast(c_skip, noisy) * noisy + _bcast(c_out, noisy) * model_out


def unet_output(unet, noisy: torch.Tensor, sigma: torch.Tensor, image_latents: torch.Tensor,
                image_embeds: torch.Tensor, added_time_ids: torch.Tensor) -> torch.Tensor:
    """The raw network output F ``(B, F, C, h, w)``: input ``c_in * x_sigma`` with the image latents
    concatenated on channels, timestep ``c_noise = 0.25 ln sigma``, as the pipeline calls the UNet.
    Shapes as :func:`denoise`."""
    _, _, c_in, c_noise = edm_preconditioning(sigma)
    unet_in = torch.cat([_bcast(c_in, noisy) * noisy, image_latents.to(noisy.dtype)], dim=2)
    return unet(unet_in, c_noise.to(noisy.dtype), encoder_hidden_states=image_embeds.to(noisy.dtype),
                added_time_ids=added_time_ids.to(noisy.dtype), return_dict=False)[0]


@dataclass
class ObjectiveConfig:
    """Settings of the SVD objective (defaults: public SVD fine-tuning code)."""

    p_mean: float = 0.7
    p_std: float = 1.6
    noise_aug_mean: float = -3.0  # ln of the conditioning-image noise: LogNormal(-3.0, 0.5)
    noise_aug_std: float = 0.5
    drop_embed: float = 0.2  # CFG dropout: r < drop_embed zeroes the CLIP embedding
    drop_image: float = 0.2  # ... and a window of width drop_image zeroes the image latent
    drop_both: float = 0.1  # overlap of the two windows (both zeroed)
    loss: str = "edm"  # edm (SVD's objective) | epsilon (the seed's noise target, for the notebook 02 comparison)
    weighting: str = "edm"  # edm: lambda(sigma) = (sigma² + 1) / sigma² | min_snr: min(1 / sigma², snr_gamma)
    snr_gamma: float = 5.0

    def __post_init__(self):
        if self.loss not in ("edm", "epsilon"):
            raise ValueError(f"loss must be edm or epsilon, got {self.loss!r}")
        if self.weighting not in ("edm", "min_snr"):
            raise ValueError(f"weighting must be edm or min_snr, got {self.weighting!r}")

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """The per-sample weight of ``|D - x0|²`` at noise level ``sigma`` ``(B,)``."""
        return edm_loss_weight(sigma) if self.weighting == "edm" else min_snr_weight(sigma, self.snr_gamma)


def cfg_dropout_masks(batch: int, cfg: ObjectiveConfig, generator=None, device=None):
    """Keep-masks ``(B,)`` for the CLIP embedding and the image latent (1 keep, 0 drop)."""
    r = _rand(batch, generator, device)
    keep_embed = (r >= cfg.drop_embed).float()
    lo = cfg.drop_embed - cfg.drop_both
    keep_image = 1 - ((r >= lo) & (r < lo + cfg.drop_image)).float()
    return keep_embed, keep_image


# ------------------------------------------------------------------ conditioning

def added_time_ids(fps, motion_bucket_id, noise_aug_strength, batch: int | None = None) -> torch.Tensor:
    """``(B, 3)`` micro-conditioning ``[fps - 1, motion_bucket_id, noise_aug_strength]``.

    ``fps`` is the clip's real frame rate: the ``- 1`` is the pipeline's convention
    ("SVD was conditioned on fps - 1"), applied here so train and sample agree.
    Each argument is a number or a ``(B,)`` tensor.
    """
    dev = next((v.device for v in (fps, motion_bucket_id, noise_aug_strength) if torch.is_tensor(v)), None)
    vals = [torch.as_tensor(v, dtype=torch.float32, device=dev) for v in (fps, motion_bucket_id, noise_aug_strength)]
    b = batch or max(v.numel() for v in vals)
    vals = [v.reshape(-1).expand(b) if v.numel() == 1 else v.reshape(b) for v in vals]
    return torch.stack([vals[0] - 1, vals[1], vals[2]], dim=1)


def clip_pixels(image: torch.Tensor, feature_extractor) -> torch.Tensor:
    """``(B, 3, H, W)`` in [-1, 1] → CLIP input ``(B, 3, 224, 224)``, as the pipeline makes it
    from a PIL image (antialiased resize in [-1, 1], then CLIP mean/std normalisation)."""
    # not at the top: the pipeline's module warns about torchvision when imported (see models.svd_pipeline)
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing

    x = _resize_with_antialiasing(image.float(), (224, 224))
    x = (x + 1.0) / 2.0
    mean = torch.tensor(feature_extractor.image_mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(feature_extractor.image_std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def encode_clip(image_encoder, pixels: torch.Tensor) -> torch.Tensor:
    """CLIP image embedding ``(B, 1, D)`` from :func:`clip_pixels` output."""
    dtype = next(image_encoder.parameters()).dtype
    return image_encoder(pixels.to(dtype)).image_embeds.unsqueeze(1)


def encode_image_latents(vae, image: torch.Tensor, noise_aug: torch.Tensor, generator=None) -> torch.Tensor:
    """Conditioning latents ``(B, C, h, w)`` of ``image`` ``(B, 3, H, W)`` in [-1, 1]:
    ``vae.encode(image + noise_aug * randn).mode()``, unscaled, as the pipeline does."""
    noise = _randn(image.shape, generator, image.device, image.dtype)
    noisy = image + _bcast(noise_aug.to(image.device, image.dtype), image) * noise
    return vae.encode(noisy.to(vae.dtype)).latent_dist.mode()


def encode_video_latents(vae, video: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Target latents ``(B, F, C, h, w)`` of ``video`` ``(B, F, 3, H, W)``, times ``scaling_factor``.

    Uses the posterior mode, so the result is deterministic and can be cached.
    """
    b, f = video.shape[:2]
    flat = video.flatten(0, 1).to(vae.dtype)
    z = torch.cat([vae.encode(flat[i:i + chunk]).latent_dist.mode() for i in range(0, len(flat), chunk)])
    return (z * vae.config.scaling_factor).unflatten(0, (b, f))


def sample_noise_aug(batch: int, cfg: ObjectiveConfig, generator=None, device=None) -> torch.Tensor:
    """Per-sample conditioning-image noise strength ``(B,)``: LogNormal(noise_aug_mean, noise_aug_std)."""
    return (_randn((batch,), generator, device) * cfg.noise_aug_std + cfg.noise_aug_mean).exp()


# ------------------------------------------------------------------ the losses

def noised_batch(latents, image_latents, image_embeds, cfg: ObjectiveConfig, generator=None):
    """What both objectives feed the UNet: CFG dropout of the conditioning, ``sigma`` ``(B,)`` from
    SVD's log-normal, ``noise`` like ``latents`` and ``noisy = latents + sigma * noise``; the image
    latents repeated over frames ``(B, F, C, h, w)``."""
    b, f = latents.shape[:2]
    dev = latents.device
    keep_embed, keep_image = cfg_dropout_masks(b, cfg, generator, dev)
    image_embeds = image_embeds * _bcast(keep_embed, image_embeds).to(image_embeds.dtype)
    image_latents = image_latents * _bcast(keep_image, image_latents).to(image_latents.dtype)
    image_latents = image_latents.unsqueeze(1).repeat(1, f, 1, 1, 1)
    sigma = sample_sigmas(b, cfg.p_mean, cfg.p_std, generator, dev)
    noise = _randn(latents.shape, generator, dev, latents.dtype)
    noisy = latents + _bcast(sigma, latents).to(latents.dtype) * noise
    return sigma, noise, noisy, image_latents, image_embeds


def svd_loss(unet, latents, image_latents, image_embeds, time_ids, cfg: ObjectiveConfig,
             generator=None, return_parts: bool = False):
    """EDM v-prediction loss of one batch.

    ``latents`` ``(B, F, C, h, w)`` scaled targets; ``image_latents`` ``(B, C, h, w)``
    unscaled conditioning latents (already noise-augmented); ``image_embeds`` ``(B, 1, D)``;
    ``time_ids`` ``(B, 3)``. Applies CFG dropout, draws sigma and noise, returns the loss
    (and, with ``return_parts``, a dict of the tensors fed to the UNet).
    """
    sigma, noise, noisy, image_latents, image_embeds = noised_batch(latents, image_latents, image_embeds, cfg,
                                                                    generator)
    pred = denoise(unet, noisy, sigma, image_latents, image_embeds, time_ids)
    per_sample = ((pred.float() - latents.float()) ** 2).mean(dim=(1, 2, 3, 4))
    loss = (cfg.loss_weight(sigma) * per_sample).mean()
    if return_parts:
        return loss, {"sigma": sigma, "noisy": noisy, "image_latents": image_latents,
                      "image_embeds": image_embeds, "pred": pred, "per_sample": per_sample}
    return loss


def epsilon_loss(unet, latents, image_latents, image_embeds, time_ids, cfg: ObjectiveConfig, generator=None):
    """The seed's ``mse(F(x), noise)``, with everything else as in :func:`svd_loss`: the same CFG
    dropout, sigma draw, noise, input ``c_in * x_sigma`` and timestep ``c_noise = 0.25 ln sigma``.
    Only the target changes (the noise ``n``, unweighted), so a comparison measures the target alone.
    Shapes as :func:`svd_loss`."""
    sigma, noise, noisy, image_latents, image_embeds = noised_batch(latents, image_latents, image_embeds, cfg,
                                                                    generator)
    pred = unet_output(unet, noisy, sigma, image_latents, image_embeds, time_ids)
    return F.mse_loss(pred.float(), noise.float())


# ------------------------------------------------------------------ one training step

def condition_on_first_frame(vae, first: torch.Tensor, cfg: ObjectiveConfig, generator=None):
    """``(image_latents (B, C, h, w), noise_aug (B,))``: a noise strength drawn per sample
    (:func:`sample_noise_aug`) and the first frames ``first`` ``(B, 3, H, W)`` in [-1, 1] encoded
    with it (:func:`encode_image_latents`), without gradients. Draw order: strengths, then noise."""
    aug = sample_noise_aug(len(first), cfg, generator, first.device)
    with torch.no_grad():
        img_lat = encode_image_latents(vae, first.to(vae.dtype), aug, generator)
    return img_lat, aug


def training_loss(unet, latents: torch.Tensor, image_latents: torch.Tensor, noise_aug: torch.Tensor,
                  image_embeds: torch.Tensor, fps, motion_bucket_id, cfg: ObjectiveConfig, generator=None):
    """The loss of one SVD training step, the one definition the trainer, pre-training and the
    benchmarks call: ``latents`` ``(B, F, C, h, w)`` scaled targets, ``image_latents`` ``(B, C, h, w)``
    and ``noise_aug`` ``(B,)`` from :func:`condition_on_first_frame` (or a cache of it),
    ``image_embeds`` ``(B, 1, D)``, ``fps`` and ``motion_bucket_id`` numbers or ``(B,)``. The
    micro-conditioning is built here; ``cfg.loss`` picks SVD's objective (:func:`svd_loss`) or the
    seed's noise target (:func:`epsilon_loss`)."""
    ids = added_time_ids(fps, motion_bucket_id, noise_aug, batch=len(latents)).to(latents.device)
    loss_fn = epsilon_loss if cfg.loss == "epsilon" else svd_loss
    return loss_fn(unet, latents, image_latents, image_embeds, ids, cfg, generator)
