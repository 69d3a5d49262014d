"""Speed and memory of a training step: the seed's naive loop against the package's trainer.

``i2v bench train`` runs both on the same model, batch and data, in one process:

* **naive** (what the seed's loop does): fp32 everywhere, the frozen VAE and CLIP encoders
  run on every step, no gradient checkpointing;
* **trainer** (what :func:`i2v_helpers.training.train` does): encoder outputs cached once
  (:class:`~i2v_helpers.encoded.EncodedClips`), the step is
  :func:`~i2v_helpers.training.batch_loss`, mixed precision with frozen weights stored in
  the low-precision dtype, optional gradient checkpointing.

For the ``svd-xt`` preset the UNet, VAE and CLIP tower are SVD-xt's architectures with
random weights (nothing is downloaded), so a GPU run measures the real cost.
Warm-up steps are excluded; the median of the timed steps is reported.

Introduced in notebook 10 (scaling to the real SVD); figures in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import gc
import hashlib
import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .conditioning import DEFAULT_MOTION_BUCKET
from .config import PRECISION_DTYPES, TrainConfig
from .device import describe, enable_tf32, pick_device, sync
from .encoded import EncodedClips, collate
from .generation import as_pil, generate
from .models import (
    SVD_XT_FRAMES,
    SVD_XT_SIZE,
    TINY_PRESETS,
    TINY_SVD_DIR,
    build_svd_xt_random,
    build_tiny_pipeline,
    load_pipeline,
    model_geometry,
)
from .objective import (
    ObjectiveConfig,
    clip_pixels,
    condition_on_first_frame,
    encode_clip,
    encode_video_latents,
    training_loss,
)
from .techniques import apply_technique, cast_frozen_weights, enable_checkpointing
from .training import batch_loss

# dense bf16 peak (vendor data sheets, TFLOP/s); the first key found in the device name wins
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "MI300X": 1307.4}
BENCH_FPS, BENCH_BUCKET = 8.0, DEFAULT_MOTION_BUCKET  # the micro-conditioning both loops train with


@dataclass
class BenchSetup:
    preset: str = "tiny"  # tiny | svd-xt
    technique: str = "lora"  # lora | full
    frames: int | None = None  # default: 16 (tiny) / 25 (svd-xt)
    height: int | None = None  # default: 64 (tiny) / 576 (svd-xt)
    width: int | None = None  # default: 64 (tiny) / 1024 (svd-xt)
    batch: int = 1
    lora_rank: int = 16
    mixed_precision: str = "auto"  # auto: bf16 on CUDA/ROCm, no on CPU (no fast bf16 on most CPUs)
    gradient_checkpointing: bool | str | None = None  # false | true | full; default: full for svd-xt, off for tiny
    warmup: int = 2
    steps: int = 5
    seed: int = 0

    def resolved(self, device: torch.device) -> BenchSetup:
        big = self.preset == "svd-xt"
        return BenchSetup(
            preset=self.preset, technique=self.technique, frames=self.frames or (SVD_XT_FRAMES if big else 16),
            height=self.height or (SVD_XT_SIZE[0] if big else 64),
            width=self.width or (SVD_XT_SIZE[1] if big else 64),
            batch=self.batch, lora_rank=self.lora_rank,
            mixed_precision=(("bf16" if device.type == "cuda" else "no") if self.mixed_precision == "auto"
                             else self.mixed_precision),
            gradient_checkpointing=("full" if big else False) if self.gradient_checkpointing is None
            else self.gradient_checkpointing,
            warmup=self.warmup, steps=self.steps, seed=self.seed)


# ------------------------------------------------------------------ models

def build_bench_pipeline(preset: str, device) -> object:
    if preset == "svd-xt":
        return build_svd_xt_random(device)
    if preset == "tiny":
        if (TINY_SVD_DIR / "model_index.json").is_file():
            return load_pipeline(TINY_SVD_DIR, device=device, dtype=torch.float32)
        return build_tiny_pipeline().to(device)
    raise ValueError(f"preset {preset!r}: use tiny or svd-xt")


# ------------------------------------------------------------------ memory

class PeakMemory:
    """Peak memory of a block: GPU ``max_memory_allocated``, or CPU resident set size
    sampled every 5 ms from ``/proc/self/status`` (Linux)."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = self.rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss())
        return False


# ------------------------------------------------------------------ the two loops

def _random_clips(s: BenchSetup, device, n: int):
    g = torch.Generator().manual_seed(s.seed)
    video = torch.rand((n, s.frames, 3, s.height, s.width), generator=g) * 2 - 1
    return video.to(device)


def _make_trainable(unet, s: BenchSetup):
    return apply_technique(unet, TrainConfig(technique=s.technique, lora_rank=s.lora_rank, init_from="bench"))


def _optimizer(unet):
    return torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-5)


def _time_steps(step_fn, s: BenchSetup, device) -> list[float]:
    times = []
    for i in range(s.warmup + s.steps):
        sync(device)
        t = time.perf_counter()
        step_fn(i)
        sync(device)
        if i >= s.warmup:
            times.append(time.perf_counter() - t)
    return times


def naive_step_fn(pipe, s: BenchSetup, video):
    """The seed's loop: fp32, encoders every step, no checkpointing."""
    ocfg, unet = ObjectiveConfig(), pipe.unet
    opt = _optimizer(unet)

    def step(i):
        x = video[(i * s.batch) % len(video):][: s.batch]
        with torch.no_grad():
            latents = encode_video_latents(pipe.vae, x)
            embeds = encode_clip(pipe.image_encoder, clip_pixels(x[:, 0], pipe.feature_extractor))
        img_lat, aug = condition_on_first_frame(pipe.vae, x[:, 0], ocfg)
        loss = training_loss(unet, latents, img_lat, aug, embeds, BENCH_FPS, BENCH_BUCKET, ocfg)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


class InMemoryClips:
    """Clips already in memory, ``videos`` ``(N, F, 3, H, W)`` in [-1, 1], all with one ``fps`` and
    ``motion_bucket_id``, as a dataset the trainer's own cache takes (what it needs is listed in
    :class:`~i2v_helpers.encoded.EncodedClips`): the benchmark encodes its random clips that way."""

    deterministic = True  # an item is its stored clip, whatever the epoch

    def __init__(self, videos: torch.Tensor, fps: float, motion_bucket_id: float):
        self.videos, self.fps, self.motion_bucket_id = videos, fps, motion_bucket_id

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict:
        """Clip ``i`` as :class:`~i2v_helpers.data.VideoClipDataset` gives one: its first frame is the image."""
        return {"video": self.videos[i], "image": self.videos[i][0], "fps": self.fps,
                "motion_bucket_id": self.motion_bucket_id}

    def fingerprint(self) -> str:
        """A hash of the clips' shape and values and their conditioning (for a disk cache)."""
        h = hashlib.sha256(self.videos.detach().float().cpu().numpy().tobytes())
        h.update(f"{tuple(self.videos.shape)}:{self.fps}:{self.motion_bucket_id}".encode())
        return h.hexdigest()


def trainer_step_fn(pipe, s: BenchSetup, video):
    """The trainer's step: the trainer's cache and batch collation, mixed precision with frozen
    weights in the low-precision dtype, checkpointing as set."""
    dev = video.device
    wdt = PRECISION_DTYPES[s.mixed_precision]
    if wdt != torch.float32:
        pipe.vae.to(dtype=wdt)
        pipe.image_encoder.to(dtype=wdt)
    cast_frozen_weights(pipe.unet, wdt)
    enable_checkpointing(pipe.unet, s.gradient_checkpointing)
    clips = InMemoryClips(video, BENCH_FPS, BENCH_BUCKET)
    cache = EncodedClips(clips, pipe, "memory", log=lambda *a: None)  # computed once, outside the timed steps
    ocfg, unet = ObjectiveConfig(), pipe.unet
    opt = _optimizer(unet)
    autocast = torch.autocast(dev.type, dtype=wdt, enabled=wdt != torch.float32)

    def step(i):
        batch = collate([cache[(i * s.batch + j) % len(cache)] for j in range(s.batch)])
        batch = {k: v.to(dev) for k, v in batch.items()}
        batch["latents"] = batch["latents"].to(wdt)
        with autocast:
            loss = batch_loss(pipe, unet, batch, ocfg)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def model_flops_per_step(pipe, s: BenchSetup, device) -> float:
    """Model FLOPs of one training step: a forward pass counted by
    ``torch.utils.flop_counter`` × 3 for full fine-tuning (forward, input and weight
    gradients) or × 2 for LoRA (the frozen weights need no weight gradients).
    Recomputation under gradient checkpointing is not counted (MFU convention)."""

    unet = pipe.unet
    c = unet.config
    h, w = s.height // pipe.vae_scale_factor, s.width // pipe.vae_scale_factor
    dt = next(unet.parameters()).dtype
    x = torch.randn(s.batch, s.frames, c.in_channels, h, w, device=device, dtype=dt)
    t = torch.ones(s.batch, device=device, dtype=dt)
    emb = torch.randn(s.batch, 1, c.cross_attention_dim, device=device, dtype=dt)
    ids = torch.ones(s.batch, 3, device=device, dtype=dt)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, torch.autocast(device.type, dtype=torch.bfloat16,
                                                     enabled=s.mixed_precision == "bf16"):
        unet(x, t, encoder_hidden_states=emb, added_time_ids=ids)
    return counter.get_total_flops() * (3 if s.technique == "full" else 2)


def _run_one(kind: str, s: BenchSetup, device, flops: bool = False) -> dict:
    pipe = build_bench_pipeline(s.preset, device)
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.requires_grad_(False)
    pipe.image_encoder.requires_grad_(False)
    report = _make_trainable(pipe.unet, s)
    video = _random_clips(s, device, max(2, s.batch))
    row = {"trainable": report["trainable"], "trainable_percent": round(report["share_percent"], 3)}
    try:
        with PeakMemory(device) as mem:
            fn = (naive_step_fn if kind == "naive" else trainer_step_fn)(pipe, s, video)
            times = _time_steps(fn, s, device)
        step_s = statistics.median(times)
        row.update(step_s=step_s, samples_per_s=s.batch / step_s, peak_mem_bytes=mem.peak,
                   step_times=[round(t, 4) for t in times])
        if flops:  # counted on the model just timed (its LoRA, dtypes and all)
            f = model_flops_per_step(pipe, s, device)
            row.update(model_tflop_per_step=f / 1e12, achieved_tflops=f / step_s / 1e12)
            peak = _peak_tflops(device)
            if peak:
                row["mfu"] = row["achieved_tflops"] / peak
    except torch.OutOfMemoryError as e:
        row.update(step_s=None, samples_per_s=None, peak_mem_bytes=None, error=f"out of memory: {str(e)[:200]}")
    del pipe, video
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def bench_train(setup: BenchSetup, device=None, modes=("naive", "trainer"), flops: bool = True) -> dict:
    """Run the naive loop and the trainer on the same setup; returns
    ``{"setup", "naive", "trainer", "speedup", "device", ...}``."""
    device = torch.device(device or pick_device().device)
    s = setup.resolved(device)
    if device.type == "cuda":
        enable_tf32()
    out = {"setup": {k: getattr(s, k) for k in s.__dataclass_fields__}, "device": describe(device),
           "torch": torch.__version__}
    for kind in modes:
        torch.manual_seed(s.seed)
        out[kind] = _run_one(kind, s, device, flops=flops and kind == "trainer")
    n, t = out.get("naive", {}), out.get("trainer", {})
    out["speedup"] = (t["samples_per_s"] / n["samples_per_s"]
                      if n.get("samples_per_s") and t.get("samples_per_s") else None)
    return out


def _peak_tflops(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, v in PEAK_BF16_TFLOPS.items():
        if key in name:
            return v
    return None


def format_bench(res: dict) -> str:
    """Two rows (naive, trainer) and the ratio, as a plain-text table."""
    s = res["setup"]
    lines = [f"{res['device']} | {s['preset']} {s['technique']} | batch {s['batch']} × {s['frames']} frames × "
             f"{s['height']}×{s['width']} | trainer: {s['mixed_precision']}, checkpointing "
             f"{s['gradient_checkpointing'] or 'off'}",
             f"{'loop':<8} {'step s':>8} {'samples/s':>10} {'peak mem':>10}"]
    for kind in ("naive", "trainer"):
        r = res.get(kind)
        if not r:
            continue
        if r.get("error"):
            lines.append(f"{kind:<8} {r['error'][:60]}")
            continue
        gib = r["peak_mem_bytes"] / 2**30
        lines.append(f"{kind:<8} {r['step_s']:>8.3f} {r['samples_per_s']:>10.3f} {gib:>8.2f} GiB")
    if res.get("speedup"):
        lines.append(f"speedup (trainer / naive samples/s): {res['speedup']:.2f}×")
    t = res.get("trainer", {})
    if t.get("achieved_tflops"):
        mfu = f", MFU {t['mfu'] * 100:.1f} %" if t.get("mfu") else ""
        lines.append(f"model FLOPs/step {t['model_tflop_per_step']:.2f} TFLOP, "
                     f"achieved {t['achieved_tflops']:.2f} TFLOP/s{mfu}")
    return "\n".join(lines)


# ------------------------------------------------------------------ sampling

def bench_sample(model=None, steps: int = 25, frames: int | None = None, repeats: int = 3, device=None,
                 compile: bool = False) -> dict:
    """Seconds per generated video: :func:`i2v_helpers.generation.generate` against a plain
    ``StableVideoDiffusionPipeline.__call__`` with the same settings and seed (median of
    ``repeats`` after one warm-up each). ``compile`` wraps the UNet in ``torch.compile``."""

    spec = pick_device()
    device = torch.device(device or spec.device)
    dtype = spec.dtype if device.type != "cpu" else torch.float32
    pipe = load_pipeline(model or TINY_SVD_DIR, device=device, dtype=dtype)
    if compile:
        pipe.unet = torch.compile(pipe.unet)
    model_frames, height, width = model_geometry(pipe)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    frames = frames or model_frames

    def plain():
        pipe(as_pil(image), height=height, width=width, num_frames=frames, num_inference_steps=steps,
             generator=torch.Generator("cpu").manual_seed(0), output_type="np")

    def package():
        generate(pipe, image, num_frames=frames, steps=steps, seed=0)

    res = {"device": describe(device), "frames": frames, "steps": steps, "compile": compile}
    for name, fn in (("plain_diffusers", plain), ("package", package)):
        fn()  # warm-up (and compilation)
        times = []
        for _ in range(repeats):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t)
        res[name] = {"median_s": statistics.median(times), "times": [round(t, 4) for t in times]}
    res["ratio"] = res["package"]["median_s"] / res["plain_diffusers"]["median_s"]
    return res


# ------------------------------------------------------------------ the tiny base's pre-training step

def unet_throughput(model: str = "v2", batch: int = 32, precision: str = "auto", seconds: float = 20.0,
                    device: str = "auto", compile: bool = False, frames: int | None = None) -> dict:
    """Clips/s of the tiny SVD pre-training's UNet step (``i2v pretrain throughput``): UNet + CLIP
    tower trained jointly, the first frames encoded with fresh noise augmentation every step, random
    weights and latents, to compare recipes on one machine: ``model`` (a ``TINY_PRESETS`` key),
    ``batch``, ``frames`` (default: the model's), ``precision`` (``auto``: bf16 autocast on CUDA,
    else fp32) and ``compile``. The pre-training itself caches the first frames' latents
    (:func:`i2v_helpers.pretrain.cache_unet_inputs`); ``benchmarks/profile_pretrain.py`` times both."""
    dev = torch.device(pick_device().device if device == "auto" else device)
    if dev.type == "cuda":
        enable_tf32()
    bf16 = precision == "bf16" or (precision == "auto" and dev.type == "cuda")
    mc = TINY_PRESETS[model]
    pipe = build_tiny_pipeline(mc).to(dev)
    pipe.vae.requires_grad_(False)
    unet = torch.compile(pipe.unet) if compile else pipe.unet
    n, f = mc.latent_size, frames or mc.num_frames
    latents = torch.randn(batch, f, mc.latent_channels, n, n, device=dev)
    first = torch.rand(batch, 3, mc.resolution, mc.resolution, device=dev) * 2 - 1
    fps = torch.full((batch,), BENCH_FPS, device=dev)
    bucket = torch.full((batch,), float(BENCH_BUCKET), device=dev)
    params = list(pipe.unet.parameters()) + list(pipe.image_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)  # unfused, no clipping: as measured in benchmarks/RESULTS.md
    ocfg = ObjectiveConfig()

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            img_lat, aug = condition_on_first_frame(pipe.vae, first, ocfg)
            embeds = encode_clip(pipe.image_encoder, clip_pixels(first, pipe.feature_extractor))
            loss = training_loss(unet, latents, img_lat.float(), aug, embeds, fps, bucket, ocfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up (and compilation)
        step()
    sync(dev)
    t0, steps = time.time(), 0
    while time.time() - t0 < seconds:
        step()
        steps += 1
    sync(dev)
    dt = time.time() - t0
    mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    return {"model": model, "batch": batch, "frames": f, "precision": precision, "compile": compile,
            "steps": steps, "step_s": dt / steps, "samples_per_s": batch * steps / dt, "peak_gib": mem,
            "machine": describe(dev)}
