"""The fine-tuning engine on a small random tiny SVD (fast on CPU)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from i2v_helpers.models import TinySVDConfig, build_tiny_pipeline
from i2v_helpers.training import (EncodedClips, TrainingDiverged, batch_loss, latest_checkpoint, load_config, train,
                                  _collate)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("base") / "pipe"
    build_tiny_pipeline(TinySVDConfig(num_frames=4), seed=0).save_pretrained(d, safe_serialization=True)
    return d


def _cfg(base, out, **kw):
    over = [f"init_from={base}", f"output_dir={out}", "num_frames=4", "batch_size=2", "max_steps=4",
            "val_every=2", "val_batches=1", "checkpoint_every=2", "log_every=1", "report_to=none",
            "lr_warmup_steps=0", "train_manifest=" + str(REPO / "data_samples/general/val.jsonl"),
            "val_manifest=" + str(REPO / "data_samples/sports/val.jsonl")]
    return load_config("tiny-stage1", over + [f"{k}={v}" for k, v in kw.items()])


def test_config_names_overrides_and_errors():
    cfg = load_config("tiny-stage2-sports", ["max_steps=7", "lora_blocks=temporal", "val_images=[a.png]"])
    assert (cfg.max_steps, cfg.lora_blocks, cfg.val_images, cfg.technique) == (7, "temporal", ["a.png"], "lora")
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config("tiny-stage1", ["learning_rat=1"])
    with pytest.raises(FileNotFoundError, match="shipped:"):
        load_config("no-such-config")
    for name in ("svd-xt-lora", "svd-xt-lora-24gb", "svd-xt-full", "tiny-stage2-animated"):
        assert load_config(name).max_steps > 0


def test_lora_run_trains_only_the_adapter_and_writes_the_layout(base, tmp_path):
    out = tmp_path / "lora"
    events = []
    res = train(_cfg(base, out, technique="lora", lora_rank=4), callbacks=[lambda e, i: events.append(e)],
                log=lambda *a: None)
    assert res["steps"] == 4 and np.isfinite(res["final_loss"]) and res["val_loss"] is not None
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "merged" / "model_index.json").is_file()
    assert events.count("step") == 4 and events.count("val") == 2
    # the merged UNet differs from the base only in attention projections
    before = load_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(out / "merged" / "unet" / "diffusion_pytorch_model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(any(t in k for t in ("to_q", "to_k", "to_v", "to_out.0")) for k in changed)
    assert torch.equal(load_file(base / "vae" / "diffusion_pytorch_model.safetensors")["decoder.conv_out.weight"],
                       load_file(out / "merged" / "vae" / "diffusion_pytorch_model.safetensors")["decoder.conv_out.weight"])


def test_full_subset_changes_only_matching_parameters(base, tmp_path):
    out = tmp_path / "full"
    train(_cfg(base, out, technique="full", full_subset="temporal_transformer_block"), log=lambda *a: None)
    before = load_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(out / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("temporal_transformer_block" in k for k in changed)


def test_resume_matches_an_uninterrupted_run(base, tmp_path):
    full = train(_cfg(base, tmp_path / "a", technique="full"), log=lambda *a: None)

    def crash(event, info):
        if event == "step" and info["step"] == 3:
            raise KeyboardInterrupt("simulated crash after the step-2 checkpoint")

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(base, tmp_path / "b", technique="full"), callbacks=[crash], log=lambda *a: None)
    assert latest_checkpoint(tmp_path / "b").name == "step_000002"
    assert not (tmp_path / "b" / "pipeline").exists()
    resumed = train(_cfg(base, tmp_path / "b", technique="full"), resume=True, log=lambda *a: None)
    a = load_file(tmp_path / "a" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "b" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert resumed["steps"] == full["steps"] == 4


def test_nan_loss_stops_cleanly_and_keeps_the_last_checkpoint(base, tmp_path):
    with pytest.raises(TrainingDiverged, match="Last good checkpoint"):
        train(_cfg(base, tmp_path / "nan", technique="full", learning_rate=1e30, max_steps=6), log=lambda *a: None)
    ck = latest_checkpoint(tmp_path / "nan")
    if ck is not None:  # whatever was saved before the blow-up is complete and loadable
        assert all(torch.isfinite(v).all() for v in load_file(ck / "trainable.safetensors").values())


def test_cached_and_uncached_give_the_same_loss(base):
    from i2v_helpers.data import VideoClipDataset
    from i2v_helpers.models import load_pipeline
    from i2v_helpers.objective import ObjectiveConfig

    pipe = load_pipeline(base, device="cpu", dtype=torch.float32)
    ds = VideoClipDataset(REPO / "data_samples/general/val.jsonl", num_frames=4, size=64)
    cached, live = EncodedClips(ds, pipe, "memory", log=lambda *a: None), EncodedClips(ds, pipe, "off")
    assert cached.items is not None and live.items is None
    b1, b2 = _collate([cached[0], cached[1]]), _collate([live[0], live[1]])
    l1 = batch_loss(pipe, pipe.unet, b1, ObjectiveConfig(), torch.Generator().manual_seed(0))
    l2 = batch_loss(pipe, pipe.unet, b2, ObjectiveConfig(), torch.Generator().manual_seed(0))
    assert torch.allclose(l1, l2, atol=1e-6)


def test_disk_cache_is_reused_and_keyed(base, tmp_path):
    from i2v_helpers.data import VideoClipDataset
    from i2v_helpers.models import load_pipeline

    pipe = load_pipeline(base, device="cpu", dtype=torch.float32)
    ds = VideoClipDataset(REPO / "data_samples/general/val.jsonl", num_frames=4, size=64)
    msgs = []
    first = EncodedClips(ds, pipe, "disk", tmp_path, log=msgs.append)
    second = EncodedClips(ds, pipe, "disk", tmp_path, log=msgs.append)
    assert "encoded" in msgs[0] and "loaded" in msgs[1]
    assert torch.equal(first[3]["latents"], second[3]["latents"])
    ds8 = VideoClipDataset(REPO / "data_samples/general/val.jsonl", num_frames=8, size=64)
    assert EncodedClips(ds8, pipe, "disk", tmp_path, log=msgs.append).cache_key() != first.cache_key()


KILL_DURING_SAVE = r"""
import os, signal, sys, torch
from pathlib import Path
from i2v_helpers.models import TinySVDConfig, build_tiny_unet
from i2v_helpers.training import save_checkpoint
out = Path(sys.argv[1])
unet = build_tiny_unet(TinySVDConfig(num_frames=4))
opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
unet(torch.randn(1, 4, 32, 8, 8), torch.tensor([0.1]), encoder_hidden_states=torch.randn(1, 1, 64),
     added_time_ids=torch.tensor([[7.0, 127.0, 0.02]])).sample.mean().backward()
opt.step()
save_checkpoint(out, 2, unet, opt, sched)
real_save = torch.save
def die(*a, **k):  # the weights are written, the optimizer state is half-way: SIGKILL
    real_save(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = die
save_checkpoint(out, 4, unet, opt, sched)
"""


def test_sigkill_during_a_checkpoint_save_leaves_the_previous_one_loadable(tmp_path):
    import subprocess
    import sys

    from i2v_helpers.models import build_tiny_unet
    from i2v_helpers.training import load_checkpoint

    res = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == -9, res.stderr[-1000:]
    assert (tmp_path / "checkpoints" / "step_000004.tmp").is_dir()  # the interrupted write
    ck = latest_checkpoint(tmp_path)
    assert ck.name == "step_000002"
    unet = build_tiny_unet(TinySVDConfig(num_frames=4))
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    assert load_checkpoint(ck, unet, opt, sched) == 2
    assert len(opt.state) > 0  # optimizer moments restored


def test_two_process_cpu_run_matches_one_process(base, tmp_path):
    """DDP over gloo on 2 CPU processes, 2 clips each = 1 process with 4 clips: same losses and weights."""
    import subprocess
    import sys

    common = [f"init_from={base}", "technique=full", "num_frames=4", "max_steps=3", "report_to=none",
              "val_manifest=null", "checkpoint_every=0", "lr_warmup_steps=0",
              "train_manifest=" + str(REPO / "data_samples/general/val.jsonl")]

    def run(nproc, batch, out):
        sets = [a for kv in common + [f"batch_size={batch}", f"output_dir={out}"] for a in ("--set", kv)]
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port",
               str(29500 + nproc), "-m", "i2v_helpers.cli", "train", "tiny-stage1", *sets]
        res = subprocess.run(cmd, capture_output=True, text=True, env={**__import__("os").environ,
                                                                       "OMP_NUM_THREADS": "1"})
        assert res.returncode == 0, res.stderr[-3000:]
        return json.loads((out / "result.json").read_text())

    one, two = run(1, 4, tmp_path / "one"), run(2, 2, tmp_path / "two")
    assert len(one["loss_history"]) == len(two["loss_history"]) == 3
    assert np.allclose(one["loss_history"], two["loss_history"], rtol=1e-4, atol=1e-5)
    a = load_file(tmp_path / "one" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "two" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_seed_objective_option_and_sample_limits(base, tmp_path):
    """loss=ddpm-epsilon trains with the seed's noise-MSE (notebook 02's comparison); max_train_samples
    uses the first N clips; a bad loss name fails when the config is made, not at step 1."""
    logs = []
    res = train(_cfg(base, tmp_path / "eps", technique="full", loss="ddpm-epsilon", max_steps=2, val_manifest="null",
                     max_train_samples=3, checkpoint_every=0), log=logs.append)
    assert res["steps"] == 2 and np.isfinite(res["final_loss"])
    assert any("encoded 3 clips" in line for line in logs)
    edm = train(_cfg(base, tmp_path / "edm", technique="full", max_steps=2, val_manifest="null", max_train_samples=3,
                     checkpoint_every=0), log=lambda *a: None)
    # same data, seeds and start: the two objectives give different losses from the first step
    assert abs(edm["loss_history"][0] - res["loss_history"][0]) > 1e-3
    with pytest.raises(ValueError, match="loss must be edm or ddpm-epsilon"):
        _cfg(base, tmp_path / "x", loss="mse")


def test_live_training_plot_records_outside_a_notebook():
    from i2v_helpers.viz import LiveTrainingPlot

    plot = LiveTrainingPlot(every=2)
    for step in range(1, 5):
        plot("step", {"step": step, "loss": 1.0 / step, "lr": 1e-4})
    plot("val", {"step": 4, "val_loss": 0.3})
    plot("video", {"step": 4, "path": "validation/step_000004_0.mp4", "frames": np.zeros((2, 8, 8, 3), np.uint8)})
    assert plot.steps == [1, 2, 3, 4] and plot.val_losses == [0.3] and list(plot.videos) == [4]
    fig = plot.figure()
    assert len(fig.axes[0].lines) == 2  # train (per step) + validation; the running mean needs 10 steps
