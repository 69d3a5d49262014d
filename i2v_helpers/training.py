"""The fine-tuning engine: one config, one accelerate loop, for stage 1 and stage 2.

    cfg = load_config("tiny-stage1", ["max_steps=200"])
    result = train(cfg)                       # or: i2v train tiny-stage1 --set max_steps=200

What it does, top to bottom:

1. load the pipeline named by ``init_from`` (a pipeline folder, a hub id, or an earlier
   run's output folder: its ``merged/`` or ``pipeline/`` is used);
2. make the UNet trainable by ``technique``: ``lora`` (peft on to_q/to_k/to_v/to_out.0),
   ``full`` (all UNet parameters, or the names matching ``full_subset``);
3. encode the training clips once with the frozen VAE and CLIP tower (cache in memory
   or on disk, keyed by data + settings + encoder weights). The first frame is still
   VAE-encoded every step: the pipeline adds its noise augmentation in *pixel* space,
   so a cached clean latent would change the objective;
4. optimise SVD's EDM objective (:mod:`i2v_helpers.objective`) with AdamW (or 8-bit
   AdamW), warmup + schedule, clipping, accumulation, mixed precision, optional EMA;
5. every ``val_every`` steps: validation loss on a held-out manifest (fixed noise) and
   validation videos from chosen images; every ``checkpoint_every`` steps: an atomic
   checkpoint (write to ``*.tmp``, then rename) with exact resume state;
6. write the result: ``adapter/`` (peft format) + ``merged/`` for LoRA, ``pipeline/``
   for full fine-tuning.

Introduced in notebook 06 (stage 1) and 07 (stage 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from .conditioning import DEFAULT_FPS, DEFAULT_MOTION_BUCKET
from .models import pixel_size, set_model_geometry

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TrainConfig:
    # what to train
    init_from: str = "data_samples/models/tiny-svd"
    technique: str = "lora"  # lora | full | adapter
    train_manifest: str = "data_samples/general/train.jsonl"
    val_manifest: str | None = "data_samples/general/val.jsonl"
    output_dir: str = "runs/stage1"
    max_steps: int = 300
    seed: int = 0
    # data
    num_frames: int = 16
    resolution: int | list[int] | None = None  # px, or [H, W]; default: the model's native size
    sampling: str = "consecutive"
    stride: int = 1
    batch_size: int = 4
    grad_accum: int = 1
    num_workers: int = 0
    max_train_samples: int | None = None  # use only the first N clips of each manifest (quick runs, debugging)
    max_val_samples: int | None = None
    # optimisation
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"  # any diffusers.optimization scheduler name
    lr_warmup_steps: int = 20
    weight_decay: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    use_8bit_adam: bool = False
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool | str = False  # false | true (diffusers' blocks) | full (see enable_checkpointing)
    ema_decay: float | None = None
    # technique settings
    lora_rank: int = 16
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    lora_blocks: str = "all"  # all | spatial | temporal
    lora_init: str | bool = True
    full_subset: str | None = None  # e.g. "temporal_transformer_block": only matching parameter names
    adapter_bottleneck: int = 16  # technique adapter: width of each bottleneck adapter
    adapter_blocks: str = "all"  # all | spatial | temporal transformer blocks
    # objective
    p_mean: float = 0.7
    p_std: float = 1.6
    noise_aug_mean: float = -3.0
    noise_aug_std: float = 0.5
    drop_embed: float = 0.2
    drop_image: float = 0.2
    drop_both: float = 0.1
    loss: str = "edm"  # edm (SVD's EDM v-prediction) | ddpm-epsilon (the seed's noise-MSE; notebook 02 shows why not)
    # caching, validation, checkpoints, logging
    cache: str = "memory"  # memory | disk | off
    cache_dir: str | None = None  # default: output_dir/cache
    val_every: int = 100  # 0: no validation
    val_batches: int = 4
    val_images: list[str] = field(default_factory=list)
    val_video_steps: int = 25
    checkpoint_every: int = 100  # 0: no checkpoints
    keep_checkpoints: int | None = 2  # the newest N are kept; null: all
    log_every: int = 10  # 0: no loss logging (callbacks still get every step)
    report_to: str = "tensorboard"  # tensorboard | none

    def __post_init__(self):  # checked when the config is made, not an hour into training
        if self.technique not in ("lora", "full", "adapter"):
            raise ValueError(f"technique must be lora, full or adapter, got {self.technique!r}")
        self.objective()  # validates the objective settings (loss) now
        for name in ("val_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: off), got {getattr(self, name)}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1 (the newest N are kept) or null (all are kept), got "
                             f"{self.keep_checkpoints}; for no checkpoints at all set checkpoint_every=0")

    def objective(self):
        from .objective import ObjectiveConfig

        return ObjectiveConfig(p_mean=self.p_mean, p_std=self.p_std, noise_aug_mean=self.noise_aug_mean,
                               noise_aug_std=self.noise_aug_std, drop_embed=self.drop_embed,
                               drop_image=self.drop_image, drop_both=self.drop_both, loss=self.loss)


def parse_overrides(items: list[str] | None) -> dict:
    """``["key=value", ...]`` (``--set``) → ``{key: value}``, values parsed as YAML."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def check_fields(cls, data: dict, where) -> dict:
    """``data`` with unknown keys of dataclass ``cls`` rejected and float fields made floats
    (YAML 1.1 reads ``1e-4``, without a dot, as a string). Used for TrainConfig and PretrainConfig."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown config keys {unknown}; known keys: {sorted(fields)}")
    data = dict(data)
    for k, v in data.items():
        if isinstance(v, (str, int)) and not isinstance(v, bool) and "float" in fields[k]:
            try:
                data[k] = float(v)
            except ValueError:
                raise ValueError(f"{where}: {k} must be a number, got {v!r}") from None
    return data


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a shipped config name (``tiny-stage1``, ``svd-xt-lora``, ...)
    or a YAML file, then ``key=value`` overrides (values parsed as YAML: ``lr=3e-4``,
    ``val_images=[a.png,b.png]``)."""
    p = Path(name_or_path)
    if not p.is_file():
        p = CONFIG_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        names = ", ".join(sorted(x.stem for x in CONFIG_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"{name_or_path}: no such config file or shipped config (shipped: {names})")
    data = (yaml.safe_load(p.read_text()) or {}) | parse_overrides(overrides)
    data = check_fields(TrainConfig, data, p)
    if "adam_betas" in data:
        data["adam_betas"] = tuple(data["adam_betas"])
    return TrainConfig(**data)


def native_resolution(model_path: str) -> int | list[int]:
    """The pixel size a pipeline folder generates by default (UNet sample_size × VAE factor):
    one int for a square model, ``[H, W]`` otherwise."""
    p = Path(model_path)
    try:
        unet = json.loads((p / "unet" / "config.json").read_text())
        vae = json.loads((p / "vae" / "config.json").read_text())
    except FileNotFoundError as e:
        raise ValueError(f"{model_path}: cannot read its unet/vae config; set `resolution` in the config") from e
    h, w = pixel_size(unet["sample_size"], 2 ** (len(vae["block_out_channels"]) - 1))
    return h if h == w else [h, w]


def resolve_model_path(init_from: str | Path) -> str:
    """A pipeline folder for ``init_from``: a run folder's ``merged/`` or ``pipeline/``, or as given."""
    p = Path(init_from)
    for sub in ("merged", "pipeline"):
        if (p / sub / "model_index.json").is_file():
            return str(p / sub)
    if p.exists() and not (p / "model_index.json").is_file():
        raise FileNotFoundError(f"{p}: no pipeline here (no model_index.json, merged/ or pipeline/); "
                                "did the earlier stage finish?")
    return str(init_from)


# ------------------------------------------------------------------ techniques

def apply_technique(unet, cfg: TrainConfig) -> dict:
    """Make ``unet`` trainable as ``cfg.technique`` says; returns the trainable-parameter report."""
    from .lora import add_lora, lora_config, trainable_report

    base = sum(p.numel() for p in unet.parameters())
    unet.requires_grad_(False)
    if cfg.technique == "lora":
        add_lora(unet, lora_config(unet, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_blocks,
                                   cfg.lora_init, base_model=cfg.init_from))
    elif cfg.technique == "adapter":
        from .adapters import add_adapters

        add_adapters(unet, cfg.adapter_bottleneck, cfg.adapter_blocks)
        unet.i2v_adapters.requires_grad_(True)
    else:
        for n, p in unet.named_parameters():
            p.requires_grad_(cfg.full_subset is None or cfg.full_subset in n)
    rep = trainable_report(unet, base)
    if rep["trainable"] == 0:
        raise ValueError(f"nothing to train: full_subset={cfg.full_subset!r} matches no parameter name")
    return rep


def enable_checkpointing(unet, mode) -> None:
    """Gradient checkpointing: recompute activations in backward instead of storing them.

    ``True``/``"diffusers"``: diffusers' own (each ResNet and each spatial transformer block;
    the temporal transformer blocks and the time mixers still store theirs). ``"full"``: every
    ``SpatioTemporalResBlock`` and every whole ``TransformerSpatioTemporalModel`` (spatial and
    temporal layers) is recomputed; only their inputs are stored. ``False``: off.
    """
    if not mode:
        return
    if mode is True or mode == "diffusers":
        unet.enable_gradient_checkpointing()
        return
    if mode != "full":
        raise ValueError(f"gradient_checkpointing={mode!r}: use false, true (diffusers' blocks) or full")
    from diffusers.models.resnet import SpatioTemporalResBlock
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel
    from torch.utils.checkpoint import checkpoint

    for m in unet.modules():
        if isinstance(m, (SpatioTemporalResBlock, TransformerSpatioTemporalModel)):
            inner = m.forward

            def forward(*args, _inner=inner, _m=m, **kwargs):
                if torch.is_grad_enabled() and _m.training:
                    return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
                return _inner(*args, **kwargs)

            m.forward = forward


def cast_frozen_weights(unet, dtype: torch.dtype) -> None:
    """Store the frozen parameters in ``dtype`` (the mixed-precision compute dtype) and keep
    trainable ones in fp32, as diffusers' training scripts do: with LoRA this halves the
    base UNet's memory (SVD-xt: 6.1 → 3.0 GB) and avoids autocast's per-step weight copies."""
    for p in unet.parameters():
        if not p.requires_grad:
            p.data = p.data.to(dtype)


# ------------------------------------------------------------------ the encoded (cached) dataset

class EncodedClips(torch.utils.data.Dataset):
    """Items of a :class:`~i2v_helpers.data.VideoClipDataset` with the frozen encoders applied:
    ``latents`` ``(F, C, h, w)`` (scaled), ``image`` ``(3, H, W)``, ``image_embeds`` ``(1, D)``,
    ``fps``, ``motion_bucket_id``. With a cache they are computed once (memory, or disk keyed
    by the data, the settings and the encoder weights)."""

    def __init__(self, dataset, pipe, cache: str = "memory", cache_dir: str | Path | None = None, log=print):
        from .objective import clip_pixels, encode_clip, encode_video_latents

        self.dataset, self.pipe, self.cache = dataset, pipe, cache
        self._encode_video, self._clip_pixels, self._encode_clip = encode_video_latents, clip_pixels, encode_clip
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
                self.items = _load_items(path)
                log(f"[cache] loaded {len(self.items)} encoded clips from {path}")
                return
        t = time.time()
        self.items = [self.encode(dataset[i]) for i in range(len(dataset))]
        log(f"[cache] encoded {len(self.items)} clips in {time.time() - t:.1f}s ({self.cache})")
        if path is not None:
            _save_items(path, self.items)

    def cache_key(self) -> str:
        """Changes when the manifest, any media file, the sampling settings or the encoders change."""
        h = hashlib.sha256()
        ds = self.dataset
        h.update(ds.manifest.read_bytes())
        for e in ds.entries:
            for f in (e.video, e.image):
                if f is not None:
                    st = f.stat()
                    h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
        h.update(json.dumps([ds.num_frames, ds.size, ds.sampling, ds.stride, ds.crop]).encode())
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
        return {"latents": self._encode_video(pipe.vae, video)[0].float().cpu(),
                "image": item["image"].float(),
                "image_embeds": self._encode_clip(pipe.image_encoder,
                                                  self._clip_pixels(image, pipe.feature_extractor))[0].float().cpu(),
                "fps": torch.tensor(item["fps"]), "motion_bucket_id": torch.tensor(item["motion_bucket_id"])}

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.items[i] if self.items is not None else self.encode(self.dataset[i])


def _save_items(path: Path, items: list[dict]):
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"{i}.{k}": v.contiguous() for i, it in enumerate(items) for k, v in it.items()}
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")  # two writers never share a temp file
    save_file(flat, tmp)
    tmp.replace(path)


def _load_items(path: Path) -> list[dict]:
    from safetensors.torch import load_file

    flat = load_file(path)
    n = 1 + max(int(k.split(".", 1)[0]) for k in flat)
    items = [{} for _ in range(n)]
    for k, v in flat.items():
        i, name = k.split(".", 1)
        items[int(i)][name] = v
    return items


# ------------------------------------------------------------------ one step

def batch_loss(pipe, unet, batch: dict, ocfg, generator=None):
    """The SVD loss of a batch of encoded clips (``EncodedClips`` items, collated)."""
    from .objective import added_time_ids, encode_image_latents, sample_noise_aug, svd_loss

    dev = batch["latents"].device
    b = len(batch["latents"])
    aug = sample_noise_aug(b, ocfg, generator, dev)
    with torch.no_grad():
        img_lat = encode_image_latents(pipe.vae, batch["image"].to(pipe.vae.dtype), aug, generator)
    ids = added_time_ids(batch["fps"], batch["motion_bucket_id"], aug).to(dev)
    if ocfg.loss == "ddpm-epsilon":  # the seed's objective, kept to measure why SVD does not use it
        from .objective import ddpm_epsilon_loss
        from .schedules import ddpm_alphas_cumprod

        return ddpm_epsilon_loss(unet, batch["latents"], img_lat, batch["image_embeds"], ids,
                                 ddpm_alphas_cumprod("scaled-linear"), generator)
    return svd_loss(unet, batch["latents"], img_lat, batch["image_embeds"], ids, ocfg, generator)


class TrainingDiverged(RuntimeError):
    pass


def _diverged(what: str, step: int, out: Path, cfg: TrainConfig) -> TrainingDiverged:
    ck = latest_checkpoint(out)
    return TrainingDiverged(
        f"{what} in step {step}: training stopped. Last good checkpoint: {ck or 'none yet'}. Lower "
        f"learning_rate (now {cfg.learning_rate}), keep max_grad_norm, or use bf16 instead of fp16; "
        "resume with --resume.")


# ------------------------------------------------------------------ checkpoints

def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _trainable_state(unet) -> dict:
    return {n: p.detach().cpu().contiguous() for n, p in unet.named_parameters() if p.requires_grad}


def save_checkpoint(out_dir: Path, step: int, unet, optimizer, scheduler, ema=None, keep: int | None = 2,
                    scaler=None) -> Path:
    """Atomic: everything goes to ``step_N.tmp/`` and is renamed to ``step_N/`` when complete.
    Trainable weights in safetensors; optimizer/scheduler/RNG, the whole EMA state (its average
    *and* its step count, which sets the decay) and the fp16 GradScaler state with ``torch.save``,
    read back with ``weights_only=True`` (no arbitrary unpickling). ``keep``: the newest N
    checkpoints are kept (``None``: all)."""
    from safetensors.torch import save_file

    ckdir = out_dir / "checkpoints"
    final = ckdir / f"step_{step:06d}"
    tmp = ckdir / f"step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_trainable_state(unet), tmp / "trainable.safetensors")
    rng = _rng_state()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "torch_rng": rng["torch"], "cuda_rng": rng["cuda"],
                "numpy_rng": [rng["numpy"][0], rng["numpy"][1].tolist(), *rng["numpy"][2:]],
                "python_rng": [rng["python"][0], list(rng["python"][1]), rng["python"][2]]}, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step}))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if keep is not None:
        for old in sorted(p for p in ckdir.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))[:-keep]:
            shutil.rmtree(old)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    ck = sorted(p for p in (out_dir / "checkpoints").glob("step_*")
                if p.is_dir() and not p.name.endswith(".tmp") and (p / "meta.json").is_file())
    return ck[-1] if ck else None


def load_checkpoint(path: Path, unet, optimizer, scheduler, ema=None, scaler=None) -> int:
    from safetensors.torch import load_file

    weights = load_file(path / "trainable.safetensors")
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for n, v in weights.items():
            params[n].copy_(v)
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    n = state["numpy_rng"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    p = state["python_rng"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if ema is not None:
        if state.get("ema") is None:
            raise ValueError(f"{path}: saved by a run without EMA (or before EMA state was checkpointed); "
                             "resume it without ema_decay")
        ema.load_state_dict(state["ema"])
        ema.to(device=next(unet.parameters()).device)
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    return json.loads((path / "meta.json").read_text())["step"]


# ------------------------------------------------------------------ the loop

def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The data order of one epoch: a permutation fixed by (seed, epoch), so resume is exact."""
    perm = np.random.default_rng([seed, epoch]).permutation(n).tolist()
    return [perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)] or [perm]


def _collate(items: list[dict]) -> dict:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


@torch.no_grad()
def validation_loss(pipe, unet, encoded, cfg: TrainConfig, device) -> float:
    """Mean loss over the first ``val_batches`` batches with fixed noise (comparable across steps)."""
    from .objective import per_sample_generators

    ocfg = dataclasses.replace(cfg.objective(), drop_embed=0.0, drop_image=0.0, drop_both=0.0)
    losses = []
    for idx in _batches(len(encoded), cfg.batch_size, 0, 0)[:cfg.val_batches]:
        batch = {k: v.to(device) for k, v in _collate([encoded[i] for i in idx]).items()}
        losses.append(batch_loss(pipe, unet, batch, ocfg, per_sample_generators(1234, 0, idx)).item())
    return float(np.mean(losses))


def train(cfg: TrainConfig, resume: bool = False, callbacks=(), log=print) -> dict:
    """Run the fine-tune described by ``cfg``; returns a summary dict (also in ``output_dir/result.json``).

    ``callbacks``: callables ``fn(event, info)`` with event ``"step"`` (info: step, loss, lr),
    ``"val"`` (step, val_loss) and ``"video"`` (step, path, frames) — notebooks plot live with them.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType, set_seed
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from .data import VideoClipDataset
    from .models import load_pipeline
    from .objective import per_sample_generators

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    from .device import pick_device

    # accelerate keeps one AcceleratorState per process and refuses a second mixed_precision: drop an
    # earlier run's (a notebook or a test session training bf16, then fp32); the process group stays
    AcceleratorState._reset_state()
    # cpu=True lets torchrun / accelerate launch run several CPU processes over gloo
    acc = Accelerator(cpu=pick_device().backend == "cpu", mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
                      log_with=None if cfg.report_to == "none" else cfg.report_to, project_dir=str(out))
    if acc.distributed_type not in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        # checkpoints and results read the unwrapped model's parameters on the main process, which a
        # sharded run does not hold whole
        raise ValueError(f"distributed type {acc.distributed_type.value} is not supported: this trainer runs one "
                         "process or DDP (accelerate launch / torchrun, CPU or GPU); run `accelerate config` "
                         "again and choose multi-GPU without FSDP / DeepSpeed")
    set_seed(cfg.seed)
    (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))

    # data first: a bad file fails here, before any model is loaded
    model_path = resolve_model_path(cfg.init_from)
    size = cfg.resolution or native_resolution(model_path)
    train_ds = VideoClipDataset(cfg.train_manifest, cfg.num_frames, size, cfg.sampling, cfg.stride)
    val_ds = VideoClipDataset(cfg.val_manifest, cfg.num_frames, size, cfg.sampling, cfg.stride) \
        if cfg.val_manifest else None
    for ds, limit in ((train_ds, cfg.max_train_samples), (val_ds, cfg.max_val_samples)):
        if ds is not None and limit:
            ds.entries = ds.entries[:limit]

    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
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
    # the LR scheduler stays unprepared: accelerate would step it once per process per step
    unet, optimizer = acc.prepare(unet, optimizer)
    ema = None
    if cfg.ema_decay:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=cfg.ema_decay)
    ocfg = cfg.objective()

    step = 0
    if resume:
        ck = latest_checkpoint(out)
        if ck is None:
            log(f"[train] --resume: no checkpoint in {out / 'checkpoints'}, starting at step 0")
        else:
            step = load_checkpoint(ck, acc.unwrap_model(unet), optimizer, scheduler, ema, acc.scaler)
            log(f"[train] resumed from {ck} at step {step}")
    if acc.is_main_process and cfg.report_to != "none":
        acc.init_trackers("i2v", config={k: str(v) for k, v in dataclasses.asdict(cfg).items()})

    # each process takes its slice of every global batch, so N processes see the same data as 1
    global_batch = cfg.batch_size * acc.num_processes
    per_epoch = max(1, len(encoded) // global_batch)
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"{cfg.technique} {out.name}", disable=not acc.is_main_process)
    t0, losses, last_val = time.time(), [], None
    unet.train()
    while step < cfg.max_steps:
        for _ in range(cfg.grad_accum):
            micro = step * cfg.grad_accum + _
            epoch, pos = divmod(micro, per_epoch)
            gidx = _batches(len(encoded), global_batch, cfg.seed, epoch)[pos % per_epoch]
            lo = acc.process_index * cfg.batch_size
            idx = gidx[lo:lo + cfg.batch_size]
            batch = {k: v.to(acc.device) for k, v in _collate([encoded[i] for i in idx]).items()}
            batch["latents"] = batch["latents"].to(weight_dtype)
            # noise for each sample from (seed, micro-step, its place in the global batch): the same
            # whatever the number of processes, and exact on resume
            gens = per_sample_generators(cfg.seed, micro, range(lo, lo + len(idx)))
            with acc.accumulate(unet), acc.autocast():
                loss = batch_loss(pipe, unet, batch, ocfg, gens)
                # every process gets every process's loss, so all stop together (none waits in backward)
                step_losses = acc.gather(loss.detach()[None])
                if not torch.isfinite(step_losses).all():
                    raise _diverged(f"loss is {step_losses.tolist()}", step + 1, out, cfg)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm:
                    acc.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                if acc.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(step_losses.mean().item())
        # non-finite gradients behind a finite loss leave non-finite weights (fp16's GradScaler skips such
        # steps instead): stop before any checkpoint or EMA holds them; one flag, reduced over processes
        bad = torch.stack([~torch.isfinite(p).all() for p in params]).any().float()[None]
        if acc.reduce(bad, "sum").item() > 0:
            raise _diverged("the weights are not finite (non-finite gradients)", step + 1, out, cfg)
        step += 1
        if ema is not None:
            ema.step(params)
        bar.update(1)
        lr = scheduler.get_last_lr()[0]
        info = {"step": step, "loss": float(np.mean(losses[-cfg.grad_accum:])), "lr": lr}
        for cb in callbacks:
            cb("step", info)
        if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.max_steps):
            bar.set_postfix(loss=f"{np.mean(losses[-cfg.log_every * cfg.grad_accum:]):.4f}", lr=f"{lr:.2e}")
            acc.log({"train/loss": info["loss"], "train/lr": lr}, step=step)
        if val_encoded is not None and cfg.val_every and (step % cfg.val_every == 0 or step == cfg.max_steps):
            unet.eval()
            last_val = validation_loss(pipe, unet, val_encoded, cfg, acc.device)
            unet.train()
            acc.log({"val/loss": last_val}, step=step)
            for cb in callbacks:
                cb("val", {"step": step, "val_loss": last_val})
            if cfg.val_images and acc.is_main_process:
                _validation_videos(pipe, acc.unwrap_model(unet), cfg, out, step, acc, callbacks)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_checkpoint(out, step, acc.unwrap_model(unet), optimizer, scheduler, ema, cfg.keep_checkpoints,
                                acc.scaler)
    bar.close()
    acc.wait_for_everyone()
    seconds = time.time() - t0
    history = [float(np.mean(losses[i:i + cfg.grad_accum])) for i in range(0, len(losses), cfg.grad_accum)]
    result = {"steps": step, "seconds": round(seconds, 1), "final_loss": float(np.mean(losses[-10:])) if losses else None,
              "loss_history": history,
              "val_loss": last_val, "trainable": report["trainable"], "share_percent": report["share_percent"],
              "samples_per_s": round(len(losses) * cfg.batch_size * acc.num_processes / max(seconds, 1e-9), 3)
              if losses else None}
    if acc.is_main_process:
        unet = acc.unwrap_model(unet)
        if ema is not None:
            ema.copy_to(params)
        result.update(save_result(pipe, unet, cfg, out))
        (out / "result.json").write_text(json.dumps(result, indent=2))
    acc.end_training()
    return result


def _validation_videos(pipe, unet, cfg, out: Path, step: int, acc, callbacks):
    from .sampling import generate
    from .video_io import read_image, write_video

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


def restore_frozen_weights(pipe, model_path: str) -> None:
    """Put the exact fp32 values of ``model_path`` back into every frozen parameter of ``pipe``'s UNet,
    VAE and CLIP tower. With mixed precision, training keeps these in bf16/fp16
    (:func:`cast_frozen_weights`); a saved model must not carry that rounding. A layer wrapped by
    peft (``x.base_layer.weight``) takes the base's ``x.weight``."""
    from .models import load_pipeline

    base = load_pipeline(model_path, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        for name in ("unet", "vae", "image_encoder"):
            exact = dict(getattr(base, name).named_parameters())
            for n, p in getattr(pipe, name).named_parameters():
                if not p.requires_grad:
                    p.data = exact[n.replace(".base_layer.", ".")].data.to(p.device)


def save_result(pipe, unet, cfg: TrainConfig, out: Path) -> dict:
    """The documented run layout: ``adapter/`` + ``merged/`` (LoRA), ``pipeline/`` (full) or
    ``adapters/`` (adapter layers, which cannot be merged: sample with ``--adapters``).

    Weights that were not trained are saved bit-identical to ``init_from`` (fp32), also after a
    bf16/fp16 run, and ``merged/`` is base + adapter merged in fp32."""
    from .lora import save_lora, unload_lora

    unet.eval()
    paths = {}
    if cfg.technique == "adapter":
        from .adapters import remove_adapters, save_adapters

        paths["adapters"] = str(save_adapters(unet, out / "adapters", base_model=resolve_model_path(cfg.init_from)))
        remove_adapters(unet)
        return paths
    pipe.unet = unet
    if cfg.mixed_precision != "no":
        restore_frozen_weights(pipe, resolve_model_path(cfg.init_from))
    if cfg.technique == "lora":
        paths["adapter"] = str(save_lora(unet, out / "adapter"))
        unload_lora(unet, merge=True)
        target = out / "merged"
    else:
        target = out / "pipeline"
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    paths["pipeline"] = str(target)
    return paths
