"""i2v bench / i2v estimate on the tiny model (CPU). Speed targets live in benchmarks/, not here."""

import json
import subprocess
import sys

import torch
from diffusers import UNetSpatioTemporalConditionModel

from i2v_helpers.bench import BenchSetup, bench_train, format_bench
from i2v_helpers.config import load_config
from i2v_helpers.estimate import estimate_memory, unet_activation_bytes
from i2v_helpers.models import TINY_SVD_DIR, TinySVDConfig, build_tiny_unet


def test_bench_train_reports_both_loops_on_the_same_setup():
    import time

    t0 = time.perf_counter()
    res = bench_train(BenchSetup(preset="tiny", frames=4, warmup=0, steps=1), device="cpu")
    wall = time.perf_counter() - t0
    # the two timed steps happened inside this call: together they cannot exceed its wall time
    assert 0 < res["naive"]["step_s"] + res["trainer"]["step_s"] < wall
    for kind in ("naive", "trainer"):
        r = res[kind]
        assert r["peak_mem_bytes"] > 2 ** 20  # at least the model's weights
        assert r["trainable"] == res["naive"]["trainable"]  # same model, same technique
    assert res["trainer"]["model_tflop_per_step"] > 0
    text = format_bench(res)
    assert "naive" in text and "trainer" in text and "speedup" in text


def test_meta_trace_matches_saved_tensors_of_a_real_forward():
    """The estimator's meta-device count equals what autograd really saves on CPU."""
    cfg = TinySVDConfig(num_frames=4)
    torch.manual_seed(0)
    unet = build_tiny_unet(cfg).train()
    seen, total = set(), [0]
    params = {p.data_ptr() for p in unet.parameters()}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in params and key not in seen:
            seen.add(key)
            total[0] += t.untyped_storage().nbytes()
        return t

    c = unet.config
    x = torch.randn(2, 4, c.in_channels, 8, 8, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unet(x, torch.ones(2), encoder_hidden_states=torch.randn(2, 1, c.cross_attention_dim),
             added_time_ids=torch.ones(2, 3))
    predicted = unet_activation_bytes(dict(unet.config), 2, 4, (8, 8), torch.float32, "full")["no_checkpointing"]
    assert abs(predicted - total[0]) / total[0] < 0.1, (predicted, total[0])


def test_checkpointing_modes_order_and_estimate_breakdown():
    cfg = TinySVDConfig(num_frames=4)
    act = unet_activation_bytes(dict(build_tiny_unet(cfg).config), 2, 4, (8, 8), torch.float32)
    assert act["no_checkpointing"] > act["diffusers"] > act["full"] > 0
    est = estimate_memory(load_config("tiny-stage1"))
    parts = ("unet_weights_frozen", "unet_weights_trainable", "autocast_weight_copies", "vae_clip_weights",
             "gradients", "optimizer_states", "ema")
    assert all(est[k] >= 0 for k in parts)
    accum = estimate_memory(load_config("tiny-stage1", ["grad_accum=2"]))
    # with accumulation the gradients of earlier micro-batches stay alive beside the next one's activations
    assert accum["total"] - est["total"] == min(est["gradients"], est["activations_no_checkpointing"])
    # known answers from the model itself: full fine-tuning trains every UNet parameter, with fp32
    # gradients (4 bytes) and AdamW's two fp32 states (8 bytes) each
    n = sum(p.numel() for p in UNetSpatioTemporalConditionModel.from_pretrained(
        TINY_SVD_DIR / "unet", use_safetensors=True).parameters())
    assert est["trainable_parameters"] == n
    assert est["gradients"] == 4 * n and est["optimizer_states"] == 8 * n


def test_autocast_trace_counts_the_fp32_tensors_groupnorm_leaves():
    config = dict(build_tiny_unet(TinySVDConfig(num_frames=4)).config)
    plain = unet_activation_bytes(config, 2, 4, (8, 8), torch.bfloat16, "lora")
    mixed = unet_activation_bytes(config, 2, 4, (8, 8), torch.bfloat16, "lora", autocast=True)
    fp32 = unet_activation_bytes(config, 2, 4, (8, 8), torch.float32, "lora")
    for k in plain:  # more than an all-bf16 trace, less than an all-fp32 one
        assert plain[k] < mixed[k] < fp32[k], (k, plain[k], mixed[k], fp32[k])


def test_estimate_cli_on_a_shipped_svd_xt_config():
    out = subprocess.run([sys.executable, "-m", "i2v_helpers.cli", "estimate", "svd-xt-lora", "--json"],
                         capture_output=True, text=True, check=True).stdout
    est = json.loads(out)
    assert est["unet_parameters"] > 1.5e9 and est["checkpointing_as_configured"] == "full"
    # LoRA r=16 trains well under 1 % of SVD-xt's UNet; full checkpointing is what makes it fit a 24 GB card
    assert est["trainable_parameters"] / est["unet_parameters"] < 0.01
    assert est["total_full"] < est["total_diffusers"] < est["total_no_checkpointing"]


def test_estimate_of_a_hub_id_without_a_resolution_uses_svd_xt_size():
    """No local folder, no `resolution`: the estimate is for SVD-xt at its native 576 x 1024 (before, the
    missing config raised instead). The same config with the size spelled out gives the same estimate."""
    sets = ["num_frames=14", "gradient_checkpointing=full"]
    implicit = estimate_memory(load_config("svd-xt-lora", sets + ["resolution=null"]))
    explicit = estimate_memory(load_config("svd-xt-lora", sets + ["resolution=[576, 1024]"]))
    assert implicit["total"] == explicit["total"] > 0
