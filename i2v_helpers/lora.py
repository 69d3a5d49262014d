"""LoRA on the SVD UNet with peft: inject, save/load in peft's own format, merge, switch.

diffusers' ``UNetSpatioTemporalConditionModel`` has no ``PeftAdapterMixin`` and the SVD
pipeline has no LoRA loader, so this module uses peft directly
(``inject_adapter_in_model``, ``get_peft_model_state_dict``, ``set_peft_model_state_dict``).
Files are written exactly as ``PeftModel.save_pretrained`` writes them
(``adapter_config.json`` + ``adapter_model.safetensors``, keys prefixed
``base_model.model.``), so plain peft loads them onto a plain diffusers UNet:

    PeftModel.from_pretrained(UNetSpatioTemporalConditionModel.from_pretrained(...), adapter_dir)

The seed's ``target_modules=["to_q", "to_v", "to_k", "to_out"]`` fails: ``to_out`` is a
``ModuleList(Linear, Dropout)``; peft needs ``to_out.0``.

Introduced in notebook 04 (LoRA injection).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
PEFT_PREFIX = "base_model.model."
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def attention_target_modules(unet, blocks: str = "all", targets=LORA_TARGETS) -> list[str]:
    """Full names of the attention projections to adapt.

    ``blocks``: ``"spatial"`` (``transformer_blocks``), ``"temporal"``
    (``temporal_transformer_blocks``) or ``"all"``.
    """
    if blocks not in ("all", "spatial", "temporal"):
        raise ValueError(f"blocks must be all, spatial or temporal, got {blocks!r}")
    names = []
    for name, module in unet.named_modules():
        linear = isinstance(module, torch.nn.Linear) or hasattr(module, "base_layer")  # plain or already adapted
        if not linear or "lora_" in name or ".base_layer" in name or not any(name.endswith("." + t) for t in targets):
            continue
        temporal = ".temporal_transformer_blocks." in name
        spatial = ".transformer_blocks." in name and not temporal
        if blocks == "all" and (temporal or spatial) or blocks == "temporal" and temporal \
                or blocks == "spatial" and spatial:
            names.append(name)
    return names


def lora_config(unet, rank: int = 16, alpha: float | None = None, dropout: float = 0.0, blocks: str = "all",
                init: str | bool = True, base_model: str | None = None):
    """A ``peft.LoraConfig`` targeting the chosen attention blocks (names spelled out, so the
    saved config is unambiguous). ``init``: peft's ``init_lora_weights`` (True, "gaussian", "pissa", ...)."""

    return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=dropout,
                      target_modules=attention_target_modules(unet, blocks), init_lora_weights=init,
                      base_model_name_or_path=base_model)


def add_lora(unet, config, adapter_name: str = "default"):
    """Inject a LoRA adapter into ``unet`` in place; only the LoRA weights are trainable."""

    inject_adapter_in_model(config, unet, adapter_name=adapter_name)
    for n, p in unet.named_parameters():
        p.requires_grad_("lora_" in n and f".{adapter_name}." in n)
    return unet


def _lora_layers(unet):

    return [(n, m) for n, m in unet.named_modules() if isinstance(m, LoraLayer)]


def save_lora(unet, out_dir: str | Path, adapter_name: str = "default") -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` in PeftModel's layout (atomic)."""

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    config = unet.peft_config[adapter_name]
    # save_embedding_layers=False: the UNet has no embeddings to save, and "auto" would look the
    # base model up on the hub (a network call, and a warning when offline)
    state = get_peft_model_state_dict(unet, adapter_name=adapter_name, save_embedding_layers=False)
    save_file({PEFT_PREFIX + k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp / ADAPTER_WEIGHTS)
    config.save_pretrained(tmp)
    if out.exists():

        shutil.rmtree(out)
    tmp.replace(out)
    return out


def load_lora(unet, adapter_dir: str | Path, adapter_name: str = "default", trainable: bool = False):
    """Inject the adapter saved in ``adapter_dir`` into a plain ``unet`` and load its weights."""

    d = Path(adapter_dir)
    if not (d / "adapter_config.json").is_file() or not (d / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{d}: not a LoRA adapter folder (needs adapter_config.json and {ADAPTER_WEIGHTS}); "
                                "a training run keeps it in OUTPUT_DIR/adapter")
    config = LoraConfig.from_pretrained(str(d))
    add_lora(unet, config, adapter_name)
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in load_file(d / ADAPTER_WEIGHTS).items()}
    result = set_peft_model_state_dict(unet, state, adapter_name=adapter_name)
    missing = [k for k in getattr(result, "unexpected_keys", [])]
    if missing:
        raise ValueError(f"{d}: {len(missing)} weights do not fit this UNet (e.g. {missing[0]}); "
                         "was the adapter trained on another model?")
    if not trainable:
        unet.requires_grad_(False)
    return unet


def load_lora_into_pipeline(pipe, adapter_dir: str | Path, adapter_name: str = "default"):
    """``load_lora`` on ``pipe.unet`` (what ``i2v sample --lora DIR`` does)."""
    load_lora(pipe.unet, adapter_dir, adapter_name)
    torch.nn.Module.to(pipe.unet, pipe.device, pipe.unet.dtype)  # new LoRA layers onto the pipeline's device
    return pipe


def set_active_adapter(unet, adapter_name: str):
    """Switch every LoRA layer to ``adapter_name`` (adapters stay loaded side by side)."""
    for _, m in _lora_layers(unet):
        m.set_adapter(adapter_name)


def set_lora_scale(unet, scale: float, adapter_name: str = "default"):
    """Scale the adapter's update ``(alpha / r) · B A`` by ``scale`` in every LoRA layer (0: the base model,
    1: the adapter as trained, above 1: pushed further). Sets, does not multiply: calling it twice is safe."""
    for _, m in _lora_layers(unet):
        m.set_scale(adapter_name, scale)


def merge_lora(unet, adapter_names: list[str] | None = None):
    """Fold the adapters into the base weights (outputs unchanged, no extra cost per step)."""
    for _, m in _lora_layers(unet):
        m.merge(adapter_names=adapter_names)


def unmerge_lora(unet):
    for _, m in _lora_layers(unet):
        m.unmerge()


def unload_lora(unet, merge: bool = True):
    """Remove the LoRA layers, leaving a plain diffusers UNet (merged first unless ``merge=False``)."""
    for name, m in _lora_layers(unet):
        if merge:
            m.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(unet.get_submodule(parent_name), child, m.get_base_layer())
    if hasattr(unet, "peft_config"):
        del unet.peft_config
    return unet


def trainable_report(model, base_count: int | None = None) -> dict:
    """``{trainable, base, share_percent}``: trainable parameters vs the base model's."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if base_count is None:
        base_count = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    return {"trainable": trainable, "base": base_count, "share_percent": 100.0 * trainable / base_count}
