"""What a run writes to disk: resumable checkpoints (atomic, exact) and the final result.

    save_checkpoint(out, step, unet, optimizer, scheduler, ema, keep=2, scaler=None)   # out/checkpoints/step_N/
    step = load_checkpoint(latest_checkpoint(out), unet, optimizer, scheduler, ema, scaler)
    save_result(pipe, unet, cfg, out)   # adapter/ + merged/ (LoRA), pipeline/ (full), adapters/ (adapter layers)

Used by :func:`i2v_helpers.training.train`; the layout is documented in the README.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .adapters import remove_adapters, save_adapters
from .config import TrainConfig
from .lora import save_lora, unload_lora
from .models import resolve_model_path
from .techniques import restore_frozen_weights


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


def save_result(pipe, unet, cfg: TrainConfig, out: Path) -> dict:
    """The documented run layout: ``adapter/`` + ``merged/`` (LoRA), ``pipeline/`` (full) or
    ``adapters/`` (adapter layers, which cannot be merged: sample with ``--adapters``).

    Weights that were not trained are saved bit-identical to ``init_from`` (fp32), also after a
    bf16/fp16 run, and ``merged/`` is base + adapter merged in fp32."""
    unet.eval()
    paths = {}
    if cfg.technique == "adapter":
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
