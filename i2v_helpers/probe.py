"""Where along the noise ladder a model loses the object: the σ_start probe, and the build's
learning-curve probe built on it.

The σ_start probe takes a held-out clip whose objects are known (the synthetic sets'
ground truth), encodes the **true** clip, adds noise up to ``sigma_start``
(``x = z0 + sigma_start * n``, EDM's forward process), then runs Euler with guidance off down the
sampler's own Karras ladder from there (the ladder's levels below ``sigma_start``), decodes and
scores ``object_err_px`` / ``object_kept`` against the truth. ``sigma_start = 0`` is the VAE
alone; ``sigma_start`` at the top of the ladder (700) is generation from pure noise, where only
the first frame can say where the object goes. Between the two it shows the band of noise
levels where the model loses the object: the detail band (σ < 1), or the band where layout and
motion are decided (σ ≳ 3).

The Euler step is written out here (``x ← x + (σ_next − σ) (x − D) / σ``, D the EDM denoiser of
:func:`i2v_helpers.objective.denoise`); it is the step ``EulerDiscreteScheduler`` takes for SVD.
Conditioning is built as the pipeline builds it: CLIP embedding of the first frame, its
noise-augmented VAE latent (unscaled), ``[fps - 1, bucket, aug]``.

Introduced in the tiny-v2 build (``benchmarks/RESULTS.md``); the course uses it in notebook 02.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler

from .data import parse_manifest, prepare_clip
from .evaluation import paired_difference
from .frames import to_model_range, to_uint8
from .generation import generate
from .metrics import motion_metrics, object_metrics
from .objective import added_time_ids, clip_pixels, denoise, encode_clip, encode_image_latents

PROBE_SIGMAS = (1.0, 3.0, 10.0, 700.0)


def probe_items(manifest="data_samples/general/val.jsonl", n: int = 8, num_frames: int = 16,
                size: tuple[int, int] = (64, 64)) -> list[dict]:
    """The first ``n`` clips of ``manifest`` that carry object ground truth, prepared as
    evaluation prepares them (:func:`i2v_helpers.data.prepare_clip`: first frames, centre crop)."""
    entries, _ = parse_manifest(manifest)
    items = [prepare_clip(e, num_frames, size) for e in entries if e.objects]
    return items[:n]


def karras_ladder(pipe, steps: int = 25) -> torch.Tensor:
    """The sampler's σ levels for ``steps`` steps, high to low, ending in 0 (``(steps + 1,)``)."""

    sched = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    return sched.sigmas.float().cpu()


@torch.no_grad()
def denoise_from(pipe, item: dict, sigma_start: float, seed: int = 0, steps: int = 25,
                 noise_aug_strength: float = 0.02) -> np.ndarray:
    """The true clip of ``item`` noised to ``sigma_start`` and denoised (Euler, guidance off) down
    the sampler's ladder: ``uint8`` ``(F, H, W, 3)``. ``sigma_start = 0``: VAE encode + decode."""
    vae, dev = pipe.vae, pipe.unet.device
    video = to_model_range(item["video"]).to(dev)  # (F, 3, H, W)
    f = len(video)
    z0 = vae.encode(video).latent_dist.mode() * vae.config.scaling_factor  # (F, C, h, w)
    z0 = z0.unsqueeze(0)  # (1, F, C, h, w)
    g = torch.Generator("cpu").manual_seed(seed)
    x = z0 + sigma_start * torch.randn(z0.shape, generator=g).to(dev)
    if sigma_start > 0:
        image = to_model_range(item["image"][None]).to(dev)  # (1, 3, H, W)
        aug = torch.full((1,), noise_aug_strength, device=dev)
        img_lat = encode_image_latents(vae, image, aug, g).unsqueeze(1).repeat(1, f, 1, 1, 1)
        embeds = encode_clip(pipe.image_encoder, clip_pixels(image, pipe.feature_extractor))
        ids = added_time_ids(item["fps"], item["motion_bucket_id"], noise_aug_strength, batch=1).to(dev)
        ladder = karras_ladder(pipe, steps)
        sigmas = [sigma_start] + [float(s) for s in ladder if s < sigma_start]
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            d = denoise(pipe.unet, x, torch.tensor([s], device=dev), img_lat, embeds, ids)
            x = x + (s_next - s) * (x - d) / s
    rec = vae.decode(x[0] / vae.config.scaling_factor, num_frames=f).sample.float()
    return to_uint8(rec.cpu())


def sigma_probe(pipe, items: list[dict], sigmas=PROBE_SIGMAS, seed: int = 0, steps: int = 25) -> dict:
    """``{sigma: {"object_err_px", "object_kept"}}``, means over ``items`` (NaN-skipping)."""
    out = {}
    for s in sigmas:
        rows = [object_metrics(denoise_from(pipe, it, s, seed, steps), it["objects"]) for it in items]
        out[s] = {k: float(np.nanmean([r[k] for r in rows])) for k in ("object_err_px", "object_kept")}
    return out


def _score(item: dict, clip: np.ndarray) -> dict:
    """One clip's object metrics and whole-frame ``flow_epe`` against the item's truth."""
    return {**object_metrics(clip, item["objects"]),
            "flow_epe": motion_metrics(clip, item["video"], item["image"])["flow_epe"]}


def learning_curve_probe(pipe, items: list[dict], seeds=(0,), steps: int = 25) -> dict:
    """The build's probe, a flat ``{metric: value}``: generation from each item's first frame
    (guidance 1→3, the pipeline as users call it) scored for ``object_kept``, ``object_err_px``
    and ``flow_epe`` next to repeat-the-first-frame (``base_*``); the paired difference
    generated − repeat-the-first-frame with its standard error over clips (``d_*``, ``se_d_*``:
    :func:`i2v_helpers.evaluation.paired_difference`, seeds averaged per clip first); and the
    σ_start probe at :data:`PROBE_SIGMAS` (``err@σ`` and ``kept@σ``, first seed). ``clips`` and
    ``seeds`` record the probe's size."""
    gen_rows, base_rows = [], []
    for i, it in enumerate(items):
        still = _score(it, np.repeat(it["image"][None], len(it["video"]), axis=0))  # seed-independent: once
        for seed in seeds:
            gen = generate(pipe, it["image"], num_frames=len(it["video"]), steps=steps, fps=it["fps"],
                           motion_bucket_id=it["motion_bucket_id"], seed=seed)
            gen_rows.append({"clip": i, "seed": seed, **_score(it, gen)})
            base_rows.append({"clip": i, "seed": seed, **still})
    out = {"clips": float(len(items)), "seeds": float(len(seeds))}
    for k in ("object_kept", "object_err_px", "flow_epe"):
        out[k] = float(np.nanmean([r[k] for r in gen_rows]))
        out[f"base_{k}"] = float(np.nanmean([r[k] for r in base_rows]))
        out[f"d_{k}"], out[f"se_d_{k}"], _ = paired_difference({"rows": base_rows}, {"rows": gen_rows}, k)
    for s, m in sigma_probe(pipe, items, seed=seeds[0], steps=steps).items():
        label = f"{s:g}"
        out[f"err@{label}"], out[f"kept@{label}"] = m["object_err_px"], m["object_kept"]
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}
