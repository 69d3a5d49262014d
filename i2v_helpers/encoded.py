"""The encoded-clip cache: training clips passed once through the frozen VAE and CLIP tower.

    encoded = EncodedClips(VideoClipDataset("data_samples/general/train.jsonl", 16, 64), pipe, cache="disk",
                           cache_dir="runs/x/cache")
    batch = collate([encoded[i] for i in (0, 1)])   # latents (B, F, C, h, w), image (B, 3, H, W), ...

The first frame is *not* cached as a latent: the pipeline adds its noise augmentation in pixel
space, so the trainer VAE-encodes the (noised) first frame every step. Introduced in notebook 06.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .objective import clip_pixels, encode_clip, encode_video_latents


def collate(items: list[dict]) -> dict:
    """Encoded items → one batch: every field stacked on a new first (batch) dimension."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


class EncodedClips(torch.utils.data.Dataset):
    """Items of a :class:`~i2v_helpers.data.VideoClipDataset` with the frozen encoders applied:
    ``latents`` ``(F, C, h, w)`` (scaled), ``image`` ``(3, H, W)``, ``image_embeds`` ``(1, D)``,
    ``fps``, ``motion_bucket_id``. With a cache they are computed once (memory, or disk keyed
    by the data, the settings and the encoder weights: :meth:`cache_key`).

    What it needs of ``dataset`` (any class that has these will do): ``len()``; ``dataset[i]``, a
    dict with ``video`` ``(F, 3, H, W)`` and ``image`` ``(3, H, W)`` in [-1, 1], ``fps`` and
    ``motion_bucket_id``; ``deterministic`` (an item depends only on its index, else nothing is
    cached); ``fingerprint()``, a string that changes whenever any item would (only the disk cache reads it)."""

    def __init__(self, dataset, pipe, cache: str = "memory", cache_dir: str | Path | None = None, log=print):
        self.dataset, self.pipe, self.cache = dataset, pipe, cache
        if cache != "off" and not dataset.deterministic:
            log("[cache] random crop/flip/start: items differ every epoch, caching is off")
            self.cache = "off"
        self.items: list[dict] | None = None
        if self.cache == "off":
            return
        path = None
        if self.cache == "disk":
            path = Path(cache_dir) / f"{self.cache_key()}.safetensors"
            if path.is_file():
                self.items = load_items(path)
                log(f"[cache] loaded {len(self.items)} encoded clips from {path}")
                return
        t = time.time()
        self.items = [self.encode(dataset[i]) for i in range(len(dataset))]
        log(f"[cache] encoded {len(self.items)} clips in {time.time() - t:.1f}s ({self.cache})")
        if path is not None:
            save_items(path, self.items)

    def cache_key(self) -> str:
        """The dataset's :meth:`~i2v_helpers.data.VideoClipDataset.fingerprint` (its items) and every
        byte of the encoders' weights: changes when the data, the settings or the encoders change."""
        h = hashlib.sha256(self.dataset.fingerprint().encode())
        for model in (self.pipe.vae, self.pipe.image_encoder):
            for p in model.parameters():  # every byte: a sum of the weights depends on the thread count
                h.update(p.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:24]

    @torch.no_grad()
    def encode(self, item: dict) -> dict:
        pipe = self.pipe
        dev = pipe.device
        video = item["video"].to(dev, pipe.vae.dtype)[None]
        image = item["image"].to(dev)[None]
        embeds = encode_clip(pipe.image_encoder, clip_pixels(image, pipe.feature_extractor))
        return {"latents": encode_video_latents(pipe.vae, video)[0].float().cpu(),
                "image": item["image"].float(),
                "image_embeds": embeds[0].float().cpu(),
                "fps": torch.tensor(item["fps"]), "motion_bucket_id": torch.tensor(item["motion_bucket_id"])}

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.items[i] if self.items is not None else self.encode(self.dataset[i])


def save_items(path: Path, items: list[dict]):
    """Encoded items → one safetensors file (``"{i}.{field}"`` keys), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"{i}.{k}": v.contiguous() for i, it in enumerate(items) for k, v in it.items()}
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")  # two writers never share a temp file
    save_file(flat, tmp)
    tmp.replace(path)


def load_items(path: Path) -> list[dict]:
    """The items :func:`save_items` wrote."""
    flat = load_file(path)
    n = 1 + max(int(k.split(".", 1)[0]) for k in flat)
    items = [{} for _ in range(n)]
    for k, v in flat.items():
        i, name = k.split(".", 1)
        items[int(i)][name] = v
    return items
