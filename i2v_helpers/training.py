"""The fine-tuning loop: one accelerate loop for stage 1 and stage 2.

    cfg = load_config("tiny-stage1", ["max_steps=200"])
    result = train(cfg)                       # or: i2v train tiny-stage1 --set max_steps=200

What it does, top to bottom (:func:`setup_run`, then :func:`train`):

1. load the pipeline named by ``init_from`` (a pipeline folder, a hub id, or an earlier
   run's output folder: its ``merged/`` or ``pipeline/`` is used);
2. make the UNet trainable by ``technique`` (:mod:`i2v_helpers.techniques`): ``lora``,
   ``full`` (all UNet parameters, or the names matching ``full_subset``) or ``adapter``;
3. encode the training clips once with the frozen VAE and CLIP tower
   (:mod:`i2v_helpers.encoded`; in memory or on disk);
4. optimise SVD's EDM objective (:mod:`i2v_helpers.objective`) with AdamW (or 8-bit
   AdamW), warmup + schedule, clipping, accumulation, mixed precision, optional EMA;
5. before the first step, validation loss on a held-out manifest (fixed noise); every
   ``val_every`` steps, that loss and validation videos from chosen images; every
   ``checkpoint_every`` steps: an atomic
   checkpoint with exact resume state (:mod:`i2v_helpers.checkpoints`);
6. write the result: ``adapter/`` (peft format) + ``merged/`` for LoRA, ``pipeline/``
   for full fine-tuning, ``adapters/`` for adapter layers.

Introduced in notebook 06 (stage 1) and 07 (stage 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint, save_result
from .conditioning import DEFAULT_FPS, DEFAULT_MOTION_BUCKET
from .config import TrainConfig
from .data import VideoClipDataset
from .device import pick_device
from .encoded import EncodedClips, collate
from .errors import TrainingDiverged  # lives in errors.py: `i2v` maps it to exit 3 without importing torch
from .generation import generate
from .models import load_pipeline, native_resolution, resolve_model_path, set_model_geometry
from .objective import ObjectiveConfig, condition_on_first_frame, per_sample_generators, training_loss
from .techniques import apply_technique, cast_frozen_weights, enable_checkpointing
from .video_io import read_image, write_video

# ------------------------------------------------------------------ one step


def batch_loss(pipe, unet, batch: dict, ocfg: ObjectiveConfig, generator=None):
    """The SVD loss of a batch of encoded clips (:class:`~i2v_helpers.encoded.EncodedClips` items, collated):
    the first frames encoded with fresh noise augmentation, then :func:`~i2v_helpers.objective.training_loss`."""
    img_lat, aug = condition_on_first_frame(pipe.vae, batch["image"], ocfg, generator)
    return training_loss(unet, batch["latents"], img_lat, aug, batch["image_embeds"], batch["fps"],
                         batch["motion_bucket_id"], ocfg, generator)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The data order of one epoch: a permutation fixed by (seed, epoch), so resume is exact."""
    perm = np.random.default_rng([seed, epoch]).permutation(n).tolist()
    return [perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)] or [perm]


@torch.no_grad()
def validation_loss(pipe, unet, encoded, cfg: TrainConfig, device) -> float:
    """Mean loss over the first ``val_batches`` batches with fixed noise (comparable across steps)."""
    ocfg = dataclasses.replace(cfg.objective(), drop_embed=0.0, drop_image=0.0, drop_both=0.0)
    losses = []
    for idx in epoch_batches(len(encoded), cfg.batch_size, 0, 0)[:cfg.val_batches]:
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx]).items()}
        losses.append(batch_loss(pipe, unet, batch, ocfg, per_sample_generators(1234, 0, idx)).item())
    return float(np.mean(losses))


def _diverged(what: str, step: int, out: Path, cfg: TrainConfig) -> TrainingDiverged:
    ck = latest_checkpoint(out)
    return TrainingDiverged(
        f"{what} in step {step}: training stopped. Last good checkpoint: {ck or 'none yet'}. Lower "
        f"learning_rate (now {cfg.learning_rate}), keep max_grad_norm, or use bf16 instead of fp16; "
        "resume with --resume.")


# ------------------------------------------------------------------ setup


@dataclass
class Run:
    """Everything the loop works with, made by :func:`setup_run`. ``unet`` is the prepared
    (for DDP: wrapped) UNet; ``params`` its trainable parameters; ``step`` the optimizer steps done."""
    cfg: TrainConfig
    out: Path
    acc: object  # accelerate.Accelerator
    pipe: object  # StableVideoDiffusionPipeline
    unet: torch.nn.Module
    params: list
    optimizer: object
    scheduler: object
    ema: object | None
    encoded: EncodedClips
    val_encoded: EncodedClips | None
    objective: ObjectiveConfig
    report: dict
    step: int = 0


def make_accelerator(cfg: TrainConfig, out: Path):
    """One accelerate ``Accelerator`` for the run: one process or DDP (CPU or GPU), nothing sharded."""

    # accelerate keeps one AcceleratorState per process and refuses a second mixed_precision: drop an
    # earlier run's (a notebook or a test session training bf16, then fp32); the process group stays
    AcceleratorState._reset_state()
    # cpu=True lets torchrun / accelerate launch run several CPU processes over gloo
    acc = Accelerator(cpu=pick_device().backend == "cpu", mixed_precision=cfg.mixed_precision,
                      gradient_accumulation_steps=cfg.grad_accum,
                      log_with=None if cfg.report_to == "none" else cfg.report_to, project_dir=str(out))
    if acc.distributed_type not in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        # checkpoints and results read the unwrapped model's parameters on the main process, which a
        # sharded run does not hold whole
        raise ValueError(f"distributed type {acc.distributed_type.value} is not supported: this trainer runs one "
                         "process or DDP (accelerate launch / torchrun, CPU or GPU); run `accelerate config` "
                         "again and choose multi-GPU without FSDP / DeepSpeed")
    return acc


def load_datasets(cfg: TrainConfig, size) -> tuple[VideoClipDataset, VideoClipDataset | None]:
    """The train and (optional) validation datasets, cut to ``max_*_samples``. A bad file fails here,
    before any model is loaded."""
    train_ds = VideoClipDataset(cfg.train_manifest, cfg.num_frames, size, cfg.sampling, cfg.stride)
    val_ds = VideoClipDataset(cfg.val_manifest, cfg.num_frames, size, cfg.sampling, cfg.stride) \
        if cfg.val_manifest else None
    for ds, limit in ((train_ds, cfg.max_train_samples), (val_ds, cfg.max_val_samples)):
        if ds is not None and limit:
            ds.entries = ds.entries[:limit]
    return train_ds, val_ds


def make_optimizer(params: list, cfg: TrainConfig):
    """AdamW (or bitsandbytes' 8-bit AdamW) and the named diffusers LR schedule."""

    if cfg.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise ImportError("use_8bit_adam needs bitsandbytes: pip install -e '.[gpu]'") from e
        opt_cls = bnb.optim.AdamW8bit
    else:
        opt_cls = torch.optim.AdamW
    optimizer = opt_cls(params, lr=cfg.learning_rate, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                        weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                              num_training_steps=cfg.max_steps)
    return optimizer, scheduler


def setup_run(cfg: TrainConfig, resume: bool = False, log=print) -> Run:
    """Accelerator, data, pipeline, technique, encoded clips, optimizer, EMA; resumed if asked."""

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    acc = make_accelerator(cfg, out)
    set_seed(cfg.seed)
    (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))

    model_path = resolve_model_path(cfg.init_from)
    size = cfg.resolution or native_resolution(model_path)
    train_ds, val_ds = load_datasets(cfg, size)

    weight_dtype = cfg.weight_dtype
    pipe = load_pipeline(model_path, device=acc.device, dtype=torch.float32)
    set_model_geometry(pipe, size, cfg.num_frames)  # validation videos and saved pipelines make the run's size
    pipe.vae.requires_grad_(False)
    pipe.image_encoder.requires_grad_(False)
    if weight_dtype != torch.float32:
        pipe.vae.to(dtype=weight_dtype)
        pipe.image_encoder.to(dtype=weight_dtype)
    unet = pipe.unet
    report = apply_technique(unet, cfg)
    log(f"[train] {cfg.technique}: {report['trainable']:,} trainable of {report['base']:,} "
        f"({report['share_percent']:.2f} %)")
    cast_frozen_weights(unet, weight_dtype)
    enable_checkpointing(unet, cfg.gradient_checkpointing)

    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    # a disk cache is encoded and written by the main process alone; the others wait, then load it
    with acc.main_process_first() if cfg.cache == "disk" else contextlib.nullcontext():
        encoded = EncodedClips(train_ds, pipe, cfg.cache, cache_dir, log)
        val_encoded = EncodedClips(val_ds, pipe, cfg.cache, cache_dir, log) if val_ds else None

    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(params, cfg)
    # the LR scheduler stays unprepared: accelerate would step it once per process per step
    unet, optimizer = acc.prepare(unet, optimizer)
    ema = None
    if cfg.ema_decay:

        ema = EMAModel(params, decay=cfg.ema_decay)
    run = Run(cfg, out, acc, pipe, unet, params, optimizer, scheduler, ema, encoded, val_encoded, cfg.objective(),
              report)
    if resume:
        ck = latest_checkpoint(out)
        if ck is None:
            log(f"[train] --resume: no checkpoint in {out / 'checkpoints'}, starting at step 0")
        else:
            run.step = load_checkpoint(ck, acc.unwrap_model(unet), optimizer, scheduler, ema, acc.scaler)
            log(f"[train] resumed from {ck} at step {run.step}")
    if acc.is_main_process and cfg.report_to != "none":
        acc.init_trackers("i2v", config={k: str(v) for k, v in dataclasses.asdict(cfg).items()})
    return run


# ------------------------------------------------------------------ the loop


def train(cfg: TrainConfig, resume: bool = False, callbacks=(), log=print) -> dict:
    """Run the fine-tune described by ``cfg``; returns a summary dict (also in ``output_dir/result.json``).

    ``callbacks``: callables ``fn(event, info)`` with event ``"step"`` (info: step, loss, lr),
    ``"val"`` (step, val_loss) and ``"video"`` (step, path, frames) — notebooks plot live with them.
    """
    run = setup_run(cfg, resume, log)
    acc = run.acc
    bar = tqdm(total=cfg.max_steps, initial=run.step, desc=f"{cfg.technique} {run.out.name}",
               disable=not acc.is_main_process)
    t0, losses, last_val, start_val = time.time(), [], None, None
    if run.step == 0 and run.val_encoded is not None and cfg.val_every:
        # the starting model's validation loss, so the curve starts at its level (no videos: the
        # starting model samples the same with or without this run)
        start_val = last_val = validate(run, callbacks, videos=False)
    run.unet.train()
    while run.step < cfg.max_steps:
        first_micro = run.step * cfg.grad_accum
        losses += [micro_step(run, micro) for micro in range(first_micro, first_micro + cfg.grad_accum)]
        check_weights_finite(run)
        run.step += 1
        step = run.step
        if run.ema is not None:
            run.ema.step(run.params)
        bar.update(1)
        lr = run.scheduler.get_last_lr()[0]
        info = {"step": step, "loss": float(np.mean(losses[-cfg.grad_accum:])), "lr": lr}
        for cb in callbacks:
            cb("step", info)
        if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.max_steps):
            bar.set_postfix(loss=f"{np.mean(losses[-cfg.log_every * cfg.grad_accum:]):.4f}", lr=f"{lr:.2e}")
            acc.log({"train/loss": info["loss"], "train/lr": lr}, step=step)
        if run.val_encoded is not None and cfg.val_every and (step % cfg.val_every == 0 or step == cfg.max_steps):
            last_val = validate(run, callbacks)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_checkpoint(run.out, step, acc.unwrap_model(run.unet), run.optimizer, run.scheduler, run.ema,
                                cfg.keep_checkpoints, acc.scaler)
    bar.close()
    acc.wait_for_everyone()
    return finish_run(run, losses, last_val, time.time() - t0, start_val)


def micro_step(run: Run, micro: int) -> float:
    """Forward and backward of micro-batch number ``micro`` (an optimizer step every ``grad_accum``);
    returns its loss averaged over processes."""
    cfg, acc = run.cfg, run.acc
    # each process takes its slice of every global batch, so N processes see the same data as 1
    global_batch = cfg.batch_size * acc.num_processes
    per_epoch = max(1, len(run.encoded) // global_batch)
    epoch, pos = divmod(micro, per_epoch)
    lo = acc.process_index * cfg.batch_size
    idx = epoch_batches(len(run.encoded), global_batch, cfg.seed, epoch)[pos % per_epoch][lo:lo + cfg.batch_size]
    batch = {k: v.to(acc.device) for k, v in collate([run.encoded[i] for i in idx]).items()}
    batch["latents"] = batch["latents"].to(cfg.weight_dtype)
    # noise for each sample from (seed, micro-step, its place in the global batch): the same
    # whatever the number of processes, and exact on resume
    gens = per_sample_generators(cfg.seed, micro, range(lo, lo + len(idx)))
    with acc.accumulate(run.unet), acc.autocast():
        loss = batch_loss(run.pipe, run.unet, batch, run.objective, gens)
        # every process gets every process's loss, so all stop together (none waits in backward)
        step_losses = acc.gather(loss.detach()[None])
        if not torch.isfinite(step_losses).all():
            raise _diverged(f"loss is {step_losses.tolist()}", run.step + 1, run.out, cfg)
        acc.backward(loss)
        if acc.sync_gradients and cfg.max_grad_norm:
            acc.clip_grad_norm_(run.params, cfg.max_grad_norm)
        run.optimizer.step()
        if acc.sync_gradients:
            run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
    return step_losses.mean().item()


def check_weights_finite(run: Run) -> None:
    """Non-finite gradients behind a finite loss leave non-finite weights (fp16's GradScaler skips such
    steps instead): stop before any checkpoint or EMA holds them. One flag, reduced over processes."""
    bad = torch.stack([~torch.isfinite(p).all() for p in run.params]).any().float()[None]
    if run.acc.reduce(bad, "sum").item() > 0:
        raise _diverged("the weights are not finite (non-finite gradients)", run.step + 1, run.out, run.cfg)


def validate(run: Run, callbacks=(), videos: bool = True) -> float:
    """Validation loss (logged, sent to callbacks) and, on the main process, validation videos."""
    acc = run.acc
    run.unet.eval()
    val = validation_loss(run.pipe, run.unet, run.val_encoded, run.cfg, acc.device)
    run.unet.train()
    acc.log({"val/loss": val}, step=run.step)
    for cb in callbacks:
        cb("val", {"step": run.step, "val_loss": val})
    if videos and run.cfg.val_images and acc.is_main_process:
        validation_videos(run.pipe, acc.unwrap_model(run.unet), run.cfg, run.out, run.step, acc, callbacks)
    return val


def validation_videos(pipe, unet, cfg: TrainConfig, out: Path, step: int, acc, callbacks=()) -> None:
    """One video per ``val_images`` entry, with ``i2v sample``'s defaults, to ``out/validation/``."""
    unet.eval()
    # with mixed precision the frozen VAE is bf16/fp16 but the prepared UNet returns fp32 latents, which the
    # pipeline decodes as they are: decode with an fp32 VAE (bf16/fp16 -> fp32 -> back is exact)
    vae_dtype = pipe.vae.dtype
    torch.nn.Module.to(pipe.vae, torch.float32)
    for i, img in enumerate(cfg.val_images):
        # a bare image, so the pipeline's own defaults, as `i2v sample` uses them
        frames = generate(pipe, read_image(img), num_frames=cfg.num_frames, steps=cfg.val_video_steps, seed=i,
                          fps=DEFAULT_FPS, motion_bucket_id=DEFAULT_MOTION_BUCKET)
        path = write_video(out / "validation" / f"step_{step:06d}_{i}.mp4", frames, fps=DEFAULT_FPS)
        for tracker in acc.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_images(f"val/video_{i}", frames[::max(1, len(frames) // 4)], step,
                                          dataformats="NHWC")
        for cb in callbacks:
            cb("video", {"step": step, "path": str(path), "frames": frames})
    torch.nn.Module.to(pipe.vae, vae_dtype)
    unet.train()


def finish_run(run: Run, losses: list[float], last_val: float | None, seconds: float,
               start_val: float | None = None) -> dict:
    """The summary dict; on the main process the EMA weights are copied in and the result is saved.
    ``val_loss_start``: the validation loss before the first step (None on a resumed run)."""
    cfg, acc = run.cfg, run.acc
    history = [float(np.mean(losses[i:i + cfg.grad_accum])) for i in range(0, len(losses), cfg.grad_accum)]
    result = {"steps": run.step, "seconds": round(seconds, 1),
              "final_loss": float(np.mean(losses[-10:])) if losses else None, "loss_history": history,
              "val_loss_start": start_val, "val_loss": last_val, "trainable": run.report["trainable"],
              "share_percent": run.report["share_percent"],
              "samples_per_s": round(len(losses) * cfg.batch_size * acc.num_processes / max(seconds, 1e-9), 3)
              if losses else None}
    if acc.is_main_process:
        unet = acc.unwrap_model(run.unet)
        if run.ema is not None:
            run.ema.copy_to(run.params)
        result.update(save_result(run.pipe, unet, cfg, run.out))
        (run.out / "result.json").write_text(json.dumps(result, indent=2))
    acc.end_training()
    return result
