"""The fine-tuning engine on a small random tiny SVD (fast on CPU)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO  # tests/conftest.py
from i2v_helpers.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from i2v_helpers.config import ALLOWED_VALUES, CONFIG_DIR, TrainConfig, load_config
from i2v_helpers.encoded import EncodedClips, collate, save_items
from i2v_helpers.errors import ConfigError
from i2v_helpers.models import TinySVDConfig, build_tiny_pipeline
from i2v_helpers.training import TrainingDiverged, batch_loss, epoch_batches, train


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


def test_every_shipped_config_loads():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert len(names) >= 7 and "svd-xt-lora" in names
    for name in names:
        assert load_config(name).max_steps > 0, name


@pytest.mark.parametrize("name, allowed", ALLOWED_VALUES.items())
def test_config_takes_the_allowed_values_and_names_the_key_of_others(name, allowed):
    for value in allowed:
        assert getattr(TrainConfig(**{name: value}), name) == value
    with pytest.raises(ConfigError, match=rf"^{name} must be one of .*, got 'typo'$"):
        TrainConfig(**{name: "typo"})
    with pytest.raises(ValueError, match=name):  # a ConfigError is a ValueError, as these errors were before
        load_config("tiny-stage1", [f"{name}=typo"])


def test_config_allowed_values_are_exact():
    # YAML's spellings of the booleans pass; 1 == True in Python, but enable_checkpointing would refuse 1
    assert load_config("tiny-stage1", ["gradient_checkpointing=on"]).gradient_checkpointing is True
    with pytest.raises(ConfigError, match="gradient_checkpointing must be one of false, true, diffusers, full, got 1"):
        load_config("tiny-stage1", ["gradient_checkpointing=1"])
    with pytest.raises(ConfigError, match="lora_blocks"):  # a list of patterns is not a preset name
        load_config("tiny-stage1", ["lora_blocks=[temporal]"])


@pytest.mark.slow
def test_lora_run_trains_only_the_adapter_and_writes_the_layout(base, tmp_path):
    out = tmp_path / "lora"
    events = []
    res = train(_cfg(base, out, technique="lora", lora_rank=4), callbacks=[lambda e, i: events.append((e, i))],
                log=lambda *a: None)
    assert res["steps"] == 4 and np.isfinite(res["final_loss"]) and res["val_loss"] is not None
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "merged" / "model_index.json").is_file()
    kinds = [e for e, _ in events]
    assert kinds.count("step") == 4 and kinds.count("val") == 3  # before the first step, then steps 2 and 4
    # the curve starts at the starting model's level: validated before any step, with no video
    assert kinds[0] == "val" and events[0][1] == {"step": 0, "val_loss": res["val_loss_start"]}
    assert not any(e == "video" and i["step"] == 0 for e, i in events)
    # the merged UNet differs from the base only in attention projections
    before = load_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(out / "merged" / "unet" / "diffusion_pytorch_model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(any(t in k for t in ("to_q", "to_k", "to_v", "to_out.0")) for k in changed)
    vae_file = Path("vae") / "diffusion_pytorch_model.safetensors"
    assert torch.equal(load_file(base / vae_file)["decoder.conv_out.weight"],
                       load_file(out / "merged" / vae_file)["decoder.conv_out.weight"])


def _bf16_run(base, out, **kw):
    """2 bf16 steps with a validation loss and a validation video at step 2."""
    events = []
    res = train(_cfg(base, out, mixed_precision="bf16", max_steps=2, checkpoint_every=0, max_train_samples=2,
                     max_val_samples=2, val_video_steps=1,
                     val_images=f"[{REPO / 'data_samples/sports/val/0000.png'}]", **kw),
                callbacks=[lambda e, i: events.append((e, i))], log=lambda *a: None)
    videos = [i for e, i in events if e == "video"]
    assert res["steps"] == 2 and np.isfinite(res["val_loss"]) and len(videos) == 1
    assert Path(videos[0]["path"]).is_file() and videos[0]["frames"].shape == (4, 64, 64, 3)
    return res


def _untouched_are_exact(base, saved, trained=lambda key: False):
    """Every weight of ``saved`` except the ``trained`` keys is bit-identical to ``base`` (fp32)."""
    for part in ("unet/diffusion_pytorch_model", "vae/diffusion_pytorch_model", "image_encoder/model"):
        before, after = load_file(base / f"{part}.safetensors"), load_file(saved / f"{part}.safetensors")
        assert before.keys() == after.keys()
        for k in before:
            if not trained(k):
                assert after[k].dtype == torch.float32, (part, k)
                assert torch.equal(before[k], after[k]), f"{part} {k}: not the base's exact value"


def test_bf16_lora_run_validates_and_saves_base_plus_adapter_exactly(base, tmp_path):
    """bf16 keeps bf16 copies of the frozen weights for training; the validation video must decode, and
    merged/ must be the fp32 base + the adapter, not the bf16-rounded base + the adapter."""
    out = tmp_path / "bf16-lora"
    _bf16_run(base, out, technique="lora", lora_rank=4)
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    conf = json.loads((out / "adapter" / "adapter_config.json").read_text())
    scale = conf["lora_alpha"] / conf["r"]
    targets = {k[len("base_model.model."):-len(".lora_A.weight")] for k in adapter if k.endswith(".lora_A.weight")}
    _untouched_are_exact(base, out / "merged", trained=lambda k: k[:-len(".weight")] in targets)
    before = load_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(out / "merged" / "unet" / "diffusion_pytorch_model.safetensors")
    assert targets and any(adapter[f"base_model.model.{t}.lora_B.weight"].abs().max() > 0 for t in targets)
    for t in targets:
        delta = adapter[f"base_model.model.{t}.lora_B.weight"] @ adapter[f"base_model.model.{t}.lora_A.weight"]
        assert torch.allclose(after[f"{t}.weight"], before[f"{t}.weight"] + scale * delta, rtol=0, atol=1e-7), t


def test_bf16_full_run_validates_and_keeps_untrained_weights_exact(base, tmp_path):
    out = tmp_path / "bf16-full"
    _bf16_run(base, out, technique="full", full_subset="temporal_transformer_block")
    _untouched_are_exact(base, out / "pipeline", trained=lambda k: "temporal_transformer_block" in k)
    # and the run's own pipeline samples
    from i2v_helpers.generation import generate
    from i2v_helpers.models import load_pipeline
    from i2v_helpers.video_io import read_image

    pipe = load_pipeline(out / "pipeline", device="cpu", dtype=torch.float32)
    frames = generate(pipe, read_image(REPO / "data_samples/sports/val/0000.png"), num_frames=4, steps=1)
    assert frames.shape == (4, 64, 64, 3)


def test_checkpoint_restores_the_grad_scaler(tmp_path):
    """fp16: the loss scale (and its growth counter) is part of the exact resume state."""
    from i2v_helpers.models import build_tiny_unet

    unet = build_tiny_unet(TinySVDConfig(num_frames=4))
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
    scaler.scale(torch.ones(()))  # lazily creates the scale and the growth tracker
    scaler.update(1024.0)
    scaler._growth_tracker.fill_(2)
    ck = save_checkpoint(tmp_path, 2, unet, opt, sched, scaler=scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
    assert load_checkpoint(ck, unet, opt, sched, scaler=fresh) == 2
    assert fresh.get_scale() == 1024.0 and fresh._get_growth_tracker() == 2


def test_zero_turns_logging_and_validation_off_and_checkpoint_keeping_is_defined(base, tmp_path):
    from i2v_helpers.models import build_tiny_unet

    events = []
    res = train(_cfg(base, tmp_path / "off", val_every=0, log_every=0, max_steps=2, checkpoint_every=0,
                     max_train_samples=2), callbacks=[lambda e, i: events.append(e)], log=lambda *a: None)
    assert res["steps"] == 2 and res["val_loss"] is None and events == ["step", "step"]
    with pytest.raises(ValueError, match="keep_checkpoints must be >= 1"):
        load_config("tiny-stage1", ["keep_checkpoints=0"])
    with pytest.raises(ValueError, match="val_every must be >= 0"):
        load_config("tiny-stage1", ["val_every=-1"])
    unet = build_tiny_unet(TinySVDConfig(num_frames=4))
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for keep, left in ((None, [1, 2, 3]), (1, [3])):
        for step in (1, 2, 3):
            save_checkpoint(tmp_path / str(keep), step, unet, opt, sched, keep=keep)
        assert sorted(p.name for p in (tmp_path / str(keep) / "checkpoints").iterdir()) == \
            [f"step_{s:06d}" for s in left]
    assert load_config("tiny-stage1", ["keep_checkpoints=null"]).keep_checkpoints is None


def test_sharded_runs_are_refused_up_front(base, tmp_path, monkeypatch):
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType.FSDP))
    with pytest.raises(ValueError, match="FSDP is not supported"):
        train(_cfg(base, tmp_path / "run", max_steps=1))
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before anything is written


def test_full_subset_changes_only_matching_parameters(base, tmp_path):
    out = tmp_path / "full"
    train(_cfg(base, out, technique="full", full_subset="temporal_transformer_block"), log=lambda *a: None)
    before = load_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(out / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("temporal_transformer_block" in k for k in changed)


@pytest.mark.parametrize("kw", [pytest.param({}, marks=pytest.mark.slow),
                                dict(ema_decay=0.9, grad_accum=2, val_manifest="null", max_train_samples=4)],
                         ids=["plain", "ema-accum2"])
def test_resume_matches_an_uninterrupted_run(base, tmp_path, kw):
    """With EMA the saved UNet is the average: a resume that restarted the average (diffusers' decay is 0
    on its first step) would save the step-3 weights' average, not the uninterrupted run's."""
    kw = dict(technique="full", **kw)
    full = train(_cfg(base, tmp_path / "a", **kw), log=lambda *a: None)

    def crash(event, info):
        if event == "step" and info["step"] == 3:
            raise KeyboardInterrupt("simulated crash after the step-2 checkpoint")

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(base, tmp_path / "b", **kw), callbacks=[crash], log=lambda *a: None)
    assert latest_checkpoint(tmp_path / "b").name == "step_000002"
    assert not (tmp_path / "b" / "pipeline").exists()
    resumed = train(_cfg(base, tmp_path / "b", **kw), resume=True, log=lambda *a: None)
    a = load_file(tmp_path / "a" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "b" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical
    assert resumed["steps"] == full["steps"] == 4


def test_nan_loss_stops_cleanly_and_keeps_the_last_checkpoint(base, tmp_path):
    """lr 1e30: step 1 leaves huge but finite weights (checkpointed), step 2's loss is not finite."""
    with pytest.raises(TrainingDiverged, match=r"loss is .*Last good checkpoint: .*step_000001"):
        train(_cfg(base, tmp_path / "nan", technique="full", learning_rate=1e30, max_steps=6, checkpoint_every=1,
                   val_manifest="null", max_train_samples=4), log=lambda *a: None)
    ck = latest_checkpoint(tmp_path / "nan")
    assert ck.name == "step_000001"  # complete, loadable and finite
    assert all(torch.isfinite(v).all() for v in load_file(ck / "trainable.safetensors").values())


def test_non_finite_gradients_behind_a_finite_loss_stop_before_the_next_checkpoint(base, tmp_path, monkeypatch):
    """A NaN gradient in step 4 (finite loss) must stop training in step 4: the step-4 checkpoint would
    hold NaN weights. Before, the NaN weights were checkpointed and the run stopped one step later."""
    import i2v_helpers.training as training

    real_apply, backwards = training.apply_technique, []

    def apply_with_a_nan_gradient_in_step_4(unet, cfg):
        report = real_apply(unet, cfg)
        p = next(p for p in unet.parameters() if p.requires_grad)
        backwards.clear()
        p.register_hook(lambda g: (backwards.append(1), g * float("nan") if len(backwards) == 4 else g)[1])
        return report

    monkeypatch.setattr(training, "apply_technique", apply_with_a_nan_gradient_in_step_4)
    out = tmp_path / "nan-grad"
    with pytest.raises(TrainingDiverged) as err:
        train(_cfg(base, out, technique="full", max_steps=6, val_manifest="null", max_train_samples=4),
              log=lambda *a: None)
    ck = latest_checkpoint(out)
    assert ck.name == "step_000002"
    assert all(torch.isfinite(v).all() for v in load_file(ck / "trainable.safetensors").values())
    assert "weights are not finite" in str(err.value) and "in step 4" in str(err.value)


def test_cached_and_uncached_give_the_same_loss(base):
    from i2v_helpers.data import VideoClipDataset
    from i2v_helpers.models import load_pipeline
    from i2v_helpers.objective import ObjectiveConfig

    pipe = load_pipeline(base, device="cpu", dtype=torch.float32)
    ds = VideoClipDataset(REPO / "data_samples/general/val.jsonl", num_frames=4, size=64)
    cached, live = EncodedClips(ds, pipe, "memory", log=lambda *a: None), EncodedClips(ds, pipe, "off")
    assert cached.items is not None and live.items is None
    b1, b2 = collate([cached[0], cached[1]]), collate([live[0], live[1]])
    l1 = batch_loss(pipe, pipe.unet, b1, ObjectiveConfig(), torch.Generator().manual_seed(0))
    l2 = batch_loss(pipe, pipe.unet, b2, ObjectiveConfig(), torch.Generator().manual_seed(0))
    assert torch.allclose(l1, l2, atol=1e-6)


@pytest.mark.slow
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
    threads = torch.get_num_threads()
    try:  # the key is the same whatever the thread count (a notebook's and torchrun's OMP_NUM_THREADS=1)
        keys = {torch.set_num_threads(n) or first.cache_key() for n in (1, 2)}
    finally:
        torch.set_num_threads(threads)
    assert keys == {first.cache_key()}
    ds8 = VideoClipDataset(REPO / "data_samples/general/val.jsonl", num_frames=8, size=64)
    assert EncodedClips(ds8, pipe, "disk", tmp_path, log=msgs.append).cache_key() != first.cache_key()


def test_the_dataset_fingerprint_changes_with_what_decides_the_items(tmp_path):
    """What the encoded-clip cache keys on: the same manifest and settings give the same fingerprint;
    any setting, a trimmed entry list or an edited media file give another."""
    import os
    import shutil

    from i2v_helpers.data import VideoClipDataset

    for name in ("0000.mp4", "0000.png", "0001.mp4"):
        (tmp_path / "val").mkdir(exist_ok=True)
        shutil.copy(REPO / "data_samples/general/val" / name, tmp_path / "val" / name)
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text('{"image": "val/0000.png", "video": "val/0000.mp4"}\n{"video": "val/0001.mp4", "fps": 8}\n')

    def fingerprint(**kw):
        return VideoClipDataset(manifest, **{"num_frames": 4, "size": 64, "decode_check": False, **kw}).fingerprint()

    same = fingerprint()
    assert fingerprint() == same  # another dataset object, the same settings
    changes = [{"num_frames": 8}, {"size": 32}, {"size": (64, 48)}, {"sampling": "spread"}, {"stride": 2},
               {"crop": "random"}, {"hflip": 0.5}, {"random_start": True}, {"default_fps": 6.0}]
    assert len({fingerprint(**c) for c in changes} - {same}) == len(changes)
    trimmed = VideoClipDataset(manifest, 4, 64, decode_check=False)
    trimmed.entries = trimmed.entries[:1]  # as max_train_samples trims it
    assert trimmed.fingerprint() != same
    st = (tmp_path / "val/0001.mp4").stat()
    os.utime(tmp_path / "val/0001.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the clip was rewritten
    assert fingerprint() != same


def test_any_dataset_with_a_fingerprint_is_cached_on_disk(base, tmp_path):
    """EncodedClips needs len, items, ``deterministic`` and ``fingerprint()`` of its dataset, nothing else:
    the benchmark's clips in memory are cached, reloaded, and keyed by their values and conditioning."""
    from i2v_helpers.bench import InMemoryClips
    from i2v_helpers.models import load_pipeline

    pipe = load_pipeline(base, device="cpu", dtype=torch.float32)
    video = torch.rand(2, 4, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    msgs = []
    first = EncodedClips(InMemoryClips(video, 8.0, 127.0), pipe, "disk", tmp_path, log=msgs.append)
    again = EncodedClips(InMemoryClips(video.clone(), 8.0, 127.0), pipe, "disk", tmp_path, log=msgs.append)
    assert "encoded 2 clips" in msgs[0] and "loaded 2 encoded clips" in msgs[1]
    assert torch.equal(first[1]["latents"], again[1]["latents"]) and first[1]["latents"].shape[0] == 4
    other = [InMemoryClips(video, 8.0, 60.0), InMemoryClips(-video, 8.0, 127.0)]  # another bucket, other clips
    keys = {EncodedClips(clips, pipe, "off").cache_key() for clips in other}
    assert len(keys) == 2 and first.cache_key() not in keys


KILL_DURING_SAVE = r"""
import os, signal, sys, torch
from pathlib import Path
from i2v_helpers.models import TinySVDConfig, build_tiny_unet
from i2v_helpers.checkpoints import save_checkpoint
out = Path(sys.argv[1])
unet = build_tiny_unet(TinySVDConfig(num_frames=4))
opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
c, s = unet.config.in_channels, unet.config.sample_size
unet(torch.randn(1, 4, c, s, s), torch.tensor([0.1]), encoder_hidden_states=torch.randn(1, 1, 64),
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


def _torchrun(nproc: int, sets: list[str], timeout: float = 300):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port",
           str(29500 + nproc), "-m", "i2v_helpers.cli", "train", "tiny-stage1",
           *[a for kv in sets for a in ("--set", kv)]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_process_cpu_run_matches_one_process(base, tmp_path):
    """DDP over gloo on 2 CPU processes, 2 clips each = 1 process with 4 clips: same losses and weights.
    With checkpoints, validation and a disk cache on: the main process encodes and writes the cache,
    the other waits and loads it (before, both encoded and wrote the same temporary file)."""
    common = [f"init_from={base}", "technique=full", "num_frames=4", "max_steps=3", "report_to=none",
              "checkpoint_every=2", "lr_warmup_steps=0", "cache=disk", "val_every=3", "val_batches=1",
              "max_val_samples=2", "val_video_steps=1",
              "train_manifest=" + str(REPO / "data_samples/general/val.jsonl"),
              "val_manifest=" + str(REPO / "data_samples/sports/val.jsonl")]

    def run(nproc, batch, out):
        res = _torchrun(nproc, common + [f"batch_size={batch}", f"output_dir={out}"])
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout, json.loads((out / "result.json").read_text())

    (_, one), (log, two) = run(1, 4, tmp_path / "one"), run(2, 2, tmp_path / "two")
    assert log.count("[cache] encoded") == 2 and log.count("[cache] loaded") == 2  # (train + val) x 1
    assert latest_checkpoint(tmp_path / "two").name == "step_000002" and abs(two["val_loss"] - one["val_loss"]) < 1e-4
    assert (tmp_path / "two" / "validation" / "step_000003_0.mp4").is_file()
    assert len(one["loss_history"]) == len(two["loss_history"]) == 3
    assert np.allclose(one["loss_history"], two["loss_history"], rtol=1e-4, atol=1e-5)
    a = load_file(tmp_path / "one" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "two" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_seed_objective_option_and_sample_limits(base, tmp_path):
    """loss=epsilon trains with the seed's noise-MSE (notebook 02's comparison); max_train_samples
    uses the first N clips; a bad loss name fails when the config is made, not at step 1."""
    logs = []
    res = train(_cfg(base, tmp_path / "eps", technique="full", loss="epsilon", max_steps=2, val_manifest="null",
                     max_train_samples=3, checkpoint_every=0), log=logs.append)
    assert res["steps"] == 2 and np.isfinite(res["final_loss"])
    assert any("encoded 3 clips" in line for line in logs)
    edm = train(_cfg(base, tmp_path / "edm", technique="full", max_steps=2, val_manifest="null", max_train_samples=3,
                     checkpoint_every=0), log=lambda *a: None)
    # same data, seeds and start: the two objectives give different losses from the first step
    assert abs(edm["loss_history"][0] - res["loss_history"][0]) > 1e-3
    with pytest.raises(ValueError, match="loss must be edm or epsilon"):
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


@pytest.mark.slow
def test_a_non_finite_loss_on_one_process_stops_every_process(base, tmp_path):
    """2 processes; only process 1's first batch holds a NaN latent (a poisoned disk cache). Both must stop
    with TrainingDiverged (before, process 1 stopped alone and process 0 waited in backward's all-reduce)."""
    from i2v_helpers.data import VideoClipDataset
    from i2v_helpers.models import load_pipeline

    sets = [f"init_from={base}", "technique=full", "num_frames=4", "max_steps=3", "report_to=none", "batch_size=2",
            "checkpoint_every=0", "lr_warmup_steps=0", "cache=disk", f"cache_dir={tmp_path / 'cache'}",
            "val_manifest=null", "max_train_samples=4", f"output_dir={tmp_path / 'run'}",
            "train_manifest=" + str(REPO / "data_samples/general/val.jsonl")]
    cfg = load_config("tiny-stage1", sets)
    ds = VideoClipDataset(cfg.train_manifest, cfg.num_frames, 64, cfg.sampling, cfg.stride)
    ds.entries = ds.entries[:4]
    clips = EncodedClips(ds, load_pipeline(base, device="cpu", dtype=torch.float32), "disk", tmp_path / "cache",
                         log=lambda *a: None)
    first_global_batch = epoch_batches(4, 4, cfg.seed, 0)[0]  # process 0 takes its first 2 clips, process 1 the rest
    clips.items[first_global_batch[2]]["latents"][:] = float("nan")
    save_items(tmp_path / "cache" / f"{clips.cache_key()}.safetensors", clips.items)
    res = _torchrun(2, sets, timeout=240)
    assert res.returncode != 0
    assert res.stderr.count("error: loss is") == 2, res.stderr[-3000:]


@pytest.mark.slow
def test_a_run_killed_with_sigkill_and_resumed_ends_bit_identical(base, tmp_path):
    """A real ``i2v train`` process is SIGKILLed at a random moment after its step-2 checkpoint (during a
    step, or half-way through writing a checkpoint), then ``--resume``d: its trainable weights end
    bit-identical to an uninterrupted run's (both runs in subprocesses with the same thread count). With EMA,
    so the saved UNet is the average and the raw weights are compared in the last checkpoint."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    sets = [f"init_from={base}", "technique=full", "num_frames=4", "batch_size=2", "max_steps=6", "report_to=none",
            "checkpoint_every=1", "lr_warmup_steps=0", "val_manifest=null", "max_train_samples=4", "ema_decay=0.9",
            "train_manifest=" + str(REPO / "data_samples/general/val.jsonl")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cmd(out, *extra):
        return [sys.executable, "-m", "i2v_helpers.cli", "train", "tiny-stage1",
                *[a for kv in sets + [f"output_dir={out}"] for a in ("--set", kv)], *extra]

    whole = subprocess.run(cmd(tmp_path / "whole"), capture_output=True, text=True, env=env)
    assert whole.returncode == 0, whole.stderr[-2000:]

    delay = random.uniform(0.0, 1.0)
    proc = subprocess.Popen(cmd(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    t0 = time.time()
    while not (tmp_path / "killed" / "checkpoints" / "step_000002").is_dir():
        assert proc.poll() is None and time.time() - t0 < 120, "no step-2 checkpoint"
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed" / "pipeline").exists(), f"finished before the kill ({delay=:.2f})"
    resumed = subprocess.run(cmd(tmp_path / "killed", "--resume"), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout + resumed.stderr, resumed.stderr[-2000:]
    for f in ("pipeline/unet/diffusion_pytorch_model.safetensors", "checkpoints/step_000005/trainable.safetensors"):
        a, b = load_file(tmp_path / "whole" / f), load_file(tmp_path / "killed" / f)
        assert all(torch.equal(a[k], b[k]) for k in a), f"{f}: killed {delay:.2f} s after the step-2 checkpoint"
