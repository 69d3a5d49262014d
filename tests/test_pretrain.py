"""Pieces of the tiny-base recipe (i2v_helpers.pretrain) that run in seconds."""

import json

import numpy as np
import torch

from i2v_helpers.data import parse_manifest
from i2v_helpers.models import load_pipeline
from i2v_helpers.evaluation import vae_reconstruction_metrics
from i2v_helpers.pretrain import temporal_difference_loss
from i2v_helpers.video_io import read_video


def test_temporal_difference_loss_penalises_shimmer_not_offsets():
    g = torch.Generator().manual_seed(0)
    still = torch.rand(1, 3, 8, 8, generator=g).repeat(6, 1, 1, 1) * 2 - 1  # 1 clip × 6 identical frames
    assert temporal_difference_loss(still, still, frames=6) == 0
    assert temporal_difference_loss(still + 0.1, still, frames=6) == 0  # a steady colour error is not shimmer
    shimmer = still + 0.1 * torch.randn(still.shape, generator=g)
    assert temporal_difference_loss(shimmer, still, frames=6) > 0.05


def test_vae_ceiling_scores_reconstructions_of_real_clips():
    pipe = load_pipeline()
    entry = parse_manifest("data_samples/sports/val.jsonl")[0][0]
    clip = read_video(entry.video)[0][:16]
    m = vae_reconstruction_metrics(pipe.vae, clip[None])
    assert m["psnr"] > 24 and m["flow_cosine"] > 0.3  # the autoencoder keeps the ball's motion...
    assert m["static_flow"] > 0.0  # ...but its decoder adds flow where the court is still


def test_set_overrides_are_checked_and_typed_like_train_configs():
    import pytest

    from i2v_helpers.pretrain import PretrainConfig
    from i2v_helpers.training import check_fields, parse_overrides

    data = check_fields(PretrainConfig, parse_overrides(["vae_lr=1e-4", "decoder_frames=16"]), "--set")
    assert data == {"vae_lr": 1e-4, "decoder_frames": 16} and isinstance(data["vae_lr"], float)
    with pytest.raises(ValueError, match="unknown config keys"):
        check_fields(PretrainConfig, parse_overrides(["vae_rate=1"]), "--set")


def test_model_card_lists_every_motion_metric_of_the_vae_ceiling(tmp_path):
    from i2v_helpers.evaluation import METRIC_KEYS, MOTION_KEYS
    from i2v_helpers.pretrain import PretrainConfig, write_model_card

    work, out = tmp_path / "work", tmp_path / "model"
    work.mkdir(), out.mkdir()
    (work / "vae_stats.json").write_text(json.dumps({"scaling_factor": 0.5, "vae_steps": 10, "vae_seconds": 60}))
    (work / "unet_stats.json").write_text(json.dumps({"corpus_clips": 8, "encode_seconds": 1, "unet_batch": 2,
                                                      "unet_seconds": 60, "unet_steps": 10}))
    row = {k: (0.5, 0.1) for k in METRIC_KEYS}
    metrics = {"clips": 2, "seeds": [0], "vae_psnr_db": 27.0, "model": row, "baseline": row,
               "vae_reconstruction": {k: 0.25 for k in METRIC_KEYS}}
    card = write_model_card(PretrainConfig(work_dir=str(work), out_dir=str(out)), metrics).read_text()
    ceiling = next(line for line in card.splitlines() if line.startswith("* The VAE's ceiling"))
    assert all(f"{k} 0.250" in ceiling for k in MOTION_KEYS)
    assert all(f"| {k} | 0.500 ± 0.100 |" in card for k in METRIC_KEYS)
