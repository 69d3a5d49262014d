"""Adapter layers: identity at start, only adapters train, save/load round trip, removal, a run."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, run_unet, unet_inputs  # tests/conftest.py
from i2v_helpers.adapters import adapter_sites, add_adapters, load_adapters, remove_adapters, save_adapters
from i2v_helpers.config import load_config
from i2v_helpers.models import TinySVDConfig, build_tiny_pipeline, build_tiny_unet
from i2v_helpers.training import train

_inputs, _run = unet_inputs, run_unet


def test_sites_by_block_kind(unet):
    all_, sp, tm = (adapter_sites(unet, b) for b in ("all", "spatial", "temporal"))
    assert set(all_) == set(sp) | set(tm) and sp and tm
    assert all("temporal_transformer_blocks" in n for n in tm) and not any("temporal" in n for n in sp)
    with pytest.raises(ValueError, match="spatial or temporal"):
        adapter_sites(unet, "both")


def test_fresh_adapters_are_identity_and_removal_restores_the_base(unet):
    inp = _inputs(unet)
    ref = _run(unet, inp)
    names = add_adapters(unet, bottleneck=8)
    assert names and torch.equal(_run(unet, inp), ref)  # up-projection starts at zero
    for p in unet.i2v_adapters.parameters():
        p.data.normal_(0, 0.05)
    assert not torch.allclose(_run(unet, inp), ref)
    remove_adapters(unet)
    assert torch.equal(_run(unet, inp), ref) and not hasattr(unet, "i2v_adapters")
    assert not any("i2v_adapters" in k for k in unet.state_dict())


def test_save_load_round_trip_gives_identical_outputs(unet, tmp_path):
    add_adapters(unet, bottleneck=8, blocks="temporal")
    for p in unet.i2v_adapters.parameters():
        p.data.normal_(0, 0.05)
    inp = _inputs(unet, 1)
    want = _run(unet, inp)
    save_adapters(unet, tmp_path / "adapters", base_model="tiny")
    cfg = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert cfg["blocks"] == "temporal" and cfg["bottleneck"] == 8 and cfg["base_model_name_or_path"] == "tiny"
    torch.manual_seed(0)
    fresh = build_tiny_unet(TinySVDConfig(num_frames=4)).eval()
    load_adapters(fresh, tmp_path / "adapters")
    assert torch.equal(_run(fresh, inp), want)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapters(build_tiny_unet(TinySVDConfig(num_frames=4)), tmp_path)


def test_adapter_run_trains_only_adapters_and_saves_them(tmp_path):
    base = tmp_path / "base"
    build_tiny_pipeline(TinySVDConfig(num_frames=4), seed=0).save_pretrained(base, safe_serialization=True)
    out = tmp_path / "run"
    cfg = load_config("tiny-stage1", [f"init_from={base}", f"output_dir={out}", "technique=adapter",
                                      "adapter_bottleneck=8", "num_frames=4", "batch_size=2", "max_steps=3",
                                      "val_every=100", "checkpoint_every=100", "report_to=none", "lr_warmup_steps=0",
                                      "learning_rate=1e-3",
                                      "train_manifest=" + str(REPO / "data_samples/general/val.jsonl"),
                                      "val_manifest=null"])
    res = train(cfg, log=lambda *a: None)
    assert res["steps"] == 3 and np.isfinite(res["final_loss"])
    assert res["trainable"] > 0 and 0 < res["share_percent"] < 10
    saved = load_file(out / "adapters" / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in saved.items() if k.endswith("up.weight"))  # they learned something
    assert not (out / "pipeline").exists() and not (out / "merged").exists()
