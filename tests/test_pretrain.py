"""Pieces of the tiny-base recipe (i2v_helpers.pretrain) that run in seconds."""

import json

import numpy as np
import pytest
import torch

from i2v_helpers.data import parse_manifest, prepare_clip
from i2v_helpers.evaluation import (
    evaluate_generation,
    paired_difference,
    vae_reconstruction_metrics,
    versus_baseline,
)
from i2v_helpers.models import load_pipeline
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


def test_evaluation_scores_the_vae_ceiling_as_a_model_paired_with_the_baseline():
    """``reconstruct=True`` scores the clips ``vae_reconstruction_metrics`` scores, clip by clip, in the rows
    ``paired_difference`` pairs with repeat-the-first-frame; every seed gives the same clip."""
    pipe, man = load_pipeline(), "data_samples/general/val.jsonl"
    rec = evaluate_generation(pipe, man, seeds=(0, 1), max_clips=3, reconstruct=True, progress=False)
    base = evaluate_generation(None, man, seeds=(0, 1), max_clips=3, num_frames=16, size=(64, 64), progress=False)
    clips = np.stack([prepare_clip(e, 16, (64, 64))["video"] for e in parse_manifest(man)[0][:3]])
    assert np.mean([r["flow_epe"] for r in rec["rows"]]) == pytest.approx(
        vae_reconstruction_metrics(pipe.vae, clips)["flow_epe"])
    by_seed = [[r["psnr"] for r in rec["rows"] if r["seed"] == s] for s in (0, 1)]
    assert by_seed[0] == by_seed[1]
    d, se, n = paired_difference(base, rec, "psnr")
    assert n == 3 and d > 3  # a reconstruction is far closer to the clip than its frozen first frame
    # the baseline carried in the rows (what `i2v pretrain evaluate` and the model card pair with) is the
    # separate baseline run; its first 2 clips are a run with max_clips=2
    own = versus_baseline(rec)
    for k in ("psnr", "flow_epe", "object_err_px"):
        assert paired_difference(own["repeat first frame"], own["model"], k) == pytest.approx(
            paired_difference(base, rec, k), nan_ok=True)
    two = evaluate_generation(None, man, seeds=(0, 1), max_clips=2, num_frames=16, size=(64, 64), progress=False)
    first2 = versus_baseline(rec, 2)
    assert paired_difference(two, first2["model"], "psnr")[2] == 2
    assert paired_difference(two, first2["model"], "psnr") == paired_difference(
        first2["repeat first frame"], first2["model"], "psnr")


def test_set_overrides_are_checked_and_typed_like_train_configs():
    import pytest

    from i2v_helpers.config import check_fields, parse_overrides
    from i2v_helpers.pretrain import PretrainConfig

    data = check_fields(PretrainConfig, parse_overrides(["vae_lr=1e-4", "decoder_frames=16"]), "--set")
    assert data == {"vae_lr": 1e-4, "decoder_frames": 16} and isinstance(data["vae_lr"], float)
    with pytest.raises(ValueError, match="unknown config keys"):
        check_fields(PretrainConfig, parse_overrides(["vae_rate=1"]), "--set")


def test_model_card_lists_every_motion_metric_of_the_vae_ceiling(tmp_path):
    from i2v_helpers.metrics import METRIC_KEYS, MOTION_KEYS
    from i2v_helpers.model_card import write_model_card
    from i2v_helpers.pretrain import PretrainConfig

    work, out = tmp_path / "work", tmp_path / "model"
    out.mkdir()
    for phase in ("vae", "unet"):
        (work / phase).mkdir(parents=True)
        (work / phase / "state.json").write_text(json.dumps(
            {"steps": 10, "seconds": 60, "lr": 3e-4, "samples_per_s": 5.0, "batch": 2, "encode_seconds": 1,
             "machine": "test"}))
    row = {k: (0.5, 0.1) for k in METRIC_KEYS}
    metrics = {"clips": 2, "seeds": [0], "vae_psnr_db": 27.0, "model": row, "baseline": row,
               "vae_reconstruction": {k: 0.25 for k in METRIC_KEYS}}
    card = write_model_card(PretrainConfig(work_dir=str(work), out_dir=str(out)), metrics).read_text()
    ceiling = next(line for line in card.splitlines() if line.startswith("* The VAE's ceiling"))
    assert all(f"{k} 0.250" in ceiling for k in MOTION_KEYS)
    assert all(f"| {k} | 0.500 ± 0.100 |" in card for k in METRIC_KEYS)
    assert "16×16 latent grid" in card  # the v2 geometry, read from the preset
    # with the rows, the card pairs the model with its own baseline, the clip as the unit: per-clip differences
    # (seeds averaged) -4, -1, -8 -> mean -4.333, SE std(ddof 1) / sqrt 3 = 2.028, beyond 2 SE
    errs = {"a": ((5, 7), 10), "b": ((8, 8), 9), "c": ((2, 4), 11)}
    metrics["clips"], metrics["seeds"] = 3, [0, 1]
    same = {**{k: 0.5 for k in METRIC_KEYS}, **{f"baseline_{k}": 0.5 for k in METRIC_KEYS}}
    metrics["rows"] = [{"clip": c, "seed": s, **same, "object_err_px": e[s], "baseline_object_err_px": b}
                       for c, (e, b) in errs.items() for s in (0, 1)]
    card = write_model_card(PretrainConfig(work_dir=str(work), out_dir=str(out)), metrics).read_text()
    assert "| object_err_px | -4.333 ± 2.028 * (3) |" in card and "| flow_epe | +0.000 ± 0.000 (3) |" in card
    # finalize while the UNet phase runs (to look at its frames): its checkpoint has steps and seconds only
    (work / "unet" / "state.json").write_text(json.dumps({"steps": 7, "seconds": 90}))
    card = write_model_card(PretrainConfig(work_dir=str(work), out_dir=str(out))).read_text()
    assert "* UNet + CLIP tower: 7 steps, 1.5 min so far (a checkpoint of an unfinished phase" in card
    assert "* VAE: 10 steps" in card and "Machine: test" in card


@pytest.mark.slow
def test_corpus_is_the_same_whatever_the_number_of_workers():
    from i2v_helpers.pretrain import make_corpus

    a, b = make_corpus(30, seed=3, workers=0), make_corpus(30, seed=3, workers=2)
    assert a["clips"].shape == (30, 16, 64, 64, 3) and a["clips"].dtype == torch.uint8
    assert torch.equal(a["clips"], b["clips"]) and torch.equal(a["bucket"], b["bucket"])
    assert set(a["fps"].tolist()) == {8.0, 25.0}  # synthetic clips and footage cuts (2 × 30 // 12)


def test_a_corpus_smaller_than_twelve_clips_is_synthetic_only():
    from i2v_helpers.pretrain import make_corpus

    small = make_corpus(5, seed=0, workers=0, log=lambda *a: None)  # n // 12 = 0 footage cuts (it crashed)
    assert small["clips"].shape[0] == 5 and set(small["fps"].tolist()) == {8.0}


@pytest.mark.slow
def test_a_killed_build_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL ``i2v pretrain vae`` after its first checkpoint; the rerun continues from it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from i2v_helpers.pretrain import load_phase_state

    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "i2v_helpers.cli", "pretrain", "vae", "--work-dir", str(work), "--vae-minutes", "0.5",
           "--set", "corpus_clips=12", "--set", "checkpoint_minutes=0.02", "--set", "vae_crop=16",
           "--set", "vae_frames=2", "--set", "vae_batch_clips=2", "--set", "vae_heldout_clips=2"]
    env = dict(os.environ, I2V_DEVICE="cpu")
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (load_phase_state(work, "vae") or {}).get("steps"):
        time.sleep(0.2)
    time.sleep(1.0)  # mid-run, probably mid-save too
    p.send_signal(signal.SIGKILL)
    p.wait()
    cut = load_phase_state(work, "vae")
    assert cut and cut["steps"] > 0 and cut["seconds"] < 30  # a checkpoint of an unfinished phase
    minutes = f"{(cut['seconds'] + 2) / 60:.4f}"  # the same phase, about 2 s left to run
    again = subprocess.run(cmd[:8] + [minutes] + cmd[9:], env=env, capture_output=True, text=True, timeout=300)
    assert f"resuming at step {cut['steps']}" in again.stdout, again.stdout + again.stderr
    final = load_phase_state(work, "vae")
    assert final["steps"] >= cut["steps"] and "scaling_factor" in final


def test_model_card_explains_metrics_through_their_one_owner(tmp_path):
    """The card's explanation of the metrics is describe_metrics' text, for the metrics it shows."""
    from i2v_helpers.metrics import METRIC_KEYS, describe_metrics
    from i2v_helpers.model_card import write_model_card
    from i2v_helpers.pretrain import PretrainConfig

    row = {k: (0.5, 0.1) for k in METRIC_KEYS if k != "warp_error"}
    metrics = {"clips": 2, "seeds": [0], "vae_psnr_db": 27.0, "model": row, "baseline": row}
    (tmp_path / "model").mkdir()
    card = write_model_card(PretrainConfig(work_dir=str(tmp_path / "w"), out_dir=str(tmp_path / "model")),
                            metrics).read_text()
    assert describe_metrics([k for k in METRIC_KEYS if k != "warp_error"]) in card
    assert "warp_error" not in card


def _ship_metrics():
    """16 + 1 held-out clips × 2 seeds: flow_epe 0.1 or 0.3 below the baseline's (alternating), object_err_px
    1 px above or below it; a 17th clip, far worse, that the ship targets (the first 16 clips) leave out."""
    from i2v_helpers.metrics import METRIC_KEYS

    rows = []
    for c in range(17):
        d = 100.0 if c == 16 else (-0.1 if c % 2 else -0.3)
        same = {**{k: 0.5 for k in METRIC_KEYS}, **{f"baseline_{k}": 0.5 for k in METRIC_KEYS}}
        rows += [{"clip": f"{c:04d}", "seed": s, **same, "flow_epe": 1.0 + d, "baseline_flow_epe": 1.0,
                  "object_err_px": 9.0 + (1 if c % 2 else -1), "baseline_object_err_px": 9.0} for s in (0, 1)]
    row = {k: (0.5, 0.1) for k in METRIC_KEYS}
    model = {**row, "first_frame_psnr": (27.9, 2.0), "object_kept": (0.95, 0.05), "static_flow": (0.10, 0.05)}
    return {"clips": 17, "seeds": [0, 1], "vae_psnr_db": 31.0, "model": model, "baseline": row, "rows": rows,
            "vae_reconstruction": {k: 0.074 for k in METRIC_KEYS}}


def test_ship_targets_are_judged_on_the_first_16_clips_with_the_clip_as_the_unit(tmp_path):
    """flow_epe: per-clip differences -0.3, -0.1, ... over the first 16 clips -> mean -0.200, SE
    std(ddof 1) / 4 = 0.1033 / 4 = 0.026 (the 17th clip's +100 left out); object_err_px ±1 -> 0.000 (a tie)."""
    from i2v_helpers.model_card import ship_bars, write_model_card
    from i2v_helpers.models import TINY_SVD_DIR
    from i2v_helpers.pretrain import PretrainConfig

    bars = {b: (got, ok) for b, _, got, ok in ship_bars(_ship_metrics(), TINY_SVD_DIR)}
    assert bars["flow_epe − repeat first frame"] == ("-0.200 ± 0.026 (16 clips)", True)
    assert bars["object_err_px − repeat first frame"] == ("+0.000 ± 0.258 (16 clips)", False)
    assert bars["first_frame_psnr"] == ("27.90 dB", False) and bars["VAE PSNR"] == ("31.00 dB", True)
    assert bars["static_flow"] == ("0.100 (1.4×)", True) and bars["object_kept"][1]
    grid, ok = bars["latent grid, weights"]  # the shipped folder: its 16×16 grid and its size on disk
    assert grid.startswith("16×16, ") and ok
    # the card carries the table for a folder with a UNet config (here the shipped one's, linked)
    out = tmp_path / "model"
    out.mkdir()
    for sub in ("unet", "vae", "image_encoder"):
        (out / sub).symlink_to((TINY_SVD_DIR / sub).resolve())
    card = write_model_card(PretrainConfig(work_dir=str(tmp_path / "w"), out_dir=str(out)),
                            _ship_metrics()).read_text()
    assert "## Status against the ship targets" in card and "5 of 7 met" in card
    assert "| first_frame_psnr | ≥ 28 dB | 27.90 dB | **no** |" in card
