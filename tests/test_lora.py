"""LoRA with peft on the SVD UNet: targets, the seed's to_out pitfall, files plain peft loads, merge."""

import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel

from conftest import run_unet, unet_inputs  # tests/conftest.py
from i2v_helpers.lora import (
    add_lora,
    attention_target_modules,
    load_lora,
    lora_config,
    merge_lora,
    save_lora,
    set_active_adapter,
    set_lora_scale,
    trainable_report,
    unload_lora,
    unmerge_lora,
)

_inputs, _run = unet_inputs, run_unet


def _nonzero_lora(unet):
    """LoRA B is initialised to 0 (adapter = identity); give it weights so tests can see it."""
    g = torch.Generator().manual_seed(1)
    for n, p in unet.named_parameters():
        if "lora_B" in n:
            p.data = torch.randn(p.shape, generator=g) * 0.05


def test_seed_target_to_out_is_rejected_by_peft(unet):
    from peft import LoraConfig, get_peft_model

    with pytest.raises(ValueError, match="not supported"):
        get_peft_model(unet, LoraConfig(r=4, target_modules=["to_q", "to_v", "to_k", "to_out"]))


def test_block_selection(unet):
    all_, sp, tm = (attention_target_modules(unet, b) for b in ("all", "spatial", "temporal"))
    assert sorted(all_) == sorted(sp + tm) and sp and tm
    assert all("temporal_transformer_blocks" in n for n in tm)
    assert not any("temporal" in n for n in sp)
    assert {n.rsplit(".", 1)[-1] for n in all_} == {"to_q", "to_k", "to_v", "0"}


def test_only_lora_is_trainable_and_share_is_reported(unet):
    base = sum(p.numel() for p in unet.parameters())
    add_lora(unet, lora_config(unet, rank=4))
    rep = trainable_report(unet)
    assert rep["base"] == base and 0 < rep["trainable"] < base * 0.2
    assert all("lora_" in n for n, p in unet.named_parameters() if p.requires_grad)


def test_roundtrip_through_plain_peft(unet, tmp_path):
    from peft import PeftModel

    inputs = _inputs(unet)
    unet.save_pretrained(tmp_path / "base")
    add_lora(unet, lora_config(unet, rank=4, blocks="temporal"))
    _nonzero_lora(unet)
    ours = _run(unet, inputs)
    save_lora(unet, tmp_path / "adapter")
    plain = UNetSpatioTemporalConditionModel.from_pretrained(tmp_path / "base").eval()
    assert (_run(plain, inputs) - ours).abs().max() > 1e-4  # the adapter changes outputs
    peft_model = PeftModel.from_pretrained(plain, tmp_path / "adapter").eval()
    assert (_run(peft_model, inputs) - ours).abs().max() <= 1e-5
    # and our loader on a fresh plain UNet
    again = load_lora(UNetSpatioTemporalConditionModel.from_pretrained(tmp_path / "base").eval(), tmp_path / "adapter")
    assert (_run(again, inputs) - ours).abs().max() <= 1e-5


def test_merge_unmerge_unload_and_switch(unet):
    inputs = _inputs(unet)
    base_out = _run(unet, inputs)
    add_lora(unet, lora_config(unet, rank=4), "a")
    add_lora(unet, lora_config(unet, rank=4), "b")
    _nonzero_lora(unet)
    set_active_adapter(unet, "a")
    out_a = _run(unet, inputs)
    set_active_adapter(unet, "b")
    out_b = _run(unet, inputs)
    assert (out_a - out_b).abs().max() > 1e-4
    set_active_adapter(unet, "a")
    merge_lora(unet, ["a"])
    assert torch.allclose(_run(unet, inputs), out_a, atol=1e-5)
    unmerge_lora(unet)
    assert torch.allclose(_run(unet, inputs), out_a, atol=1e-5)
    set_active_adapter(unet, "a")
    unload_lora(unet)
    assert not any("lora_" in n for n, _ in unet.named_parameters())
    assert torch.allclose(_run(unet, inputs), out_a, atol=1e-5)
    assert (out_a - base_out).abs().max() > 1e-4


def test_lora_scale_goes_from_the_base_model_to_the_adapter_and_beyond(unet):
    """Scale 0 is the base model, 1 the adapter as trained; setting 2 twice is 2, not 4."""
    inputs = _inputs(unet)
    base_out = _run(unet, inputs)
    add_lora(unet, lora_config(unet, rank=4))
    _nonzero_lora(unet)
    full = _run(unet, inputs)
    set_lora_scale(unet, 0.0)
    assert torch.allclose(_run(unet, inputs), base_out, atol=1e-6)
    set_lora_scale(unet, 2.0)
    doubled = _run(unet, inputs)
    set_lora_scale(unet, 2.0)
    assert torch.allclose(_run(unet, inputs), doubled, atol=1e-6) and (doubled - full).abs().max() > 1e-4
    set_lora_scale(unet, 1.0)
    assert torch.allclose(_run(unet, inputs), full, atol=1e-6)
