"""The SVD objective: preconditioning identities, shapes, and train == pipeline inputs."""

import pytest
import torch
from diffusers import EulerDiscreteScheduler
from PIL import Image

from i2v_helpers import synth
from i2v_helpers.frames import to_model_range
from i2v_helpers.models import SVD_SCHEDULER_CONFIG, TinySVDConfig, build_tiny_pipeline
from i2v_helpers.objective import (
    ObjectiveConfig,
    added_time_ids,
    cfg_dropout_masks,
    clip_pixels,
    denoise,
    edm_loss_weight,
    edm_preconditioning,
    encode_clip,
    encode_image_latents,
    encode_video_latents,
    epsilon_loss,
    svd_loss,
)
from i2v_helpers.schedules import ddpm_alphas_cumprod, sigma_from_alphas, snr_from_alphas


def test_preconditioning_matches_the_euler_scheduler():
    sched = EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG)
    sched.set_timesteps(25)
    x = torch.randn(1, 4, 16, 8, 8)
    model_out = torch.randn_like(x)
    for i in (0, 7, 24):
        sched._step_index = None
        sigma = sched.sigmas[i]
        t = sched.timesteps[i]
        c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma)
        assert t == pytest.approx(c_noise.item(), rel=1e-5)
        sched._step_index = i
        assert torch.allclose(sched.scale_model_input(x, t), c_in * x, rtol=1e-5)
        sched._step_index = i
        pred_x0 = sched.step(model_out, t, x).pred_original_sample
        assert torch.allclose(pred_x0, c_skip * x + c_out * model_out, rtol=1e-4, atol=1e-4)


def test_loss_weight_makes_v_loss_unit_scale():
    # lambda * c_out^2 == 1: the weighted x0-loss equals the MSE on the network output.
    sigma = torch.logspace(-2, 2, 9)
    c_skip, c_out, c_in, _ = edm_preconditioning(sigma)
    assert torch.allclose(edm_loss_weight(sigma) * c_out**2, torch.ones_like(sigma), rtol=1e-5)
    # and at sigma -> 0 the denoiser is the identity, at sigma -> inf it ignores x
    assert c_skip[0] == pytest.approx(1, abs=1e-3) and c_skip[-1] == pytest.approx(0, abs=1e-3)
    assert c_in[-1] * sigma[-1] == pytest.approx(1, rel=1e-3)


def test_schedules_agree_on_sigma():
    a = ddpm_alphas_cumprod("scaled-linear")
    assert torch.allclose(1 / sigma_from_alphas(a) ** 2, snr_from_alphas(a), rtol=1e-4)
    sched = EulerDiscreteScheduler(**{**SVD_SCHEDULER_CONFIG, "use_karras_sigmas": False})
    assert sigma_from_alphas(a)[-1].item() == pytest.approx(sched.sigmas.max().item(), rel=1e-4)
    for name in ("linear", "cosine"):
        c = ddpm_alphas_cumprod(name)
        assert c.shape == (1000,) and (c.diff() < 0).all()
    # "linear" is the DDPM paper's schedule (betas 1e-4 .. 0.02), not linear spacing of SD's betas
    lin = ddpm_alphas_cumprod("linear")
    assert 1 - lin[0].item() == pytest.approx(1e-4, rel=1e-3)
    assert 1 - (lin[-1] / lin[-2]).item() == pytest.approx(0.02, rel=1e-3)
    assert 1 - a[0].item() == pytest.approx(0.00085, rel=1e-3)  # scaled-linear: SVD's own config


def test_added_time_ids_use_the_pipelines_fps_minus_one():
    ids = added_time_ids(torch.tensor([8.0, 25.0]), 127, torch.tensor([0.02, 0.1]))
    assert torch.allclose(ids, torch.tensor([[7.0, 127.0, 0.02], [24.0, 127.0, 0.1]]))


def test_cfg_dropout_rates():
    keep_e, keep_i = cfg_dropout_masks(200_000, ObjectiveConfig(), torch.Generator().manual_seed(0))
    assert (1 - keep_e).mean().item() == pytest.approx(0.2, abs=0.005)
    assert (1 - keep_i).mean().item() == pytest.approx(0.2, abs=0.005)
    assert ((1 - keep_e) * (1 - keep_i)).mean().item() == pytest.approx(0.1, abs=0.005)


def test_loss_shapes_and_gradients(small_pipe):
    pipe = small_pipe
    b, f = 2, 4
    video = torch.rand(b, f, 3, 64, 64) * 2 - 1
    lat = encode_video_latents(pipe.vae, video)
    c, n = pipe.vae.config.latent_channels, 64 // pipe.vae_scale_factor  # v2: 8 channels on a 16×16 grid
    assert lat.shape == (b, f, c, n, n) and (c, n) == (8, 16)
    img_lat = encode_image_latents(pipe.vae, video[:, 0], torch.full((b,), 0.02))
    emb = encode_clip(pipe.image_encoder, clip_pixels(video[:, 0], pipe.feature_extractor))
    assert img_lat.shape == (b, c, n, n) and emb.shape == (b, 1, 64)
    ids = added_time_ids(8.0, 127.0, torch.full((b,), 0.02))
    loss, parts = svd_loss(pipe.unet, lat, img_lat, emb, ids, ObjectiveConfig(), return_parts=True)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert parts["pred"].shape == lat.shape and parts["image_latents"].shape == lat.shape
    loss.backward()
    assert pipe.unet.conv_in.weight.grad.abs().sum() > 0
    pipe.unet.zero_grad()


def test_the_seed_objective_changes_only_the_target(small_pipe):
    """epsilon_loss feeds the UNet exactly what svd_loss feeds it (same dropout, sigma, noise, c_in, c_noise)
    and scores its output against the noise: notebook 02's comparison is one change."""
    pipe, g = small_pipe, torch.Generator().manual_seed
    lat = torch.randn(2, 4, 8, 16, 16, generator=g(1))
    img_lat, emb = torch.randn(2, 8, 16, 16, generator=g(2)), torch.randn(2, 1, 64, generator=g(3))
    ids = added_time_ids(8.0, 127.0, torch.full((2,), 0.02))
    calls, handle = record_unet_inputs(pipe.unet)
    outputs = []
    out_hook = pipe.unet.register_forward_hook(lambda m, a, out: outputs.append(out[0].detach().clone()))
    with torch.no_grad():
        _, parts = svd_loss(pipe.unet, lat, img_lat, emb, ids, ObjectiveConfig(), g(7), return_parts=True)
        eps = epsilon_loss(pipe.unet, lat, img_lat, emb, ids, ObjectiveConfig(), g(7))
    handle.remove(), out_hook.remove()
    edm_in, eps_in = calls
    for k in ("sample", "timestep", "ehs", "ids"):
        assert torch.equal(edm_in[k], eps_in[k]), k
    noise = (parts["noisy"] - lat) / parts["sigma"].view(-1, 1, 1, 1, 1)
    assert eps.item() == pytest.approx(((outputs[1] - noise) ** 2).mean().item(), rel=1e-4)


def record_unet_inputs(unet):
    """A forward pre-hook that records what the UNet is fed (both callers use the same call form)."""
    calls = []

    def hook(module, args, kwargs):
        calls.append(dict(sample=args[0].clone(), timestep=torch.as_tensor(args[1]).float().clone(),
                          ehs=kwargs["encoder_hidden_states"].clone(), ids=kwargs["added_time_ids"].clone()))

    return calls, unet.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.fixture(scope="module")
def scaled_pipe():
    """A tiny SVD whose VAE scaling factor is not 1 (SVD's is 0.18215), so a training side that scaled the
    conditioning-image latents (the pipeline does not) or forgot to scale the targets shows up."""
    p = build_tiny_pipeline(TinySVDConfig(num_frames=4), seed=0)
    p.vae.register_to_config(scaling_factor=0.5)
    return p


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_training_step_feeds_the_unet_what_the_pipeline_feeds_it(scaled_pipe, guidance, monkeypatch):
    """Same image and settings: image-latent scaling, CLIP embedding, time ids and the
    concatenated UNet input of a training step equal those of StableVideoDiffusionPipeline,
    both for :func:`denoise` and for the trainer's own path (``EncodedClips`` + ``batch_loss``)."""
    from i2v_helpers import objective
    from i2v_helpers.encoded import EncodedClips, collate
    from i2v_helpers.training import batch_loss

    pipe = scaled_pipe
    frame = synth.clip_photo_pan(5)[0][0]  # (64, 64, 3) uint8
    fps, bucket, aug, seed = 8, 100, 0.05, 123
    calls, handle = record_unet_inputs(pipe.unet)
    captured = {}
    orig_smi = pipe.scheduler.scale_model_input

    def smi(sample, t):
        out = orig_smi(sample, t)
        captured.setdefault("x", sample.clone())
        captured.setdefault("sigma", pipe.scheduler.sigmas[pipe.scheduler.step_index].clone())
        return out

    pipe.scheduler.scale_model_input = smi
    try:
        pipe(Image.fromarray(frame), height=64, width=64, num_frames=4, num_inference_steps=3, fps=fps,
             motion_bucket_id=bucket, noise_aug_strength=aug, min_guidance_scale=1.0,
             max_guidance_scale=guidance, generator=torch.Generator().manual_seed(seed), output_type="latent")
    finally:
        del pipe.scheduler.scale_model_input
    piped = calls[0]
    cond = slice(1, 2) if guidance > 1 else slice(0, 1)  # CFG puts [uncond, cond] in one batch

    # the training side, from the same frame
    image = to_model_range(frame)[None]
    g = torch.Generator().manual_seed(seed)  # the pipeline draws the augmentation noise first
    img_lat = encode_image_latents(pipe.vae, image, torch.tensor([aug]), generator=g)
    emb = encode_clip(pipe.image_encoder, clip_pixels(image, pipe.feature_extractor))
    ids = added_time_ids(fps, bucket, aug)
    calls.clear()
    with torch.no_grad():
        denoise(pipe.unet, captured["x"][cond.start:cond.start + 1] if guidance > 1 else captured["x"],
                captured["sigma"].reshape(1), img_lat.unsqueeze(1).repeat(1, 4, 1, 1, 1), emb, ids)
    trained = calls[0]

    # the trainer's path: an encoded clip of that frame, batch_loss with no CFG dropout and the
    # augmentation strength fixed, so the generator's first draw is the image noise, as in the pipeline
    monkeypatch.setattr(objective, "sample_noise_aug", lambda b, ocfg, generator=None, device=None:
                        torch.full((b,), aug, device=device))
    item = EncodedClips(None, pipe, cache="off").encode(
        {"video": image.expand(4, -1, -1, -1), "image": image[0], "fps": fps, "motion_bucket_id": bucket})
    calls.clear()
    with torch.no_grad():
        batch_loss(pipe, pipe.unet, collate([item]), ObjectiveConfig(drop_embed=0, drop_image=0, drop_both=0),
                   torch.Generator().manual_seed(seed))
    handle.remove()
    stepped, c = calls[0], pipe.unet.config.out_channels
    assert torch.allclose(stepped["sample"][:, :, c:], piped["sample"][cond][:, :, c:], atol=1e-5)
    assert torch.allclose(stepped["ehs"], piped["ehs"][cond], atol=1e-5)
    assert torch.allclose(stepped["ids"], piped["ids"][cond], atol=1e-6)
    # its targets are the scaled latents of the clip
    assert torch.allclose(item["latents"], 0.5 * pipe.vae.encode(image).latent_dist.mode().expand(4, -1, -1, -1),
                          atol=1e-5)

    assert torch.allclose(trained["sample"], piped["sample"][cond], atol=1e-5)
    assert torch.allclose(trained["timestep"], torch.as_tensor(piped["timestep"]).float(), atol=1e-6)
    assert torch.allclose(trained["ehs"], piped["ehs"][cond], atol=1e-5)
    assert torch.allclose(trained["ids"], piped["ids"][cond], atol=1e-6)
    if guidance > 1:  # the unconditional half is what CFG dropout trains: zero embedding, zero image latent
        c = pipe.unet.config.out_channels
        assert piped["ehs"][0].abs().max() == 0 and piped["sample"][0, :, c:].abs().max() == 0
