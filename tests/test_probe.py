"""The σ_start probe (i2v_helpers.probe) and the pre-training pieces added for the CPU v2 build:
the cached UNet step, the curriculum, the warm-up/stable/decay schedule and the learning curve."""

import math

import numpy as np
import pytest
import torch

from i2v_helpers import probe
from i2v_helpers.models import TinySVDConfig, build_tiny_pipeline, vae_reconstruct
from i2v_helpers.objective import (
    ObjectiveConfig,
    edm_preconditioning,
    encode_image_latents,
    min_snr_weight,
    sample_noise_aug,
)
from i2v_helpers.pretrain import (
    PretrainConfig,
    cached_unet_loss,
    check_curriculum,
    curriculum_frames,
    run_phases,
    unet_phase_loss,
    wsd_lr_at,
)
from i2v_helpers.probe import denoise_from, karras_ladder, learning_curve_probe, probe_items


@pytest.fixture(scope="module")
def pipe4():
    return build_tiny_pipeline(TinySVDConfig(num_frames=4), seed=0)


def _item(frames=4, seed=0):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8)
    return {"image": video[0], "video": video, "fps": 8.0, "motion_bucket_id": 30.0, "objects": None}


def test_sigma_zero_is_the_vae_alone(pipe4):
    item = _item()
    want = vae_reconstruct(pipe4.vae, torch.from_numpy(item["video"]).permute(0, 3, 1, 2).float() / 127.5 - 1)
    got = denoise_from(pipe4, item, 0.0)
    np.testing.assert_array_equal(got, ((want.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())


def test_probe_euler_is_the_schedulers_euler(pipe4):
    """From the top of the ladder, the probe's written-out Euler loop lands where diffusers'
    EulerDiscreteScheduler (scale_model_input → UNet → step) lands from the same start."""
    from diffusers import EulerDiscreteScheduler

    from i2v_helpers.frames import to_model_range
    from i2v_helpers.objective import added_time_ids, clip_pixels, encode_clip

    item, steps, top = _item(), 6, float(karras_ladder(pipe4, 6)[0])
    ours = denoise_from(pipe4, item, top, seed=3, steps=steps)
    # the same start and conditioning, stepped by the scheduler
    vae = pipe4.vae
    with torch.no_grad():
        z0 = (vae.encode(to_model_range(item["video"])).latent_dist.mode() * vae.config.scaling_factor)[None]
        g = torch.Generator().manual_seed(3)
        x = z0 + top * torch.randn(z0.shape, generator=g)
        image = to_model_range(item["image"][None])
        img_lat = encode_image_latents(vae, image, torch.full((1,), 0.02), g).unsqueeze(1).repeat(1, 4, 1, 1, 1)
        emb = encode_clip(pipe4.image_encoder, clip_pixels(image, pipe4.feature_extractor))
        ids = added_time_ids(8.0, 30.0, 0.02, batch=1)
        sched = EulerDiscreteScheduler.from_config(pipe4.scheduler.config)
        sched.set_timesteps(steps)
        for t in sched.timesteps:
            inp = torch.cat([sched.scale_model_input(x, t), img_lat], dim=2)
            out = pipe4.unet(inp, t, encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)[0]
            x = sched.step(out, t, x).prev_sample
        rec = vae.decode(x[0] / vae.config.scaling_factor, num_frames=4).sample
    theirs = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_probe_items_carry_objects():
    items = probe_items(n=3)
    assert len(items) == 3 and all(it["objects"] for it in items)
    assert items[0]["video"].shape == (16, 64, 64, 3)


def test_curve_probe_pairs_generation_with_repeat_the_first_frame(pipe4, monkeypatch):
    """A "model" that returns the frozen first frame ties the baseline exactly (difference 0, SE 0);
    one that returns the true clip beats it by the baseline's whole error, clip by clip."""
    items = probe_items(n=8)  # 16 frames: the probe's own clips, where the ball has moved
    truth = {id(it["image"]): it["video"] for it in items}
    monkeypatch.setattr(probe, "sigma_probe", lambda *a, **k: {})  # only the generation half here
    monkeypatch.setattr(probe, "generate", lambda pipe, image, num_frames, **k: np.repeat(image[None], num_frames, 0))
    still = learning_curve_probe(pipe4, items, seeds=(0, 1))
    assert still["d_object_err_px"] == 0 and still["se_d_object_err_px"] == 0 and still["d_flow_epe"] == 0
    monkeypatch.setattr(probe, "generate", lambda pipe, image, **k: truth[id(image)])
    real = learning_curve_probe(pipe4, items)
    assert real["object_kept"] == 1 and real["flow_epe"] < 1e-6
    assert real["d_object_err_px"] == pytest.approx(real["object_err_px"] - real["base_object_err_px"])
    assert real["d_object_err_px"] < -2 * real["se_d_object_err_px"] < 0


def test_min_snr_on_clean_error_is_the_papers_v_weight():
    """Hang et al. weight the v-error by min(SNR, γ) / (SNR + 1); the v-error is |D - x0|² / c_out²."""
    sigma = torch.tensor([0.05, 0.3, 1.0, 3.0, 80.0])
    err_x0 = torch.rand(5) + 0.1
    c_out = edm_preconditioning(sigma)[1]
    snr = sigma.pow(-2)
    v_form = torch.minimum(snr, torch.tensor(5.0)) / (snr + 1) * err_x0 / c_out**2
    torch.testing.assert_close(min_snr_weight(sigma, 5.0) * err_x0, v_form)
    with pytest.raises(ValueError, match="weighting"):
        ObjectiveConfig(weighting="minsnr")


def test_cached_unet_step_is_the_encoding_step(pipe4):
    """Given the same first-frame latent and aug, the cached step is the step that encodes."""
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(2, 4, pipe4.vae.config.latent_channels, 16, 16, generator=g)
    first = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    fps, bucket = torch.full((2,), 8.0), torch.full((2,), 30.0)
    cfg = PretrainConfig(device="cpu")
    a = unet_phase_loss(pipe4, pipe4.unet, lat, first, fps, bucket, cfg, torch.Generator().manual_seed(5))
    g2 = torch.Generator().manual_seed(5)  # the same draws, in the same order: aug, encoding noise, then the loss
    aug = sample_noise_aug(2, ObjectiveConfig(), g2)
    with torch.no_grad():
        img_lat = encode_image_latents(pipe4.vae, first, aug, g2)
    b = cached_unet_loss(pipe4, pipe4.unet, lat, img_lat, aug, first, fps, bucket, cfg, g2)
    torch.testing.assert_close(a, b)


def test_curriculum_frames_and_its_check():
    assert [curriculum_frames("4:0.5,16", f) for f in (0.0, 0.49, 0.5, 0.99)] == [4, 4, 16, 16]
    assert curriculum_frames("", 0.3) == 16 and curriculum_frames("1:0.2,4:0.6,16", 0.3) == 4
    for bad in ("4:0.5,32", "4:0.6,8:0.5,16", "four"):
        with pytest.raises(ValueError, match="unet_curriculum"):
            check_curriculum(bad, 16)


def test_wsd_schedule_is_unchanged_by_a_longer_budget_before_its_decay():
    lr = [wsd_lr_at(1e-3, s, 3600, 600, 0.1) for s in (0, 30, 60, 2000, 3000, 3300, 3600)]
    assert lr[0] == 0 and lr[1] == pytest.approx(5e-4) and lr[2] == lr[3] == lr[4] == 1e-3
    assert lr[5] == pytest.approx(1e-3 * 0.55) and lr[6] == pytest.approx(1e-4)
    assert [wsd_lr_at(1e-3, s, 7200, 600, 0.1) for s in (60, 2000, 3000)] == lr[2:5]


def test_vae_phase_stops_at_its_psnr_target_and_a_resume_keeps_the_probes_time(tmp_path):
    """Interrupted before its first probe, a phase probes at the planned training time when resumed, not a
    whole probe period after the resume (which, with a resume every session, could postpone it forever).
    A target any VAE meets then ends the phase at that probe; the curve has the point and a rerun does not
    continue the phase."""
    import json

    cfg = PretrainConfig(work_dir=str(tmp_path), corpus_clips=4, vae_minutes=0.05, vae_target_db=1.0,
                         vae_probe_minutes=0.1, probe_at_start=False, threads=1, vae_crop=16, vae_batch_clips=1,
                         vae_frames=2, vae_heldout_clips=2)
    run_phases(cfg, ("vae",), log=lambda *_: None)  # 3 s of training; the first probe is due at 6 s
    state = json.loads((tmp_path / "vae" / "state.json").read_text())
    assert state["seconds"] < 6 and state["next_probe_s"] == pytest.approx(6.0) and not state.get("done")
    assert not (tmp_path / "curve.csv").exists()
    cfg.vae_minutes = 5  # resumed: the probe runs at 6 s (it used to be due at 3 + 6 = 9 s), meets 1 dB, stops
    run_phases(cfg, ("vae",), log=lambda *_: None)
    rows = (tmp_path / "curve.csv").read_text().splitlines()
    assert rows[0] == "phase,step,seconds,metric,value,time" and len(rows) == 2
    phase, step, seconds, metric, value = rows[1].split(",")[:5]
    assert (phase, metric) == ("vae", "vae_psnr_db") and int(step) > 0 and 6 <= float(seconds) < 9
    assert math.isfinite(float(value))
    state = json.loads((tmp_path / "vae" / "state.json").read_text())
    assert state["done"] and state["steps"] == int(step)
    assert run_phases(cfg, ("vae",), log=lambda *_: None) == {}


@pytest.mark.slow
def test_a_kept_phase_restores_on_a_fresh_machine_and_resumes_with_a_rewarmed_optimizer(tmp_path):
    """keep_phase copies the weights (fp16 where asked) and state, not the optimizer; restore_phase seeds an
    empty work folder with them, and the phase resumes there: same step count, lr back to 0 then re-warmed."""
    from diffusers import AutoencoderKLTemporalDecoder

    from i2v_helpers.pretrain import keep_phase, load_phase_state, restore_phase

    cfg = PretrainConfig(work_dir=str(tmp_path / "a"), corpus_clips=4, vae_minutes=0.05, vae_probe_minutes=0,
                         threads=1, vae_crop=16, vae_batch_clips=1, vae_frames=2, vae_heldout_clips=2)
    run_phases(cfg, ("vae",), log=lambda *_: None)
    kept = keep_phase(tmp_path / "a", "vae", tmp_path / "kept", half=("vae",))
    assert sorted(p.name for p in kept.iterdir()) == ["state.json", "vae"]  # no optimizer.pt
    trained = AutoencoderKLTemporalDecoder.from_pretrained(tmp_path / "a" / "vae" / "vae").state_dict()
    back = AutoencoderKLTemporalDecoder.from_pretrained(kept / "vae").state_dict()
    assert all(torch.equal(back[k], trained[k].half().float()) for k in trained)

    fresh = tmp_path / "b"
    assert restore_phase(tmp_path / "kept", fresh, "vae") and not restore_phase(tmp_path / "kept", fresh, "vae")
    before = load_phase_state(fresh, "vae")
    assert before["steps"] == load_phase_state(tmp_path / "a", "vae")["steps"] > 0
    logs = []
    cfg.work_dir, cfg.vae_minutes = str(fresh), 0.1
    run_phases(cfg, ("vae",), log=logs.append)
    assert any("from weights only: fresh optimizer" in m for m in logs)
    after = load_phase_state(fresh, "vae")
    assert after["steps"] > before["steps"] and after["rewarm_from_s"] == pytest.approx(before["seconds"])
