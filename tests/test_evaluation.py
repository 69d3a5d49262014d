"""Metrics on constructed cases, and the i2v eval harness (baseline only: no model needed)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from i2v_helpers import synth
from i2v_helpers.evaluation import evaluate_generation, format_comparison, paired_difference, write_report
from i2v_helpers.metrics import first_frame_psnr, motion_metrics, repeat_first_frame, ssim, warp_error

REPO = Path(__file__).resolve().parents[1]


def _shifted(px=2, n=8):
    photo = synth.photo("chelsea")
    return np.stack([photo[100:164, 100 - px * i:164 - px * i] for i in range(n)])  # px / frame to the right


def test_identical_clips_score_perfectly():
    clip = _shifted()
    m = motion_metrics(clip, clip)
    assert m["ssim"] == pytest.approx(1.0) and m["first_frame_psnr"] > 90 and m["flow_cosine"] == pytest.approx(1)


def test_static_clip_has_no_motion_and_no_flicker():
    clip = repeat_first_frame(_shifted())
    assert warp_error(clip) == 0.0
    assert motion_metrics(clip, clip)["motion_ratio"] == 0.0


def test_flicker_is_what_motion_does_not_explain():
    clip = _shifted()
    rng = np.random.default_rng(0)
    noisy = np.clip(clip.astype(int) + rng.integers(-40, 41, clip.shape), 0, 255).astype(np.uint8)
    smooth = warp_error(clip)
    assert smooth < 0.03  # a clean translation is explained by its flow
    assert warp_error(noisy) > 3 * smooth  # shimmering noise is not


def _ball_on_still_court(n=8, px=2):
    """A bright 8-px square moving ``px`` px / frame right across a flat grey 64-px frame."""
    clip = np.full((n, 64, 64, 3), 90, np.uint8)
    for i in range(n):
        clip[i, 28:36, 10 + px * i:18 + px * i] = 230
    return clip


def test_region_metrics_separate_the_object_from_background_shimmer():
    truth = _ball_on_still_court()
    same = motion_metrics(truth, truth)
    assert same["moving_epe"] == 0.0 and same["static_flow"] == 0.0
    frozen = motion_metrics(repeat_first_frame(truth), truth)
    assert frozen["static_flow"] == 0.0  # nothing moves where nothing should
    assert frozen["moving_epe"] > 0.5  # but the ball did not move either
    # the true ball motion plus a shimmering background (the failure seen in generated clips)
    rng = np.random.default_rng(0)
    shimmer = truth.astype(int)
    shimmer[:, 44:] += rng.integers(-12, 13, (len(truth), 20, 64, 1))  # bottom third flickers, grey
    shimmer = np.clip(shimmer, 0, 255).astype(np.uint8)
    m = motion_metrics(shimmer, truth)
    assert m["static_flow"] > 0.05  # shimmer reads as motion where the truth is still...
    assert m["moving_epe"] < frozen["moving_epe"]  # ...while the ball itself still moves right
    assert m["flow_epe"] > frozen["flow_epe"]  # whole-frame EPE prefers the frozen clip


def test_far_flow_tells_a_late_ball_from_background_shimmer():
    truth = _ball_on_still_court(n=12, px=3)
    late = truth[np.maximum(np.arange(len(truth)) - 3, 0)]  # the right path, three frames late
    frozen = motion_metrics(repeat_first_frame(truth), truth)
    m = motion_metrics(late, truth)
    assert m["moving_epe"] < frozen["moving_epe"] and m["flow_cosine"] > 0.2  # it does fly the right way...
    assert m["far_flow"] == 0.0 and m["static_flow"] > 0.05  # ...but its motion lands beside the true ball,
    assert m["flow_epe"] > frozen["flow_epe"]  # and whole-frame EPE charges that twice: worse than frozen
    rng = np.random.default_rng(0)
    shimmer = truth.astype(int)
    shimmer[:, 50:] += rng.integers(-12, 13, (len(truth), 14, 64, 1))  # flicker far below the ball
    m = motion_metrics(np.clip(shimmer, 0, 255).astype(np.uint8), truth)
    assert m["far_flow"] > 0.05  # shimmer far from the path is far_flow
    assert motion_metrics(truth, truth)["far_flow"] == 0.0


def test_ssim_and_first_frame_fidelity_drop_with_damage():
    clip = _shifted()
    dark = (clip * 0.5).astype(np.uint8)
    assert ssim(dark, clip) < 0.95 and first_frame_psnr(dark, clip[0]) < 20


def test_baseline_evaluation_writes_table_and_grid(tmp_path):
    res = evaluate_generation(None, REPO / "data_samples/general/val.jsonl", seeds=(0,), max_clips=3, keep_videos=2)
    assert res["clips"] == 3 and len(res["rows"]) == 3
    assert res["model"] == res["baseline"]  # pipe=None scores the repeat-first-frame baseline itself
    paths = write_report(res, tmp_path)
    assert Path(paths["grid"]).stat().st_size > 1000
    summary = json.loads(Path(paths["json"]).read_text())
    assert summary["clips"] == 3 and "flow_epe" in summary["model"]
    d, se, n = paired_difference(res, res, "flow_epe")
    assert (d, se, n) == (0.0, 0.0, 3)
    assert "baseline" in format_comparison({"baseline": res})


def test_eval_cli_compare_mode(tmp_path):
    out = subprocess.run([sys.executable, "-m", "i2v_helpers.cli", "eval", "--compare", "baseline",
                          "--manifest", str(REPO / "data_samples/sports/val.jsonl"), "--max-clips", "2",
                          "--seeds", "0", "--out", str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "baseline" in out and (tmp_path / "compare.json").is_file()
