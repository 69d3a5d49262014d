"""Pieces of the tiny-base recipe (i2v_helpers.pretrain) that run in seconds."""

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
