"""What a fine-tune trains and how the frozen rest is stored: the three techniques (LoRA, full,
adapter layers), gradient checkpointing, and mixed-precision storage of frozen weights.

    report = apply_technique(pipe.unet, cfg)   # {"trainable": ..., "base": ..., "share_percent": ...}

Introduced in notebook 04 (LoRA) and 09 (adapters); used by :func:`i2v_helpers.training.train`.
"""

from __future__ import annotations

import torch
from diffusers.models.resnet import SpatioTemporalResBlock
from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel
from torch.utils.checkpoint import checkpoint

from .adapters import add_adapters
from .config import TrainConfig
from .lora import add_lora, lora_config, trainable_report
from .models import load_pipeline


def apply_technique(unet, cfg: TrainConfig) -> dict:
    """Make ``unet`` trainable as ``cfg.technique`` says; returns the trainable-parameter report."""
    base = sum(p.numel() for p in unet.parameters())
    unet.requires_grad_(False)
    if cfg.technique == "lora":
        add_lora(unet, lora_config(unet, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_blocks,
                                   cfg.lora_init, base_model=cfg.init_from))
    elif cfg.technique == "adapter":
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


def restore_frozen_weights(pipe, model_path: str) -> None:
    """Put the exact fp32 values of ``model_path`` back into every frozen parameter of ``pipe``'s UNet,
    VAE and CLIP tower. With mixed precision, training keeps these in bf16/fp16
    (:func:`cast_frozen_weights`); a saved model must not carry that rounding. A layer wrapped by
    peft (``x.base_layer.weight``) takes the base's ``x.weight``."""
    base = load_pipeline(model_path, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        for name in ("unet", "vae", "image_encoder"):
            exact = dict(getattr(base, name).named_parameters())
            for n, p in getattr(pipe, name).named_parameters():
                if not p.requires_grad:
                    p.data = exact[n.replace(".base_layer.", ".")].data.to(p.device)
