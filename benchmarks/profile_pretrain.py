"""Profile one training step of each pre-training phase of the tiny SVD v2 on this machine.

    python benchmarks/profile_pretrain.py [--threads 2] [--seconds 8] [--only vae|unet] [--table]

Random weights and random inputs (the cost of a step does not depend on what was learned).
Prints one JSON line per variant (s/step, samples/s) and, with ``--table``, the top operators
of ``torch.profiler`` for the first variant of each phase. Run it on an otherwise idle machine:
two heavy jobs at once slow each other about 3x.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from i2v_helpers.models import TINY_PRESETS, build_tiny_pipeline
from i2v_helpers.objective import ObjectiveConfig, encode_image_latents, sample_noise_aug
from i2v_helpers.pretrain import PretrainConfig, cached_unet_loss, unet_phase_loss


def timed(step, seconds: float) -> tuple[float, int]:
    for _ in range(2):
        step()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return (time.perf_counter() - t0) / n, n


def vae_step_fn(vae, clips: int, frames: int, size: int, channels_last: bool = False):
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    x = torch.rand(clips * frames, 3, size, size) * 2 - 1
    if channels_last:
        vae.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.mode(), num_frames=frames).sample
        loss = F.mse_loss(rec, x) + F.l1_loss(rec, x) + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def unet_step_fn(pipe, batch: int, frames: int, cached_image_latents: bool = False):
    mc = TINY_PRESETS["v2"]
    n = mc.latent_size
    latents = torch.randn(batch, frames, mc.latent_channels, n, n)
    first = torch.rand(batch, 3, mc.resolution, mc.resolution) * 2 - 1
    fps = torch.full((batch,), 8.0)
    bucket = torch.full((batch,), 127.0)
    params = list(pipe.unet.parameters()) + list(pipe.image_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    cfg = PretrainConfig(device="cpu")

    aug = sample_noise_aug(batch, ObjectiveConfig())
    with torch.no_grad():
        img_lat = encode_image_latents(pipe.vae, first, aug)

    def step():
        if cached_image_latents:  # what run_unet_phase does: first-frame latents encoded once, before training
            loss = cached_unet_loss(pipe, pipe.unet, latents, img_lat, aug, first, fps, bucket, cfg)
        else:  # the step as it was: the VAE encodes the noise-augmented first frames every step
            loss = unet_phase_loss(pipe, pipe.unet, latents, first, fps, bucket, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--only", choices=["vae", "unet"], default=None)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also time the 16 x 4 cached step with torch.compile(unet)")
    ap.add_argument("--shapes", default="4x16,8x8,16x4,16x1", help="UNet batch x frames to time")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mc = TINY_PRESETS["v2"]
    if args.only in (None, "vae"):
        for clips, frames, size, cl in [(4, 4, 32, False), (4, 4, 64, False), (16, 1, 32, False),
                                        (16, 1, 64, False), ]:
            vae = build_tiny_pipeline(mc).vae.train()
            step = vae_step_fn(vae, clips, frames, size, cl)
            s, n = timed(step, args.seconds)
            print(json.dumps({"phase": "vae", "clips": clips, "frames": frames, "px": size, "channels_last": cl,
                              "step_s": round(s, 4), "frames_per_s": round(clips * frames / s, 1),
                              "px_per_s_M": round(clips * frames * size * size / s / 1e6, 3)}), flush=True)
            if args.table and (clips, frames, size, cl) == (4, 4, 32, False):
                profile(step)
    if args.only in (None, "unet"):
        for batch, frames in [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]:
            for cached in (False, True):
                torch.manual_seed(0)
                pipe = build_tiny_pipeline(mc)
                pipe.vae.requires_grad_(False)
                step = unet_step_fn(pipe, batch, frames, cached)
                s, n = timed(step, args.seconds)
                print(json.dumps({"phase": "unet", "batch": batch, "frames": frames, "cached_image_latents": cached,
                                  "step_s": round(s, 4), "clips_per_s": round(batch / s, 2),
                                  "frames_per_s": round(batch * frames / s, 1)}), flush=True)
                if args.table and (batch, frames) == (16, 4):
                    profile(step)
        if args.compile:
            torch.manual_seed(0)
            pipe = build_tiny_pipeline(mc)
            pipe.vae.requires_grad_(False)
            pipe.unet = torch.compile(pipe.unet)
            t0 = time.perf_counter()
            step = unet_step_fn(pipe, 16, 4, True)
            step()
            compile_s = time.perf_counter() - t0
            s, n = timed(step, args.seconds)
            print(json.dumps({"phase": "unet", "batch": 16, "frames": 4, "cached_image_latents": True,
                              "compile": True, "compile_s": round(compile_s, 1), "step_s": round(s, 4),
                              "clips_per_s": round(16 / s, 2)}), flush=True)


def profile(step):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    with prof(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(3):
            step()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=18), flush=True)


if __name__ == "__main__":
    main()
