"""Predict a training config's peak memory before launching it (``i2v estimate CONFIG``).

peak ≈ weights + optimizer states (+ EMA) + the larger of gradients and activations (both,
with gradient accumulation: see :func:`estimate_memory`), where

* weights: the UNet (frozen parameters in the mixed-precision dtype, trainable ones in
  fp32, see :func:`i2v_helpers.techniques.cast_frozen_weights`), plus the VAE and CLIP
  tower kept on the device in the mixed-precision dtype; under autocast a full
  fine-tune also holds a low-precision copy of every fp32 weight it uses;
* gradients: fp32, one per trainable parameter; AdamW: two fp32 states (8-bit AdamW: two
  bytes);
* activations: the tensors autograd saves for backward, counted by running the UNet's
  forward pass on the **meta device** (shapes only, no memory, no weights, seconds on a
  CPU) with ``torch.autograd.graph.saved_tensors_hooks``. Attention is counted as the
  flash/memory-efficient kernels store it (q, k, v, output, log-sum-exp; no L×L matrix).
  With gradient checkpointing, diffusers recomputes each ResNet and spatial transformer
  block in backward: their inner tensors are replaced by their inputs, plus one block's
  inner tensors at a time. With mixed precision the trace applies autocast's casts
  (GroupNorm and LayerNorm in fp32, matmuls and convolutions in bf16/fp16), because what
  autograd saves depends on them.

Checked against ``i2v bench train`` measurements (tiny on CPU in the tests; SVD-xt on a
GPU in ``benchmarks/RESULTS.md``). Introduced in notebook 10.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from diffusers.models.resnet import SpatioTemporalResBlock
from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from .config import TrainConfig
from .models import SVD_XT_SIZE, native_resolution, resolve_model_path, svd_xt_image_encoder, svd_xt_unet, svd_xt_vae
from .techniques import apply_technique

GiB = 2 ** 30


class _FlashLikeAttention(torch.autograd.Function):
    """Stand-in for SDPA on meta tensors that saves what flash attention saves."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: the trace only goes forward
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


# CUDA autocast's policy (torch.amp docs): these ops run in the low-precision dtype, these in fp32.
_LOW_PRECISION_OPS = {"conv1d", "conv2d", "conv3d", "linear", "matmul", "__matmul__", "mm", "bmm", "baddbmm", "addmm"}
_FP32_OPS = {"group_norm", "layer_norm", "softmax", "log_softmax", "exp", "pow", "__pow__", "rsqrt", "norm"}


class _AutocastLike(torch.overrides.TorchFunctionMode):
    """Autocast's casting rules, applied by hand: meta tensors have no autocast of their own.

    What autograd saves under autocast depends on these casts: GroupNorm and LayerNorm run in
    fp32, so the SiLU after a GroupNorm saves an fp32 tensor, twice the size of a bf16 one.
    Low-precision copies of fp32 weights are added to ``params`` (the static rows count them).
    """

    def __init__(self, dtype, params: set):
        super().__init__()
        self.dtype, self.params, self.copies = dtype, params, []

    def _cast(self, x, dtype):
        if torch.is_tensor(x) and x.is_floating_point() and x.dtype != dtype:
            y = x.to(dtype)
            if id(x) in self.params:
                self.params.add(id(y))
                self.copies.append(y)  # keep it alive: a freed copy's id could be reused by an activation
            return y
        return x

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        dtype = self.dtype if name in _LOW_PRECISION_OPS else torch.float32 if name in _FP32_OPS else None
        if dtype is not None:
            args = tuple(self._cast(a, dtype) for a in args)
            kwargs = {k: self._cast(v, dtype) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def _sdpa_meta(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
    return _FlashLikeAttention.apply(q, k, v)


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def unet_activation_bytes(unet_config: dict, batch: int, frames: int, latent_hw: tuple[int, int],
                          dtype: torch.dtype = torch.bfloat16, trainable: str = "full",
                          autocast: bool = False) -> dict:
    """Bytes autograd saves in one UNet forward, without and with gradient checkpointing.

    The UNet is built from ``unet_config`` on the meta device in ``dtype``. ``trainable``
    ``full`` makes every parameter require grad, ``lora`` none (LoRA's own tensors are
    tiny; the input still requires grad so the activations are saved as in training).
    Returns bytes for ``no_checkpointing``, ``diffusers`` (``gradient_checkpointing: true``)
    and ``full`` (``gradient_checkpointing: full``, see
    :func:`i2v_helpers.techniques.enable_checkpointing`). ``autocast`` traces as the trainer runs
    mixed precision: trainable weights and the inputs in fp32, frozen weights in ``dtype``,
    autocast's casts applied (:class:`_AutocastLike`).
    """
    args = (unet_config, batch, frames, latent_hw, dtype, trainable)
    return {"no_checkpointing": _trace(*args, None, autocast)[0],
            "diffusers": _trace(*args, "diffusers", autocast)[1],
            "full": _trace(*args, "full", autocast)[1]}


def _trace(unet_config, batch, frames, latent_hw, dtype, trainable, mode, autocast=False) -> tuple[int, int]:
    """(bytes saved without checkpointing, bytes held with ``mode``'s checkpointing)."""

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel.from_config(unet_config)
    unet.to("meta")  # torch.Tensor([...]) buffers (the mix factors) ignore the device context
    weight_dtype = torch.float32 if autocast and trainable == "full" else dtype
    for p in unet.parameters():  # .to(dtype) would warn about modules kept in fp32 (there are none)
        p.data = p.data.to(weight_dtype)
    input_dtype = torch.float32 if autocast else dtype
    unet.train()
    unet.requires_grad_(trainable == "full")
    params = {id(p) for p in unet.parameters()}
    keep, seen = [], set()
    outside, region, regions = [0], [None], []

    def pack(t):
        base = t._base if t._base is not None else t
        if id(t) in params or id(base) in params:  # weights (and their transposed views) are not activations
            return t
        if id(base) not in seen:
            seen.add(id(base))
            keep.append(base)  # keeps ids unique while tracing
            if region[0] is not None:
                region[0][0] += _bytes(base)
            else:
                outside[0] += _bytes(base)
        return t

    def recorded(fn, args):
        if region[0] is not None:  # nested: already inside a recomputed region
            return fn()
        rec = [0, sum(_bytes(a) for a in args if torch.is_tensor(a))]
        region[0] = rec
        try:
            return fn()
        finally:
            region[0] = None
            regions.append(rec)

    if mode == "diffusers":
        unet.enable_gradient_checkpointing()
        for m in unet.modules():
            if hasattr(m, "_gradient_checkpointing_func"):
                m._gradient_checkpointing_func = lambda module, *a: recorded(lambda: module(*a), a)
    elif mode == "full":
        for m in unet.modules():
            if isinstance(m, (SpatioTemporalResBlock, TransformerSpatioTemporalModel)):
                m.forward = (lambda inner: lambda *a, **k: recorded(lambda: inner(*a, **k), a))(m.forward)
    c = unet.config
    h, w = latent_hw
    with torch.device("meta"):
        x = torch.randn(batch, frames, c.in_channels, h, w, dtype=input_dtype, requires_grad=True)
        t = torch.ones(batch, dtype=input_dtype)
        emb = torch.randn(batch, 1, c.cross_attention_dim, dtype=input_dtype)
        ids = torch.ones(batch, 3, dtype=input_dtype)
    sdpa = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _sdpa_meta
    casts = _AutocastLike(dtype, params) if autocast else contextlib.nullcontext()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.device("meta"), casts:
            unet(x, t, encoder_hidden_states=emb, added_time_ids=ids)
    finally:
        F.scaled_dot_product_attention = sdpa
    inner = sum(r[0] for r in regions)
    held = outside[0] + sum(r[1] for r in regions) + max((r[0] for r in regions), default=0)
    return outside[0] + inner, held


def _config_json(path: Path) -> dict:
    return json.loads(path.read_text())


def model_configs(init_from: str) -> dict:
    """UNet / VAE / CLIP parameter counts and the UNet config for a model path or SVD-xt id."""

    p = Path(resolve_model_path(init_from)) if Path(init_from).exists() else None
    with torch.device("meta"):
        if p is not None:
            unet_cfg = _config_json(p / "unet" / "config.json")
            unet = UNetSpatioTemporalConditionModel.from_config(unet_cfg)
            vae = AutoencoderKLTemporalDecoder.from_config(_config_json(p / "vae" / "config.json"))
            clip = CLIPVisionModelWithProjection(CLIPVisionConfig.from_pretrained(p / "image_encoder"))
        else:  # a hub id: SVD-xt's architecture, no download
            unet = svd_xt_unet()
            unet_cfg = dict(unet.config)
            vae = svd_xt_vae()
            clip = svd_xt_image_encoder()
    count = lambda m: sum(q.numel() for q in m.parameters())  # noqa: E731
    return {"unet_config": unet_cfg, "unet": count(unet), "vae": count(vae), "clip": count(clip),
            "vae_scale": 2 ** (len(vae.config.block_out_channels) - 1), "unet_model": unet}


def estimate_memory(cfg, lora_params: int | None = None) -> dict:
    """Predicted peak training memory (bytes) of a :class:`~i2v_helpers.config.TrainConfig`.

    Returns a breakdown dict; ``total`` uses the config's own ``gradient_checkpointing``,
    ``total_no_checkpointing`` / ``total_checkpointing`` both variants.
    """
    cfg = cfg if isinstance(cfg, TrainConfig) else TrainConfig(**cfg)
    m = model_configs(cfg.init_from)
    if cfg.resolution is None and Path(cfg.init_from).exists():  # a local pipeline: its own size
        size = native_resolution(resolve_model_path(cfg.init_from))
        hw = (size, size) if isinstance(size, int) else tuple(size)
    elif cfg.resolution is None:  # a hub id, read as SVD-xt's architecture by model_configs
        hw = SVD_XT_SIZE
    else:
        hw = (cfg.resolution, cfg.resolution) if isinstance(cfg.resolution, int) else tuple(cfg.resolution)
    compute_dtype = cfg.weight_dtype  # config.PRECISION_DTYPES
    low = compute_dtype.itemsize  # bytes of a frozen weight: 4 (no), 2 (fp16, bf16)
    unet = m.pop("unet_model")
    trainable = lora_params if lora_params is not None else apply_technique(unet, cfg)["trainable"]
    frozen = m["unet"] - trainable if cfg.technique == "full" else m["unet"]  # LoRA / adapters add parameters
    rows = {
        "unet_weights_frozen": frozen * low,
        "unet_weights_trainable": trainable * 4,
        "autocast_weight_copies": trainable * low if (low < 4 and cfg.technique == "full") else 0,
        "vae_clip_weights": (m["vae"] + m["clip"]) * low,
        "gradients": trainable * 4,
        "optimizer_states": trainable * (2 if cfg.use_8bit_adam else 8),
        "ema": trainable * 4 if cfg.ema_decay else 0,
    }
    s = m["vae_scale"]
    act = unet_activation_bytes(m["unet_config"], cfg.batch_size, cfg.num_frames, (hw[0] // s, hw[1] // s),
                                compute_dtype, "full" if cfg.technique == "full" else "lora", autocast=low < 4)
    static = sum(rows.values()) - rows["gradients"]
    gc_mode = {False: "no_checkpointing", True: "diffusers", "diffusers": "diffusers", "full": "full"}[
        cfg.gradient_checkpointing]

    def peak(activations: int) -> int:
        # zero_grad(set_to_none=True): with one micro-batch per step the gradients are allocated
        # in backward as the activations are freed, so the peak holds about the larger of the two;
        # with gradient accumulation the gradients of earlier micro-batches are already there
        grads = rows["gradients"]
        return static + (grads + activations if cfg.grad_accum > 1 else max(grads, activations))

    return {**rows, **{f"activations_{k}": v for k, v in act.items()},
            **{f"total_{k}": peak(v) for k, v in act.items()},
            "total": peak(act[gc_mode]), "checkpointing_as_configured": gc_mode,
            "trainable_parameters": trainable, "unet_parameters": m["unet"],
            "shape": f"{cfg.batch_size} × {cfg.num_frames} frames × {hw[0]}×{hw[1]}"}


def format_estimate(name: str, est: dict) -> str:
    lines = [f"{name}: {est['shape']}, {est['trainable_parameters']:,} trainable of "
             f"{est['unet_parameters']:,} UNet parameters"]
    for k in ("unet_weights_frozen", "unet_weights_trainable", "autocast_weight_copies", "vae_clip_weights",
              "gradients", "optimizer_states", "ema"):
        lines.append(f"  {k:<40} {est[k] / GiB:8.2f} GiB")
    for k, label in (("no_checkpointing", "no checkpointing"), ("diffusers", "checkpointing: true (diffusers)"),
                     ("full", "checkpointing: full")):
        lines.append(f"  {'activations, ' + label:<40} {est['activations_' + k] / GiB:8.2f} GiB"
                     f"   → total {est['total_' + k] / GiB:7.2f} GiB")
    lines.append(f"  {'total as configured (' + est['checkpointing_as_configured'] + ')':<40} "
                 f"{est['total'] / GiB:8.2f} GiB")
    return "\n".join(lines)
