"""A video diffusion model small enough to train from nothing in minutes on a CPU: moving dots.

* **Data** (:func:`moving_dots`): clips ``(B, F, 3, 16, 16)`` in [-1, 1], one coloured dot on black. Its
  colour decides where it goes (:data:`DIRECTIONS`), so the first frame predicts the whole clip, as in
  the course's sample sets.
* **Network** (:class:`DotDenoiser`): the frames stacked on channels, a small U-Net of residual 3×3 conv
  blocks at 16×16 and 8×8 (no temporal layers: 8 frames of 16×16 do not need them). It is conditioned the way SVD
  is: the first frame concatenated on channels, the noise level ``c_noise`` as a learned embedding.
* **Objective and sampler**: SVD's own EDM preconditioning and loss weight (:mod:`~i2v_helpers.objective`),
  and an Euler sampler down the Karras ladder of :func:`~i2v_helpers.schedules.karras_sigmas` (:func:`sample`).
* **Score** (:func:`dot_tracks`, :func:`track_error`): where the dot is in each frame, against the truth.

Introduced in notebook 02 (a model trained from nothing, by hand).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .objective import edm_loss_weight, edm_preconditioning
from .schedules import karras_sigmas

# colour (RGB in [-1, 1]) → velocity (dy, dx) in px/frame
DIRECTIONS = {
    "red": ((1.0, -1.0, -1.0), (0, 1)),      # right
    "green": ((-1.0, 1.0, -1.0), (1, 0)),    # down
    "blue": ((-1.0, -1.0, 1.0), (-1, 1)),    # up and right
    "yellow": ((1.0, 1.0, -1.0), (0, -1)),   # left
}
RADIUS = 1.6  # px: a disc of about 9 pixels, anti-aliased


def moving_dots(n: int, frames: int = 8, size: int = 16, generator: torch.Generator | None = None):
    """``n`` clips ``(n, frames, 3, size, size)`` in [-1, 1] and their truth ``{"colour" (n,), "start" (n, 2),
    "velocity" (n, 2)}`` (positions as (y, x) px). Start positions keep the dot whole in every frame."""
    colours = torch.randint(len(DIRECTIONS), (n,), generator=generator)
    rgb = torch.tensor([c for c, _ in DIRECTIONS.values()])[colours]          # (n, 3)
    vel = torch.tensor([v for _, v in DIRECTIONS.values()], dtype=torch.float)[colours]  # (n, 2)
    travel = vel * (frames - 1)
    lo = RADIUS + 0.5 - travel.clamp(max=0)                                   # (n, 2): the dot stays inside
    hi = size - 1.5 - RADIUS - travel.clamp(min=0)
    start = lo + torch.rand(n, 2, generator=generator) * (hi - lo)
    t = torch.arange(frames, dtype=torch.float)
    centre = start[:, None] + t[None, :, None] * vel[:, None]                 # (n, F, 2)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float), torch.arange(size, dtype=torch.float),
                            indexing="ij")
    dist = ((yy - centre[..., 0, None, None]) ** 2 + (xx - centre[..., 1, None, None]) ** 2).sqrt()  # (n, F, H, W)
    ink = (RADIUS + 0.5 - dist).clamp(0, 1)                                   # 1 inside, 0 outside, 1 px ramp
    clips = -1 + (rgb[:, None, :, None, None] + 1) * ink[:, :, None]          # black background
    return clips, {"colour": colours, "start": start, "velocity": vel}


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, width), nn.Conv2d(width, width, 3, padding=1)
        self.emb = nn.Linear(width, width)
        self.norm2, self.conv2 = nn.GroupNorm(8, width), nn.Conv2d(width, width, 3, padding=1)

    def forward(self, h, emb):
        r = self.conv1(nn.functional.silu(self.norm1(h))) + self.emb(emb)[:, :, None, None]
        return h + self.conv2(nn.functional.silu(self.norm2(r)))


class DotDenoiser(nn.Module):
    """``F(c_in·x, c_noise, first frame)``: the raw network of an EDM denoiser for ``(B, F, 3, H, W)`` clips.
    A small U-Net over the frames stacked on channels: a block at 16×16, ``depth`` blocks at 8×8 (where a
    3×3 kernel spans 6 px of the frame: the dot travels 7), a block at 16×16 after the skip connection.
    The output layer starts at zero, so before training ``D(x) = c_skip·x`` (the noisy input, shrunk)."""

    def __init__(self, frames: int = 8, width: int = 64, depth: int = 3):
        super().__init__()
        self.inp = nn.Conv2d(3 * frames + 3, width, 3, padding=1)
        self.noise_mlp = nn.Sequential(nn.Linear(32, width), nn.SiLU(), nn.Linear(width, width))
        self.hi_in = _Block(width)
        self.down = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.mid = nn.ModuleList(_Block(width) for _ in range(depth))
        self.up = nn.Conv2d(width, width, 3, padding=1)
        self.hi_out = _Block(width)
        self.out = nn.Conv2d(width, 3 * frames, 3, padding=1)
        nn.init.zeros_(self.out.weight), nn.init.zeros_(self.out.bias)

    def forward(self, x_in, c_noise, first):
        b, f = x_in.shape[:2]
        freqs = torch.exp(torch.linspace(0, math.log(100), 16, device=x_in.device))
        emb = self.noise_mlp(torch.cat([(c_noise[:, None] * freqs).sin(), (c_noise[:, None] * freqs).cos()], 1))
        hi = self.hi_in(self.inp(torch.cat([x_in.flatten(1, 2), first], dim=1)), emb)   # frames on channels
        h = self.down(hi)
        for block in self.mid:
            h = block(h, emb)
        h = self.hi_out(hi + self.up(nn.functional.interpolate(h, scale_factor=2.0, mode="nearest")), emb)
        return self.out(nn.functional.silu(h)).view(b, f, 3, *x_in.shape[-2:])


def denoise(model, x, sigma, first):
    """EDM's ``D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise)``, SVD's preconditioning; ``sigma`` ``(B,)``."""
    c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1, 1, 1) for c in edm_preconditioning(sigma))
    return c_skip * x + c_out * model(c_in * x, c_noise.flatten(), first)


def loss(model, x0, first, sigma, noise):
    """SVD's objective on toy clips: ``x = x0 + σ·noise``, then ``(σ² + 1) / σ² · |D(x; σ) − x0|²``, mean over
    the batch. ``x0``, ``noise`` ``(B, F, 3, H, W)``; ``first`` ``(B, 3, H, W)``; ``sigma`` ``(B,)``."""
    d = denoise(model, x0 + sigma.view(-1, 1, 1, 1, 1) * noise, sigma, first)
    return (edm_loss_weight(sigma) * ((d - x0) ** 2).mean(dim=(1, 2, 3, 4))).mean()


@torch.no_grad()
def sample(model, first, frames: int = 8, steps: int = 20, sigma_max: float = 80.0, generator=None, denoiser=None):
    """Clips ``(B, frames, 3, H, W)`` from the first frames ``(B, 3, H, W)``: Euler down :func:`karras_sigmas`,
    from noise of standard deviation √(σ_max² + 1). ``denoiser(x, sigma, first)`` defaults to :func:`denoise`
    with ``model``."""
    denoiser = denoiser or (lambda x, s, f: denoise(model, x, s, f))
    sigmas = torch.cat([torch.from_numpy(karras_sigmas(steps, sigma_max=sigma_max)).float(), torch.zeros(1)])
    x = torch.randn(len(first), frames, *first.shape[1:], generator=generator) * math.sqrt(sigma_max**2 + 1)
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = denoiser(x, s.expand(len(x)), first)
        x = x + (x - d) / s * (s_next - s)
    return x


def dot_tracks(clips, threshold: float = 0.0, max_pixels: int = 24):
    """The dot's centre (y, x) in each frame ``(B, F, 2)``: the centroid of the pixels whose brightest
    channel is above ``threshold`` (the background is -1). NaN where there is no dot: no such pixel, or
    more than ``max_pixels`` of them (a dot covers about 9; noise or a smear over the frame is not a dot)."""
    ink = (clips.amax(dim=2) > threshold).float()                           # (B, F, H, W)
    ys = torch.arange(clips.shape[-2], dtype=torch.float).view(-1, 1)
    xs = torch.arange(clips.shape[-1], dtype=torch.float).view(1, -1)
    mass = ink.sum((-2, -1))
    centre = torch.stack([(ink * ys).sum((-2, -1)), (ink * xs).sum((-2, -1))], -1) / mass.clamp(min=1)[..., None]
    found = (mass > 0) & (mass <= max_pixels)
    return torch.where(found[..., None], centre, torch.full_like(centre, float("nan")))


def track_error(clips, truth_clips) -> dict:
    """Mean distance (px) between the generated and the true dot over frames 1.., and the share of those
    frames where a dot is found at all (``found``). A lost dot counts in ``found``, not in ``err_px``."""
    gen, true = dot_tracks(clips)[:, 1:], dot_tracks(truth_clips)[:, 1:]
    d = (gen - true).norm(dim=-1)
    found = ~d.isnan()
    return {"err_px": d[found].mean().item() if found.any() else float("nan"), "found": found.float().mean().item()}
