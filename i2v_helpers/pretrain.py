"""The recipe that makes the shipped tiny SVD base model (``data_samples/models/tiny-svd``).

It is run by the project (``i2v pretrain``), never by the course. One corpus, three phases:

0. **Corpus**: ``corpus_clips`` clips made by :mod:`i2v_helpers.synth` (every synthetic
   family, plus real-footage cuts), generated in parallel by ``DataLoader`` workers and kept
   in memory as ``uint8`` ``(N, F, H, W, 3)`` (on the GPU when training there), with each
   clip's fps and motion bucket. Clip ``i`` depends only on ``(seed, i)``, so a resumed or
   re-run build sees the same corpus whatever the number of workers.
1. **VAE**: the tiny ``AutoencoderKLTemporalDecoder`` learns to reconstruct windows of
   ``vae_frames`` frames with L1 + MSE and a small KL term. Its ``scaling_factor`` is then
   set to 1 / std of the latents, so scaled latents have unit variance as EDM
   (sigma_data = 1) assumes.
2. **UNet + CLIP tower**: the corpus is encoded once (scaled latents cached), then the
   UNet and the tiny CLIP tower train jointly with the SVD objective of
   :mod:`i2v_helpers.objective`. (The real SVD's CLIP is pre-trained and frozen; the tiny
   tower has nothing to start from, so it learns here, and is frozen in every later fine-tune.)
3. **Decoder**: the VAE decoder alone (encoder frozen, so the UNet's latents stay valid)
   on 16-frame windows, as the pipeline decodes them.

Built for throughput on a GPU: batches of whole clips, bf16 autocast (``precision``),
optional ``torch.compile`` of the UNet, no data loading inside the loop. Every phase is
time-budgeted (its learning rate follows warm-up + cosine over the phase's minutes) and
checkpoints every ``checkpoint_minutes`` (model in safetensors, optimizer state, elapsed
time), so an interrupted build continues where it stopped (rerun the same command), phases
already done are skipped, and a phase given more minutes than it has run continues (the
cosine stretched to the new length). Each phase logs samples/s.

Introduced in notebook 03 (inside SVD); the model card records the settings and times.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from transformers import CLIPVisionModelWithProjection

from . import synth
from .bench import unet_throughput
from .config import check_fields, parse_overrides
from .device import describe, enable_tf32, pick_device
from .frames import to_model_range
from .models import (
    TINY_MODEL_DIR,
    TINY_PRESETS,
    build_tiny_pipeline,
    vae_reconstruct,
)
from .motion import motion_bucket, motion_score
from .objective import (
    ObjectiveConfig,
    clip_pixels,
    condition_on_first_frame,
    encode_clip,
    encode_image_latents,
    sample_noise_aug,
    training_loss,
)
from .probe import learning_curve_probe, probe_items

PHASES = ("vae", "unet", "decoder")
FOOTAGE = ("bikes", "bigbuckbunny")


@dataclass
class PretrainConfig:
    out_dir: str = TINY_MODEL_DIR
    work_dir: str = "runs/pretrain"
    model: str = "v2"  # a key of models.TINY_PRESETS
    seed: int = 0
    corpus_clips: int = 600  # clips generated for all phases (1/12 from each real footage)
    rule_prob: float = 0.8  # share of `shapes` clips that keep the colour -> direction rule (v1 was built with 0.5)
    workers: int = 0  # DataLoader workers generating the corpus (0: in this process)
    device: str = "auto"  # auto = cuda/mps when present, else cpu (the 2-core recipe)
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 elsewhere (bf16 is slower on CPU) | fp32 | bf16
    compile: bool = False  # torch.compile the UNet (GPU; costs a minute of compilation)
    init_from: str = ""  # a pipeline folder to start from (train the shipped base longer); "" = random weights
    threads: int = 2
    checkpoint_minutes: float = 2.0
    probe_minutes: float = 20.0  # UNet phase: the learning-curve probe every this many training minutes (0: off)
    probe_clips: int = 16  # held-out `general` clips with objects the probe scores (the CPU build's arms and trunk: 8)
    probe_seeds: int = 1  # seeds per probe clip (the SEs are over clips: seeds of one clip are averaged first)
    vae_probe_minutes: float = 5.0  # VAE phase: held-out PSNR every this many minutes (0: off)
    vae_target_db: float = 0.0  # end the VAE phase once held-out PSNR reaches this (0: run all its minutes)
    vae_heldout_clips: int = 24  # held-out clips of the VAE and decoder phases' final PSNR (VAE probe: the first 8)
    vae_minutes: float = 20.0
    vae_lr: float = 3e-4  # 1e-3 stalls at the mean colour (measured)
    vae_batch_clips: int = 4
    vae_frames: int = 4
    vae_crop: int = 32  # random square crops (the VAE is fully convolutional); 0 = whole frames
    vae_kl_weight: float = 1e-6
    vae_temporal_weight: float = 0.0  # L1 on frame-to-frame differences (rec vs input): penalises shimmer
    unet_minutes: float = 40.0
    unet_lr: float = 3e-4
    unet_batch: int = 4  # clips per step at 16 frames; a curriculum stage of F frames takes unet_batch * 16 // F
    unet_curriculum: str = ""  # frames per clip over the phase, e.g. "4:0.5,16": 4 frames for the first half, then 16
    unet_p_mean: float = 0.7  # ln sigma ~ N(unet_p_mean, unet_p_std²) (SVD fine-tuning: 0.7, 1.6; EDM: -1.2, 1.2)
    unet_p_std: float = 1.6
    unet_weighting: str = "edm"  # edm | min_snr (ObjectiveConfig.weighting)
    unet_decay_minutes: float = 0.0  # 0: cosine over the phase; > 0: constant lr, linear decay over its last minutes
    stop_after_minutes: float = 0.0  # > 0: this run stops (checkpointed, resumable) once the phase has trained so long
    probe_at_start: bool = True  # probe before the first step (an ablation arm branched from a probed run: False)
    image_aug_draws: int = 4  # noise-augmented first-frame latents cached per clip (the UNet step draws one)
    decoder_minutes: float = 5.0
    decoder_frames: int = 16  # the pipeline decodes 16 frames in one chunk
    decoder_batch_clips: int = 2


# ----------------------------------------------------------------------- setup

def _device(cfg: PretrainConfig) -> torch.device:
    dev = torch.device(pick_device().device if cfg.device == "auto" else cfg.device)
    if dev.type == "cuda":
        enable_tf32()
    return dev


def autocast(cfg: PretrainConfig, dev: torch.device):
    """bf16 autocast where ``precision`` asks for it (``auto``: on CUDA only), else a no-op."""
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")
    return torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def lr_at(base: float, frac: float, floor: float) -> float:
    """Warm-up over the first 3 % of a phase, then cosine down to ``floor × base``."""
    return base * min(1.0, frac / 0.03) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def wsd_lr_at(base: float, seconds: float, budget: float, decay: float, floor: float, warmup: float = 60.0) -> float:
    """Warm-up, stable, decay: linear warm-up over ``warmup`` s, then ``base`` until the last ``decay``
    seconds of ``budget``, then linear down to ``floor × base``. For a build whose length is decided
    from its learning curve: raising ``budget`` before the decay starts changes nothing so far."""
    start = budget - decay
    tail = 1.0 if seconds < start else max(floor, 1 - (1 - floor) * (seconds - start) / max(decay, 1e-9))
    return base * min(1.0, seconds / warmup) * tail


# ----------------------------------------------------------------------- corpus

class SyntheticClips(torch.utils.data.Dataset):
    """Item ``i``: ``(uint8 (F, H, W, 3), motion bucket)`` of ``synth.clip_pretrain`` seeded by ``(seed, i)``."""

    def __init__(self, n: int, seed: int, size: int = 64, frames: int = 16, rule_prob: float = 0.5):
        self.n, self.seed, self.size, self.frames, self.rule_prob = n, seed, size, frames, rule_prob

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        clip = synth.clip_pretrain(np.random.default_rng([self.seed, i]), self.size, self.frames, self.rule_prob)[0]
        return clip, motion_bucket(motion_score(clip), self.size)


def _worker_init(_):
    cv2.setNumThreads(1)  # one thread per worker: OpenCV's own pool oversubscribes 16 workers × 16 cores


def _stack(items):
    """Collate to numpy: worker results travel through a pipe, not /dev/shm (often tiny in containers)."""
    return np.stack([c for c, _ in items]), np.array([b for _, b in items])


def make_corpus(n: int, seed: int, workers: int = 0, size: int = 64, frames: int = 16, log=print,
                rule_prob: float = 0.5) -> dict:
    """The pre-training corpus: ``clips`` ``uint8`` ``(N, F, H, W, 3)``, ``fps`` and ``bucket`` ``(N,)``.

    ``n - 2 n // 12`` synthetic clips (made by ``workers`` processes) and ``n // 12`` cuts of
    each real footage (skipped, with a message, where its files are missing), shuffled.
    """
    t = time.time()
    n_foot = n // 12
    # spawned workers: a forked child inherits OpenCV's thread pool and can deadlock in it (seen here
    # once this process had used OpenCV). Spawning needs an importable __main__ (a script, the CLI).
    loader = torch.utils.data.DataLoader(SyntheticClips(n - 2 * n_foot, seed, size, frames, rule_prob), batch_size=32,
                                         num_workers=workers, collate_fn=_stack, worker_init_fn=_worker_init,
                                         multiprocessing_context="spawn" if workers else None)
    clips, buckets = [], []
    for c, b in loader:
        clips.append(c)
        buckets.append(b)
        if len(clips) % 50 == 0:
            done = 32 * len(clips)
            log(f"[corpus] {done}/{n - 2 * n_foot} synthetic clips, {done / (time.time() - t):.0f} clips/s")
    fps = [synth.SYNTHETIC_FPS] * sum(len(c) for c in clips)
    rng = np.random.default_rng([seed, n])
    for name in FOOTAGE if n_foot else ():  # fewer than 12 clips: synthetic only
        try:
            cuts = np.stack(synth.footage_clips(name, rng, n_foot, size=size, frames=frames))
        except (FileNotFoundError, ImportError) as e:
            log(f"[corpus] skipping {name} footage: {e}")
            continue
        clips.append(cuts)
        buckets.append(np.array([motion_bucket(motion_score(c), size) for c in cuts]))
        fps += [synth.FOOTAGE_FPS] * len(cuts)
    clips, buckets, fps = np.concatenate(clips), np.concatenate(buckets), np.array(fps)
    order = rng.permutation(len(clips))
    log(f"[corpus] {clips.shape} in {time.time() - t:.0f}s ({workers} workers)")
    return {"clips": torch.from_numpy(clips[order]), "fps": torch.from_numpy(fps[order]).float(),
            "bucket": torch.from_numpy(buckets[order]).float()}


def kept_on_disk(f: Path, key: dict, make, log=print) -> dict:
    """``make()`` (a dict of tensors), kept in ``f`` with ``key``: read back while the file's key equals
    ``key``, else made again and written atomically. A link is written through, so ablation arms whose
    work folders link to the build's files share them."""
    f = f.resolve()
    if f.is_file():
        cached = torch.load(f, weights_only=True)
        if cached.get("key") == key:
            log(f"[cache] {f.name} from {f}")
            return cached
    out = {**make(), "key": key}
    tmp = f.parent / f".{f.stem}.tmp"
    torch.save(out, tmp)
    tmp.replace(f)
    return out


def cached_corpus(work: Path, n: int, seed: int, workers: int = 0, size: int = 64, frames: int = 16,
                  log=print, rule_prob: float = 0.5) -> dict:
    """:func:`make_corpus`, kept in ``work/corpus.pt`` (:func:`kept_on_disk`) so that a resumed phase or
    an ablation arm skips generating it again; a different ``n``, ``seed``, ``size``, ``frames`` or
    ``rule_prob`` makes a new one."""
    key = {"n": n, "seed": seed, "size": size, "frames": frames, "rule_prob": rule_prob}
    return kept_on_disk(work / "corpus.pt", key, lambda: make_corpus(n, seed, workers, size, frames, log, rule_prob),
                        log)


def heldout_clips(n: int = 24, seed: int = 10_000) -> np.ndarray:
    """Held-out ``general`` clips (seeds never used by the corpus) for the quality checks."""
    rng = np.random.default_rng(seed)
    return np.stack([synth.clip_general(rng)[0] for _ in range(n)])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def vae_psnr(vae, clips: np.ndarray) -> float:
    """Mean PSNR (dB) of VAE reconstructions of whole 16-frame clips at full size."""
    return float(np.mean([psnr(vae_reconstruct(vae, to_model_range(c)).cpu(), to_model_range(c)) for c in clips]))


# ----------------------------------------------------------------------- checkpoints

def save_phase(work: Path, phase: str, models: dict, opt, state: dict) -> None:
    """Atomically write ``work/phase/``: each model (``save_pretrained``, safetensors), the
    optimizer state and ``state.json`` (steps, elapsed seconds, done)."""
    tmp, final = work / f".{phase}.tmp", work / phase
    shutil.rmtree(tmp, ignore_errors=True)
    for name, m in models.items():
        m.save_pretrained(tmp / name, safe_serialization=True)
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    old = work / f".{phase}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)  # a kill before this line leaves .old, which load_phase_state falls back to
    shutil.rmtree(old, ignore_errors=True)


def keep_phase(work: Path, phase: str, dest: Path, half: tuple[str, ...] = ()) -> Path:
    """A copy of ``work/phase/`` that a fresh machine resumes from (:func:`restore_phase`): its models
    (safetensors; those named in ``half`` stored in fp16, read back as fp32) and ``state.json``, without
    the optimizer state. Written atomically to ``dest/phase/``. The CPU build commits it at the end of
    each session (``benchmarks/v2_cpu_build.sh keep``), since a session's work folder may not survive."""
    if load_phase_state(work, phase) is None:
        raise FileNotFoundError(f"{work / phase} has no checkpoint to keep (run the phase first)")
    tmp, final = dest / f".{phase}.tmp", dest / phase
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in sorted(p for p in (work / phase).iterdir() if (p / "config.json").is_file()):
        model = _load_models(work / phase, [folder.name])[folder.name]
        model.to(torch.float16 if folder.name in half else torch.float32)
        model.save_pretrained(tmp / folder.name, safe_serialization=True)
    shutil.copy(work / phase / "state.json", tmp / "state.json")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def restore_phase(kept: Path, work: Path, phase: str) -> bool:
    """Seed ``work/phase/`` from a :func:`keep_phase` copy when the work folder has no checkpoint of
    that phase; the phase then resumes from it with a fresh optimizer (re-warmed, see
    :func:`_train_loop`). Returns whether it restored."""
    if load_phase_state(work, phase) is not None or not (kept / phase / "state.json").is_file():
        return False
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(kept / phase, work / f".{phase}.tmp", dirs_exist_ok=True)
    (work / f".{phase}.tmp").rename(work / phase)
    return True


def load_phase_state(work: Path, phase: str) -> dict | None:
    """The phase's ``state.json`` (``None`` before its first checkpoint)."""
    old = work / f".{phase}.old"
    if not (work / phase).is_dir() and old.is_dir():
        old.rename(work / phase)
    f = work / phase / "state.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _load_models(folder: Path, names) -> dict:
    """fp32 models ``names`` (``vae``, ``unet``, ``image_encoder``) from ``folder/name/`` (safetensors)."""

    cls = {"vae": AutoencoderKLTemporalDecoder, "unet": UNetSpatioTemporalConditionModel,
           "image_encoder": CLIPVisionModelWithProjection}
    return {n: cls[n].from_pretrained(folder / n, dtype=torch.float32, use_safetensors=True) for n in names}


def start_models(cfg: PretrainConfig, phase: str, names) -> dict:
    """Where a phase's models start: its own checkpoint, else (the decoder phase) the VAE phase's
    result, else ``init_from``, else a random tiny SVD of ``cfg.model``."""
    work = Path(cfg.work_dir)
    for folder in ([work / phase] + ([work / "vae"] if phase == "decoder" else [])):
        if (folder / "state.json").is_file():
            return _load_models(folder, names)
    if cfg.init_from:
        return _load_models(Path(cfg.init_from), names)
    pipe = build_tiny_pipeline(TINY_PRESETS[cfg.model], seed=cfg.seed)
    return {n: getattr(pipe, n) for n in names}


# ----------------------------------------------------------------------- the phases

def append_curve(work: Path, phase: str, state: dict, metrics: dict) -> None:
    """Append the probe's ``metrics`` to ``work/curve.csv`` (long format: one row per metric), the
    build's learning curve: phase, step, training seconds of the phase, metric, value, wall-clock time."""
    f = work / "curve.csv"
    new = not f.is_file()
    with f.open("a") as fh:
        if new:
            fh.write("phase,step,seconds,metric,value,time\n")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        for k, v in metrics.items():
            fh.write(f"{phase},{state['steps']},{state['seconds']:.0f},{k},{v:.6g},{stamp}\n")


def _train_loop(phase: str, step_fn, params, lr: float, floor: float, minutes: float, cfg: PretrainConfig,
                work: Path, models: dict, samples_per_step: int, log=print, probe=None,
                probe_minutes: float = 0.0, decay_minutes: float = 0.0) -> dict:
    """The shared time-budgeted loop: lr schedule over ``minutes``, checkpoints, resume, samples/s.

    ``probe(state) -> dict`` runs every ``probe_minutes`` of training time (its own time is not
    counted); its metrics go to ``work/curve.csv``. A probe that returns ``{"stop": True, ...}``
    ends the phase (marked ``done``: a rerun does not continue it)."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2 if phase == "unet" else 0.0,
                            fused=params[0].is_cuda or None)  # one kernel per step on CUDA
    state = load_phase_state(work, phase) or {"steps": 0, "seconds": 0.0}
    if state["steps"] and (work / phase / "optimizer.pt").is_file():
        opt.load_state_dict(torch.load(work / phase / "optimizer.pt", weights_only=True))
        log(f"[{phase}] resuming at step {state['steps']} ({state['seconds']:.0f}s of {minutes * 60:.0f}s)")
    elif state["steps"]:  # restored from a kept copy (restore_phase): Adam's moments start again at 0
        state["rewarm_from_s"] = state["seconds"]
        log(f"[{phase}] resuming at step {state['steps']} from weights only: fresh optimizer, lr re-warmed over 60 s")
    budget, hist = minutes * 60, []
    t0, last_ckpt, done0 = time.time(), time.time(), state["seconds"]
    first_probe = done0 if cfg.probe_at_start else done0 + probe_minutes * 60
    next_probe = state.get("next_probe_s", first_probe) if probe_minutes else math.inf
    if probe_minutes:  # saved with every checkpoint, so a resume before the first probe keeps its time
        state["next_probe_s"] = next_probe
    stop_s = cfg.stop_after_minutes * 60 if cfg.stop_after_minutes else math.inf
    while (elapsed := done0 + time.time() - t0) < min(budget, stop_s):
        if probe is not None and elapsed >= next_probe:
            tp = time.time()
            metrics = probe(dict(state, seconds=elapsed))
            stop = metrics.pop("stop", False)
            append_curve(work, phase, dict(state, seconds=elapsed), metrics)
            log(f"[{phase}] probe at step {state['steps']}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            next_probe = elapsed + probe_minutes * 60
            state["next_probe_s"] = next_probe
            t0 += time.time() - tp  # probe time is not training time
            if stop:
                state["done"] = True
                log(f"[{phase}] target reached at step {state['steps']}: phase done")
                break
        rewarm = min(1.0, (elapsed - state.get("rewarm_from_s", -math.inf)) / 60)
        for g in opt.param_groups:
            g["lr"] = rewarm * (wsd_lr_at(lr, elapsed, budget, decay_minutes * 60, floor) if decay_minutes
                                else lr_at(lr, elapsed / budget, floor))
        loss = step_fn(state["steps"], elapsed / budget)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state["steps"] += 1
        hist.append(loss.detach())
        if state["steps"] % 100 == 0:
            rate = len(hist) * samples_per_step / (time.time() - t0)
            log(f"[{phase}] step {state['steps']} {elapsed:.0f}s loss {torch.stack(hist[-100:]).mean().item():.4f} "
                f"{rate:.0f} samples/s")
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
            save_phase(work, phase, models, opt, dict(state, seconds=done0 + time.time() - t0))
            last_ckpt = time.time()
    run_s = time.time() - t0
    final_loss = torch.stack(hist[-100:]).mean().item() if hist else None
    state.update(seconds=done0 + run_s, minutes=minutes, final_loss=final_loss,
                 samples_per_s=round(len(hist) * samples_per_step / max(run_s, 1e-9), 1), lr=lr)
    save_phase(work, phase, models, opt, state)
    return state


def run_vae_phase(cfg: PretrainConfig, corpus: dict, log=print) -> dict:
    """Phase 1: reconstruction training, then ``scaling_factor`` = 1 / latent std."""
    work, dev = Path(cfg.work_dir), _device(cfg)
    prev = load_phase_state(work, "vae")
    vae = start_models(cfg, "vae", ["vae"])["vae"].to(dev).train()
    clips = corpus["clips"].to(dev)
    g = torch.Generator(device=dev).manual_seed(cfg.seed + 1 + (prev or {}).get("steps", 0))
    n, f_all, size = clips.shape[:3]
    crop = cfg.vae_crop or size

    def step(_, __):
        idx = torch.randint(0, n, (cfg.vae_batch_clips, 1), generator=g, device=dev)
        f0 = torch.randint(0, f_all - cfg.vae_frames + 1, (cfg.vae_batch_clips, 1), generator=g, device=dev)
        y0, x0 = torch.randint(0, size - crop + 1, (2,), generator=g, device=dev).tolist()
        x = clips[idx, f0 + torch.arange(cfg.vae_frames, device=dev)][:, :, y0:y0 + crop, x0:x0 + crop]
        x = to_model_range(x.flatten(0, 1))  # (B*F, 3, h, w)
        with autocast(cfg, dev):
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.mode(), num_frames=cfg.vae_frames).sample.float()
        loss = F.mse_loss(rec, x) + F.l1_loss(rec, x) + cfg.vae_kl_weight * post.kl().float().mean()
        if cfg.vae_temporal_weight > 0:
            loss = loss + cfg.vae_temporal_weight * temporal_difference_loss(rec, x, cfg.vae_frames)
        return loss

    heldout = heldout_clips(cfg.vae_heldout_clips)
    probe_clips = heldout[:8]

    def probe(_state):
        vae.eval()
        db = vae_psnr(vae, probe_clips)
        vae.train()
        return {"vae_psnr_db": db, "stop": bool(cfg.vae_target_db) and db >= cfg.vae_target_db}

    state = _train_loop("vae", step, list(vae.parameters()), cfg.vae_lr, 0.05, cfg.vae_minutes, cfg, work,
                        {"vae": vae}, cfg.vae_batch_clips * cfg.vae_frames, log, probe, cfg.vae_probe_minutes)
    vae.eval()
    std = latent_std(vae, corpus["clips"][:64])
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    state.update(latent_std=std, scaling_factor=vae.config.scaling_factor, machine=describe(dev),
                 batch=f"{cfg.vae_batch_clips} clips x {cfg.vae_frames} frames, {crop} px",
                 vae_psnr_db=vae_psnr(vae, heldout))
    vae.to("cpu").save_pretrained(work / "vae" / "vae", safe_serialization=True)
    (work / "vae" / "state.json").write_text(json.dumps(state, indent=2))
    log(f"[vae] done {state}")
    return state


def temporal_difference_loss(rec: torch.Tensor, x: torch.Tensor, frames: int) -> torch.Tensor:
    """L1 between the frame-to-frame changes of a reconstruction and of its input.

    ``rec``, ``x``: ``(B*F, 3, H, W)`` with ``F = frames`` consecutive frames per clip. Where the
    input is static its change is 0, so any shimmer the decoder adds between frames is penalised;
    the L1 keeps the penalty sparse. Optical flow reads shimmer as motion (see notebook 08).
    """
    r, t = rec.unflatten(0, (-1, frames)), x.unflatten(0, (-1, frames))  # (B, F, 3, H, W)
    return F.l1_loss(r[:, 1:] - r[:, :-1], t[:, 1:] - t[:, :-1])


@torch.no_grad()
def latent_std(vae, clips: torch.Tensor) -> float:
    """Std of the VAE's posterior-mode latents of ``clips`` ``uint8`` ``(N, F, H, W, 3)``."""
    zs = [vae.encode(to_model_range(c).to(vae.device)).latent_dist.mode() for c in clips]
    return torch.cat(zs).std().item()


@torch.no_grad()
def encode_corpus(vae, clips: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Scaled latents ``(N, F, C, h, w)`` (posterior mode) of ``uint8`` clips ``(N, F, H, W, 3)``."""
    out = []
    for i in range(0, len(clips), batch):
        x = to_model_range(clips[i:i + batch].to(vae.device).flatten(0, 1))
        z = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor
        out.append(z.unflatten(0, (-1, clips.shape[1])))
    return torch.cat(out)


def unet_phase_loss(pipe, unet, latents, first, fps, bucket, cfg: PretrainConfig, generator=None) -> torch.Tensor:
    """The UNet phase's loss of one batch, encoding the first frame every step (the reference the
    cached step of :func:`run_unet_phase` is measured against): ``latents`` ``(B, F, C, h, w)`` scaled,
    ``first`` ``(B, 3, H, W)`` in [-1, 1], ``fps`` and ``bucket`` ``(B,)``."""
    img_lat, aug = condition_on_first_frame(pipe.vae, first, unet_objective(cfg), generator)
    return cached_unet_loss(pipe, unet, latents, img_lat.float(), aug, first, fps, bucket, cfg, generator)


def cached_unet_loss(pipe, unet, latents, img_lat, aug, first, fps, bucket, cfg: PretrainConfig,
                     generator=None) -> torch.Tensor:
    """The UNet phase's loss with the conditioning image's latent given: ``img_lat`` ``(B, C, h, w)``
    (unscaled, encoded from ``first`` noised by ``aug`` ``(B,)``); other arguments as
    :func:`unet_phase_loss`. The CLIP tower trains with the UNet, so its embedding is computed here."""
    with autocast(cfg, first.device):
        embeds = encode_clip(pipe.image_encoder, clip_pixels(first, pipe.feature_extractor))
        return training_loss(unet, latents, img_lat, aug, embeds, fps, bucket, unet_objective(cfg), generator)


def unet_objective(cfg: PretrainConfig) -> ObjectiveConfig:
    """The SVD objective with the phase's noise distribution and loss weighting."""
    return ObjectiveConfig(p_mean=cfg.unet_p_mean, p_std=cfg.unet_p_std, weighting=cfg.unet_weighting)


def curriculum_frames(spec: str, frac: float, num_frames: int = 16) -> int:
    """Frames per clip at fraction ``frac`` of the phase: ``spec`` ``"F1:x1,F2:x2,...,Fn"`` trains
    ``F1`` frames until ``x1``, then ``F2`` until ``x2`` ..., then ``Fn``; ``""``: ``num_frames``."""
    if not spec:
        return num_frames
    for part in spec.split(","):
        frames, _, until = part.partition(":")
        if not until or frac < float(until):
            return int(frames)
    return num_frames


def check_curriculum(spec: str, num_frames: int) -> None:
    """Refuse a malformed ``unet_curriculum`` before any work is done."""
    try:
        parts = [p.partition(":") for p in spec.split(",")] if spec else []
        frames = [int(f) for f, _, _ in parts]
        ends = [float(u) for _, _, u in parts if u]
    except ValueError:
        raise ValueError(f"unet_curriculum {spec!r}: expected 'F:fraction,...,F', e.g. '4:0.5,16'") from None
    if any(not 1 <= f <= num_frames for f in frames) or ends != sorted(ends):
        raise ValueError(f"unet_curriculum {spec!r}: frames must be 1..{num_frames}, fractions increasing")


@torch.no_grad()
def cache_unet_inputs(vae, corpus: dict, work: Path, draws: int, seed: int, log=print) -> dict:
    """The UNet phase's inputs, encoded once and kept in ``work/latents.pt`` (reused while the VAE
    phase's checkpoint is unchanged): scaled ``latents`` ``(N, F, C, h, w)``, and per clip
    ``draws`` noise-augmented first-frame latents ``image_latents`` ``(N, K, C, h, w)`` with their
    strengths ``aug`` ``(N, K)`` (drawn as :func:`i2v_helpers.objective.sample_noise_aug` draws
    them), so no VAE runs inside the training step. Profiled: encoding the first frames was 19 %
    of a 16 × 4 step (``benchmarks/RESULTS.md``)."""
    vae_state = load_phase_state(work, "vae") or {}
    key = {"vae_steps": vae_state.get("steps"), "clips": len(corpus["clips"]), "draws": draws, "seed": seed}

    def encode():
        t = time.time()
        latents = encode_corpus(vae, corpus["clips"])
        first = to_model_range(corpus["clips"][:, 0])  # (N, 3, H, W)
        g = torch.Generator().manual_seed(seed + 5)
        augs = sample_noise_aug(len(first) * draws, ObjectiveConfig(), g).reshape(len(first), draws)
        img = torch.stack([torch.cat([encode_image_latents(vae, first[i:i + 64], augs[i:i + 64, k], g)
                                      for i in range(0, len(first), 64)]) for k in range(draws)], dim=1)
        log(f"[unet] encoded {tuple(latents.shape)} and {draws} first-frame draws per clip in {time.time() - t:.0f}s")
        return {"latents": latents, "image_latents": img, "aug": augs, "seconds": time.time() - t}

    return kept_on_disk(work / "latents.pt", key, encode, log)


def _probe_pipe(pipe):
    """A pipeline sharing the phase's models, for the probe (eval mode inside, train mode after)."""
    from diffusers import StableVideoDiffusionPipeline  # not at the top: see models.svd_pipeline

    probe_pipe = StableVideoDiffusionPipeline(vae=pipe.vae, image_encoder=pipe.image_encoder, unet=pipe.unet,
                                              scheduler=pipe.scheduler, feature_extractor=pipe.feature_extractor)
    probe_pipe.set_progress_bar_config(disable=True)
    return probe_pipe


def run_unet_phase(cfg: PretrainConfig, corpus: dict, log=print) -> dict:
    """Phase 2: cache the corpus' latents through the trained VAE, train UNet + CLIP tower;
    every ``probe_minutes`` the learning-curve probe (:mod:`i2v_helpers.probe`) goes to ``curve.csv``."""

    work, dev = Path(cfg.work_dir), _device(cfg)
    mc = TINY_PRESETS[cfg.model]
    check_curriculum(cfg.unet_curriculum, mc.num_frames)
    pipe = build_tiny_pipeline(mc, seed=cfg.seed)
    prev = load_phase_state(work, "unet")
    pipe.unet, pipe.image_encoder = start_models(cfg, "unet", ["unet", "image_encoder"]).values()
    pipe.vae = start_models(cfg, "vae", ["vae"])["vae"].eval().requires_grad_(False)
    pipe.to(dev)
    cache = cache_unet_inputs(pipe.vae, corpus, work, cfg.image_aug_draws, cfg.seed, log)
    latents, img_lats, augs = cache["latents"].to(dev), cache["image_latents"].to(dev), cache["aug"].to(dev)
    first = to_model_range(corpus["clips"][:, 0].to(dev))  # (N, 3, H, W)
    fps, bucket = corpus["fps"].to(dev), corpus["bucket"].to(dev)
    encode_s = cache["seconds"]  # when it was encoded (a resumed run reads the file in ~1 s)
    g = torch.Generator(device=dev).manual_seed(cfg.seed + 2 + (prev or {}).get("steps", 0))
    unet = torch.compile(pipe.unet) if cfg.compile else pipe.unet
    pipe.unet.train(), pipe.image_encoder.train()
    n, draws = len(latents), img_lats.shape[1]

    def step(_, frac):
        frames = curriculum_frames(cfg.unet_curriculum, frac, mc.num_frames)
        b = max(1, cfg.unet_batch * mc.num_frames // frames)
        idx = torch.randint(0, n, (b,), generator=g, device=dev)
        k = torch.randint(0, draws, (b,), generator=g, device=dev)
        return cached_unet_loss(pipe, unet, latents[idx, :frames], img_lats[idx, k], augs[idx, k], first[idx],
                                fps[idx], bucket[idx], cfg, g)

    items = probe_items(n=cfg.probe_clips) if cfg.probe_minutes else []

    def probe(_state):
        pipe.unet.eval(), pipe.image_encoder.eval()
        res = learning_curve_probe(_probe_pipe(pipe), items, seeds=tuple(range(cfg.probe_seeds)))
        pipe.unet.train(), pipe.image_encoder.train()
        return res

    params = list(pipe.unet.parameters()) + list(pipe.image_encoder.parameters())
    state = _train_loop("unet", step, params, cfg.unet_lr, 0.1, cfg.unet_minutes, cfg, work,
                        {"unet": pipe.unet, "image_encoder": pipe.image_encoder}, cfg.unet_batch, log,
                        probe if items else None, cfg.probe_minutes, cfg.unet_decay_minutes)
    if items:  # the curve's last point: the phase's result
        metrics = probe(state)
        append_curve(work, "unet", state, metrics)
        log("[unet] final probe: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    state.update(corpus_clips=len(latents), encode_seconds=round(encode_s), batch=cfg.unet_batch,
                 machine=describe(dev), compile=cfg.compile)
    (work / "unet" / "state.json").write_text(json.dumps(state, indent=2))
    log(f"[unet] done {state}")
    return state


def run_decoder_phase(cfg: PretrainConfig, corpus: dict, log=print) -> dict:
    """Phase 3: sharpen the VAE decoder on ``decoder_frames``-frame windows, encoder frozen."""
    work, dev = Path(cfg.work_dir), _device(cfg)
    prev = load_phase_state(work, "decoder")
    vae = start_models(cfg, "decoder", ["vae"])["vae"].to(dev)
    heldout = heldout_clips(cfg.vae_heldout_clips)
    before = (prev or {}).get("psnr_before_db") or vae_psnr(vae, heldout)
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.train()
    clips = corpus["clips"].to(dev)
    g = torch.Generator(device=dev).manual_seed(cfg.seed + 3 + (prev or {}).get("steps", 0))
    nf = cfg.decoder_frames

    def step(_, __):
        idx = torch.randint(0, len(clips), (cfg.decoder_batch_clips, 1), generator=g, device=dev)
        f0 = torch.randint(0, clips.shape[1] - nf + 1, (cfg.decoder_batch_clips, 1), generator=g, device=dev)
        x = to_model_range(clips[idx, f0 + torch.arange(nf, device=dev)].flatten(0, 1))
        with autocast(cfg, dev):
            with torch.no_grad():
                z = vae.encode(x).latent_dist.mode()
            rec = vae.decode(z, num_frames=nf).sample.float()
        loss = F.mse_loss(rec, x) + F.l1_loss(rec, x)
        if cfg.vae_temporal_weight > 0:
            loss = loss + cfg.vae_temporal_weight * temporal_difference_loss(rec, x, nf)
        return loss

    state = _train_loop("decoder", step, list(vae.decoder.parameters()), cfg.vae_lr, 0.05, cfg.decoder_minutes,
                        cfg, work, {"vae": vae}, cfg.decoder_batch_clips * nf, log)
    vae.eval()
    state.update(psnr_before_db=before, vae_psnr_db=vae_psnr(vae, heldout), machine=describe(dev),
                 batch=f"{cfg.decoder_batch_clips} clips x {nf} frames")
    (work / "decoder" / "state.json").write_text(json.dumps(state, indent=2))
    log(f"[decoder] done {state}")
    return state


def run_phases(cfg: PretrainConfig, phases=PHASES, log=print) -> dict:
    """Generate the corpus once and run ``phases`` in order; phases already done are skipped."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.model not in TINY_PRESETS:
        raise ValueError(f"model must be one of {sorted(TINY_PRESETS)}, got {cfg.model!r}")
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    minutes = {"vae": cfg.vae_minutes, "unet": cfg.unet_minutes, "decoder": cfg.decoder_minutes}
    todo = [p for p in phases if not (st := load_phase_state(work, p) or {"seconds": 0}).get("done")
            and st["seconds"] < minutes[p] * 60]
    for p in set(phases) - set(todo):
        log(f"[{p}] already done in {work}: raise its minutes to train it longer, or delete {work / p} to redo it")
    if not todo:
        return {}
    size = TINY_PRESETS[cfg.model].resolution
    corpus = cached_corpus(work, cfg.corpus_clips, cfg.seed, cfg.workers, size, TINY_PRESETS[cfg.model].num_frames,
                           log, cfg.rule_prob)
    run = {"vae": run_vae_phase, "unet": run_unet_phase, "decoder": run_decoder_phase}
    return {p: run[p](cfg, corpus, log) for p in todo}


def finalize(cfg: PretrainConfig, log=print) -> Path:
    """Assemble the phases' models in ``out_dir`` in SVD-xt's folder format, safetensors
    (UNet and VAE stored in fp16 to stay under 20 MB). ``feature_extractor`` is recorded
    as ``CLIPImageProcessor``, as in SVD-xt's ``model_index.json``."""
    pipe = build_tiny_pipeline(TINY_PRESETS[cfg.model], seed=cfg.seed)
    pipe.vae = start_models(cfg, "decoder", ["vae"])["vae"]
    pipe.unet, pipe.image_encoder = start_models(cfg, "unet", ["unet", "image_encoder"]).values()
    # UNet and VAE in fp16 (diffusers loads them back as fp32 when no dtype is given); the
    # CLIP tower stays fp32 because transformers keeps a saved fp16 dtype, which would mix dtypes
    pipe.unet.to(torch.float16)
    pipe.vae.to(torch.float16)
    out = Path(cfg.out_dir)
    pipe.save_pretrained(out, safe_serialization=True)
    index = json.loads((out / "model_index.json").read_text())
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and f.name != "README.md")
    log(f"[finalize] wrote {out} ({size / 1e6:.1f} MB)")
    return out


def pretrain_config(sets: list[str] | None = None, **fields) -> PretrainConfig:
    """A :class:`PretrainConfig` of ``fields`` (``i2v pretrain``'s options) with the ``--set key=value``
    overrides on top. An unknown key, or a word where a number goes, raises ``ConfigError``
    (``i2v``: exit 2) before anything runs."""
    cfg = PretrainConfig(**fields)
    for key, value in check_fields(PretrainConfig, parse_overrides(sets), "--set").items():
        setattr(cfg, key, value)
    return cfg


def run_pretrain(cfg: PretrainConfig, phase: str, seconds: float = 20.0, log=print) -> dict:
    """What ``i2v pretrain PHASE`` does up to the model card: ``throughput``, the UNet step's clips/s
    over ``seconds`` (:func:`~i2v_helpers.bench.unet_throughput`, nothing trained); ``vae``, ``unet``,
    ``decoder``, that phase (:func:`run_phases`, resumable); ``finalize``, the phases' models assembled
    in ``out_dir`` (:func:`finalize`); ``all``, the three phases then finalize; ``evaluate``, nothing
    (scoring is :mod:`i2v_helpers.model_card`'s, which imports this module). Returns what ran:
    ``{"throughput": {...}}``, or ``{"phases": run_phases' result, "model_dir": the finalized folder}``."""
    if phase == "throughput":
        return {"throughput": unet_throughput(cfg.model, cfg.unet_batch, cfg.precision, seconds, cfg.device,
                                              cfg.compile)}
    done = {}
    if phase in (*PHASES, "all"):
        done["phases"] = run_phases(cfg, PHASES if phase == "all" else (phase,), log)
    if phase in ("finalize", "all"):
        done["model_dir"] = finalize(cfg, log)
    return done
