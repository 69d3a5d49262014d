"""Adapter layers: small bottleneck modules added after transformer blocks, base frozen.

The seed's third technique. Each adapter is ``x + up(gelu(down(x)))`` (Houlsby et al.,
2019) applied to the output of a transformer block of the UNet: the spatial blocks
(``transformer_blocks``), the temporal ones (``temporal_transformer_blocks``) or both.
``up`` starts at zero, so a fresh adapter leaves the model's output unchanged.

Adapters are attached with forward hooks and kept in a separate ``ModuleDict`` on the
UNet (``unet.i2v_adapters``), so they are easy to add and remove and the UNet's own
parameter names never change. Because of the non-linearity an adapter cannot be merged
into diffusers' weights: a run saves ``adapters/`` (``adapter_config.json`` +
``adapter_model.safetensors``) and :func:`load_adapters` attaches them again
(``i2v sample --adapters DIR``). LoRA is the technique to use when a plain diffusers
pipeline folder is needed.

Introduced in notebook 04 (LoRA injection, with full fine-tuning and adapters side by side).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class BottleneckAdapter(nn.Module):
    """``x + up(gelu(down(LayerNorm(x))))`` on the last dimension; ``x`` ``(..., dim)``."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(nn.functional.gelu(self.down(self.norm(x)))).to(x.dtype)


def adapter_sites(unet, blocks: str = "all") -> dict[str, int]:
    """``{block name: width}`` of the transformer blocks that get an adapter."""
    if blocks not in ("all", "spatial", "temporal"):
        raise ValueError(f"blocks must be all, spatial or temporal, got {blocks!r}")
    sites = {}
    for name, m in unet.named_modules():
        parts = name.split(".")
        if len(parts) < 2 or not parts[-1].isdigit():
            continue
        kind = parts[-2]
        if kind == "transformer_blocks" and blocks in ("all", "spatial") or \
                kind == "temporal_transformer_blocks" and blocks in ("all", "temporal"):
            sites[name] = m.norm1.normalized_shape[0]
    return sites


def _key(name: str) -> str:
    return name.replace(".", "__")  # ModuleDict keys may not contain dots


def add_adapters(unet, bottleneck: int = 16, blocks: str = "all") -> list[str]:
    """Attach a zero-initialised adapter after each chosen transformer block; freeze nothing
    else here (the caller decides). Returns the block names."""
    if hasattr(unet, "i2v_adapters"):
        raise ValueError("this UNet already has adapters: remove_adapters(unet) first")
    sites = adapter_sites(unet, blocks)
    param = next(unet.parameters())
    unet.i2v_adapters = nn.ModuleDict(
        {_key(n): BottleneckAdapter(d, bottleneck) for n, d in sites.items()}).to(param.device)
    unet.i2v_adapter_config = {"bottleneck": bottleneck, "blocks": blocks, "sites": list(sites)}
    unet.i2v_adapter_hooks = []
    modules = dict(unet.named_modules())
    for n in sites:
        adapter = unet.i2v_adapters[_key(n)]
        hook = modules[n].register_forward_hook(lambda mod, args, out, a=adapter: a(out))
        unet.i2v_adapter_hooks.append(hook)
    return list(sites)


def remove_adapters(unet) -> None:
    """Detach the adapters: the UNet is exactly the base again."""
    for h in getattr(unet, "i2v_adapter_hooks", []):
        h.remove()
    for attr in ("i2v_adapters", "i2v_adapter_config", "i2v_adapter_hooks"):
        if hasattr(unet, attr):
            delattr(unet, attr)


def save_adapters(unet, out_dir: str | Path, base_model: str | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (fp32)."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in unet.i2v_adapters.state_dict().items()}
    save_file(state, out / ADAPTER_WEIGHTS)
    cfg = dict(unet.i2v_adapter_config, type="bottleneck_adapter", base_model_name_or_path=base_model)
    (out / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
    return out


def load_adapters(unet, adapter_dir: str | Path) -> list[str]:
    """Attach the adapters saved by :func:`save_adapters` (safetensors only)."""

    d = Path(adapter_dir)
    if not (d / ADAPTER_CONFIG).is_file() or not (d / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{d}: expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} (an adapter-layer run's "
                                "adapters/ folder)")
    cfg = json.loads((d / ADAPTER_CONFIG).read_text())
    sites = add_adapters(unet, cfg["bottleneck"], cfg["blocks"])
    if sites != cfg["sites"]:
        remove_adapters(unet)
        raise ValueError(f"{d}: saved for blocks {cfg['sites'][:3]}..., this UNet has {sites[:3]}...: "
                         "a different architecture than the adapters were trained on")
    dtype = next(unet.parameters()).dtype
    unet.i2v_adapters.load_state_dict(load_file(d / ADAPTER_WEIGHTS))
    unet.i2v_adapters.to(dtype)
    return sites
