"""Metrics on constructed cases; the i2v eval harness (the baseline, a recording stand-in pipeline, and a
random tiny SVD built for 48x80 px and 25 frames); paired statistics with the clip as the unit."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from conftest import REPO  # tests/conftest.py
from i2v_helpers import synth
from i2v_helpers.config import load_config
from i2v_helpers.data import VideoClipDataset, parse_manifest
from i2v_helpers.evaluation import (
    evaluate_generation,
    format_comparison,
    format_paired,
    paired_difference,
    parse_compare,
    write_comparison,
    write_report,
)
from i2v_helpers.frames import to_uint8
from i2v_helpers.generation import generate
from i2v_helpers.metrics import clean_flow, first_frame_psnr, motion_metrics, repeat_first_frame, ssim, warp_error
from i2v_helpers.models import TinySVDConfig, build_tiny_pipeline, load_pipeline, model_geometry, set_model_geometry
from i2v_helpers.motion import optical_flow
from i2v_helpers.training import train
from i2v_helpers.video_io import read_image, read_video, write_video


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
    assert motion_metrics(clip, _shifted())["motion_ratio"] == 0.0


def test_motion_ratio_is_undefined_against_a_still_truth_and_left_out_of_the_paired_mean():
    # one held-out animated clip (a footage_bunny cut) has no flow at all; a ratio to ~0 once read
    # 6 million and swamped the table's mean. Against a still truth the ratio is NaN, not huge.
    still, moving = repeat_first_frame(_shifted()), _shifted()
    m = motion_metrics(moving, still)
    assert np.isnan(m["motion_ratio"]) and m["flow_epe"] > 0.5 and m["static_flow"] > 0.5
    # the paired difference skips that clip and averages the others
    rows = lambda ratios: [{"clip": c, "seed": 0, "motion_ratio": r} for c, r in enumerate(ratios)]
    a, b = {"rows": rows([1.0, 1.0, float("nan")])}, {"rows": rows([1.5, 1.3, float("nan")])}
    mean, se, clips = paired_difference(a, b, "motion_ratio")
    assert clips == 2 and mean == pytest.approx(0.4)


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
    manifest = REPO / "data_samples/general/val.jsonl"
    res = evaluate_generation(None, manifest, seeds=(0,), max_clips=3, keep_videos=2)
    assert res["clips"] == 3 and len(res["rows"]) == 3 and (res["num_frames"], res["size"]) == (16, None)
    # the baseline is the manifest's image, repeated: a still clip, so no flow and no flicker, and its
    # whole-frame EPE is the truth's own mean flow magnitude
    image, truth, still = res["videos"][0]
    entry = parse_manifest(manifest)[0][0]
    assert np.array_equal(image, read_image(entry.image)) and np.array_equal(truth, read_video(entry.video)[0][:16])
    assert np.array_equal(still, np.repeat(image[None], 16, axis=0))
    row = res["rows"][0]
    assert row["motion_ratio"] == 0 and row["warp_error"] == 0 and row["flow_cosine"] == 0
    assert row["first_frame_psnr"] == 100.0  # frame 0 is the input image itself (100 dB: the cap for an exact frame)
    true_flow = np.linalg.norm(clean_flow(optical_flow(truth)), axis=-1).mean()
    assert row["flow_epe"] == pytest.approx(true_flow, rel=1e-6)
    # PSNR by hand over frames 1..15 (frame 0 is the condition)
    mse = ((truth[1:].astype(float) - image.astype(float)) ** 2).reshape(15, -1).mean(1)
    assert row["psnr"] == pytest.approx(np.mean(10 * np.log10(255.0 ** 2 / mse)), rel=1e-9)
    paths = write_report(res, tmp_path)
    assert Path(paths["grid"]).stat().st_size > 1000
    summary = json.loads(Path(paths["json"]).read_text())
    assert summary["clips"] == 3 and "flow_epe" in summary["model"] and summary["num_frames"] == 16
    assert "baseline" in format_comparison({"baseline": res})
    # clips 0 and 2 (spinner, shapes) carry objects, clip 1 (zoom) has none: NaN there, skipped in the means
    assert [np.isnan(r["object_err_px"]) for r in res["rows"]] == [False, True, False]
    assert paired_difference(res, res, "object_kept")[2] == 2 and np.isfinite(res["model"]["object_err_px"][0])
    assert "object_err_px" in format_comparison({"baseline": res}) and "object_kept" in summary["model"]


def test_eval_cli_compare_mode(tmp_path):
    out = subprocess.run([sys.executable, "-m", "i2v_helpers.cli", "eval", "--compare", "baseline",
                          "--manifest", str(REPO / "data_samples/sports/val.jsonl"), "--max-clips", "2",
                          "--seeds", "0", "--out", str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "baseline" in out and (tmp_path / "compare.json").is_file()


def test_compare_specs_become_load_model_arguments():
    models = parse_compare(["baseline", "s1=runs/a", "s2=runs/a+lora:runs/b/adapter", "both=m+adapters:x+lora:y"])
    assert models == {"baseline": None, "s1": {"path": "runs/a", "lora": None, "adapters": None},
                      "s2": {"path": "runs/a", "lora": "runs/b/adapter", "adapters": None},
                      "both": {"path": "m", "lora": "y", "adapters": "x"}}
    for bad in ("x=runs/a+lore:d", "x=runs/a+lora:d+lora:e", "x=runs/a+lora"):
        with pytest.raises(ValueError, match=r"is not one \+lora:DIR or \+adapters:DIR"):
            parse_compare([bad])


def test_write_comparison_keeps_the_rows_and_what_they_were_scored_on(tmp_path):
    result = {"rows": [{"clip": "entry 0", "seed": 0, "psnr": 20.0}], "model": {"psnr": (20.0, 0.0)},
              "baseline": {"psnr": (18.0, 0.0)}, "clips": 1, "seeds": [0], "num_frames": 4, "size": [64, 64],
              "videos": [np.zeros((4, 64, 64, 3), np.uint8)]}
    path = write_comparison({"a": result}, tmp_path / "new")
    assert path == tmp_path / "new" / "compare.json"
    saved = json.loads(path.read_text())["a"]
    assert set(saved) == {"model", "clips", "seeds", "num_frames", "size", "rows"} and saved["rows"] == result["rows"]


# ------------------------------------------------------------------ statistics: the clip is the unit

def _result(diffs: dict) -> tuple[dict, dict]:
    """Two results whose ``b - a`` per (clip, seed) is ``diffs[(clip, seed)]``; ``b``'s rows are in
    reverse order, so pairing by position would pair the wrong rows."""
    a = {"rows": [{"clip": c, "seed": s, "m": 10.0 * i} for i, (c, s) in enumerate(diffs)]}
    b = {"rows": [{"clip": r["clip"], "seed": r["seed"], "m": r["m"] + diffs[r["clip"], r["seed"]]}
                  for r in reversed(a["rows"])]}
    return a, b


def test_paired_se_averages_seeds_per_clip_and_pairs_rows_by_clip_and_seed():
    # per-clip means over the two seeds: 2, 5, 8 -> mean 5, std (ddof 1) 3, SE 3 / sqrt(3)
    a, b = _result({("c0", 0): 1, ("c0", 1): 3, ("c1", 0): 4, ("c1", 1): 6, ("c2", 0): 7, ("c2", 1): 9})
    d, se, n = paired_difference(a, b, "m")
    assert (d, n) == (5.0, 3) and se == pytest.approx(3 ** 0.5, rel=1e-12)
    b["rows"][0]["seed"] = 7  # a pair that the other result does not have
    with pytest.raises(ValueError, match="not a paired comparison"):
        paired_difference(a, b, "m")


def test_clustered_verdict_differs_from_treating_seeds_as_independent():
    # four clips whose seeds agree almost exactly (the clip's effect dominates): clip means 3, -1, 2, 0
    diffs = {(f"c{i}", s): x + (0.1 if s % 2 else -0.1) for i, x in enumerate((3, -1, 2, 0)) for s in range(4)}
    a, b = _result(diffs)
    d, se, n = paired_difference(a, b, "m")
    assert (d, n) == (pytest.approx(1.0), 4)
    assert se == pytest.approx((10 / 3) ** 0.5 / 2, rel=1e-9)  # std of (3, -1, 2, 0) is sqrt(10/3)
    assert abs(d) < 2 * se and "within noise" in format_paired({"a": a, "b": b}, "a", "b", metrics=("m",))
    naive = np.array(list(diffs.values()))  # the 16 clip-seed pairs as if independent
    assert abs(naive.mean()) > 2 * naive.std(ddof=1) / np.sqrt(len(naive))  # would have said "significant"


# ------------------------------------------------------------------ PSNR / SSIM skip the condition frame

def test_psnr_and_ssim_score_the_generated_frames_not_the_condition():
    truth = np.stack([synth.photo("chelsea")[100:164, 100 + 3 * i:164 + 3 * i] for i in range(4)])
    gen = np.clip(truth.astype(int) + 10, 0, 255).astype(np.uint8)
    gen[0] = truth[0]  # frame 0 exact, as the condition (and the repeat-first-frame baseline) gives it
    m = motion_metrics(gen, truth)
    mse = ((gen[1:].astype(float) - truth[1:]) ** 2).reshape(3, -1).mean(1)
    assert m["psnr"] == pytest.approx(np.mean(10 * np.log10(255.0 ** 2 / mse)), rel=1e-9)  # ~28 dB, not ~46
    assert m["ssim"] == pytest.approx(np.mean([structural_similarity(g, t, channel_axis=-1, data_range=255)
                                               for g, t in zip(gen[1:], truth[1:])]), rel=1e-9)
    assert m["first_frame_psnr"] == 100.0  # the condition frame is scored on its own


# ------------------------------------------------------------------ evaluation at the model's geometry

@pytest.fixture(scope="module")
def real_size_clips(tmp_path_factory):
    """A learner's clips at their native 176x144, 30 frames at 25 fps, no fps or bucket in the
    manifest; the first entry has a PNG first frame, the second only the video."""
    d = tmp_path_factory.mktemp("real")
    photo = synth.photo("chelsea")
    lines = []
    for k in range(2):
        clip = np.stack([photo[40 + 20 * k:184 + 20 * k, 20 + 2 * i:196 + 2 * i] for i in range(30)])  # 2 px/frame
        write_video(d / f"{k}.mp4", clip, fps=25)
        entry = {"video": f"{k}.mp4", "prompt": "a pan"}
        if k == 0:
            Image.fromarray(clip[0]).save(d / "0.png")
            entry["image"] = "0.png"
        lines.append(json.dumps(entry))
    (d / "val.jsonl").write_text("\n".join(lines) + "\n")
    return d / "val.jsonl"


class RecordingPipe:
    """Stands in for a ``StableVideoDiffusionPipeline`` of ``frames`` frames at ``height`` x ``width``
    (8x VAE): records each call and returns its conditioning image, repeated (no diffusion)."""

    vae_scale_factor = 8

    def __init__(self, frames: int, height: int, width: int):
        self.unet = SimpleNamespace(config=SimpleNamespace(num_frames=frames, sample_size=[height // 8, width // 8]))
        self.calls = []

    def __call__(self, image, **kw):
        self.calls.append({"image": np.asarray(image), **kw})
        frame = np.asarray(image, np.float32) / 255
        return SimpleNamespace(frames=[np.repeat(frame[None], kw["num_frames"], axis=0)])


def test_evaluation_prepares_and_conditions_clips_exactly_as_training(real_size_clips):
    pipe = RecordingPipe(frames=8, height=48, width=80)
    res = evaluate_generation(pipe, real_size_clips, seeds=(0,), keep_videos=2, stride=2)
    assert (res["num_frames"], res["size"]) == (8, [48, 80])
    train_ds = VideoClipDataset(real_size_clips, num_frames=8, size=(48, 80), stride=2)  # what training sees
    for k, call in enumerate(pipe.calls):
        item = train_ds[k]
        image, truth, _ = res["videos"][k]
        assert np.array_equal(truth, to_uint8(item["video"])) and np.array_equal(image, to_uint8(item["image"]))
        assert np.array_equal(call["image"], image)  # the PNG (entry 0) through training's crop, not the mp4 frame
        assert (call["height"], call["width"], call["num_frames"]) == (48, 80, 8)
        assert call["fps"] == item["fps"] == 12.5  # 25 fps container at stride 2, not 7 and not rounded
        assert call["motion_bucket_id"] == item["motion_bucket_id"] != 127  # from the clip's flow


class CopyPipe(RecordingPipe):
    """A perfect model: returns the given clip ``(F, H, W, 3)`` ``uint8`` whatever it is asked."""

    def __init__(self, clip: np.ndarray):
        super().__init__(len(clip), *clip.shape[1:3])
        self.clip = clip

    def __call__(self, image, **kw):
        self.calls.append(kw)
        return SimpleNamespace(frames=[self.clip.astype(np.float32) / 255])


def test_object_ground_truth_follows_the_resize_crop_and_stride():
    # the sports clip (64x64, 16 frames) scored at 48x80 and stride 2: a model that returns the truth
    # as training prepares it must find the ball where it is (well under a pixel off, every frame)
    manifest = REPO / "data_samples/sports/val.jsonl"
    truth = to_uint8(VideoClipDataset(manifest, num_frames=8, size=(48, 80), stride=2)[0]["video"])
    res = evaluate_generation(CopyPipe(truth), manifest, seeds=(0,), max_clips=1, stride=2)
    row = res["rows"][0]
    assert row["object_kept"] == 1.0 and row["object_err_px"] < 1.0
    assert row["baseline_object_err_px"] > 10  # the still first frame leaves the flying ball behind


def test_the_shipped_model_scores_native_size_clips_at_its_own_64px(real_size_clips):
    # before: ValueError: operands could not be broadcast together with shapes (3,64,64,2) (3,144,176,2)
    res = evaluate_generation(load_pipeline(device="cpu", dtype=torch.float32), real_size_clips, seeds=(0,), steps=1,
                              max_clips=1, num_frames=4, keep_videos=1)
    assert res["size"] == [64, 64] and [v.shape for v in res["videos"][0]] == [(64, 64, 3), (4, 64, 64, 3),
                                                                             (4, 64, 64, 3)]
    assert np.isfinite(res["rows"][0]["flow_epe"]) and np.isfinite(res["rows"][0]["psnr"])


def test_generate_renders_at_the_models_own_size_with_the_image_cropped_like_training():
    pipe = RecordingPipe(frames=25, height=48, width=80)
    photo = synth.photo("chelsea")[:144, :176]
    frames = generate(pipe, photo, steps=1, fps=12.5)
    call = pipe.calls[0]
    assert frames.shape == (25, 48, 80, 3) and (call["height"], call["width"], call["num_frames"]) == (48, 80, 25)
    assert call["fps"] == 12.5  # not truncated to 12
    # 176x144 covers 80x48 at scale 80/176: resized to 80x65, rows 8..55 kept (centre crop), not stretched
    assert np.array_equal(call["image"], cv2.resize(photo, (80, 65), interpolation=cv2.INTER_AREA)[8:56])


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """A tiny SVD (random weights) built for 48x80 px and 25 frames."""
    d = tmp_path_factory.mktemp("wide") / "pipe"
    build_tiny_pipeline(TinySVDConfig(frame_size=(48, 80), num_frames=25), seed=0).save_pretrained(
        d, safe_serialization=True)
    return d


@pytest.mark.slow
def test_eval_cli_scores_a_non_square_25_frame_model_at_its_own_size(wide_model, real_size_clips, tmp_path):
    subprocess.run([sys.executable, "-m", "i2v_helpers.cli", "eval", "--model", str(wide_model), "--manifest",
                    str(real_size_clips), "--max-clips", "1", "--seeds", "0", "--steps", "1", "--grid-clips", "1",
                    "--out", str(tmp_path)], capture_output=True, text=True, check=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["num_frames"], summary["size"]) == (25, [48, 80])
    grid = read_video(tmp_path / "grid.mp4")[0]  # image | truth | generated, side by side
    assert grid.shape == (25, 48, 3 * 80 + 2 * 2, 3)


def test_validation_videos_render_at_the_models_size(wide_model, real_size_clips, tmp_path):
    videos = []
    cfg = load_config("tiny-stage1", [
        f"init_from={wide_model}", f"output_dir={tmp_path / 'run'}", "technique=lora", "lora_rank=4",
        f"train_manifest={real_size_clips}", f"val_manifest={real_size_clips}", "resolution=[48, 80]",
        "num_frames=8", "batch_size=1", "max_steps=1", "val_every=1", "val_batches=1", "max_val_samples=1",
        f"val_images=[{real_size_clips.parent / '0.png'}]", "val_video_steps=1", "checkpoint_every=0",
        "report_to=none", "lr_warmup_steps=0"])
    train(cfg, callbacks=[lambda event, info: videos.append(info["frames"]) if event == "video" else None],
          log=lambda *a: None)
    assert [v.shape for v in videos] == [(8, 48, 80, 3)]


def test_a_models_trained_geometry_is_recorded_in_its_config(wide_model, tmp_path):
    # what training should call after loading the model it trains at `resolution` / `num_frames`
    pipe = load_pipeline(wide_model, device="cpu", dtype=torch.float32)
    assert model_geometry(pipe) == (25, 48, 80)
    set_model_geometry(pipe, (64, 96), 9)
    pipe.save_pretrained(tmp_path / "p", safe_serialization=True)
    assert model_geometry(load_pipeline(tmp_path / "p", device="cpu", dtype=torch.float32)) == (9, 64, 96)
    with pytest.raises(ValueError, match="multiple of the VAE's scale factor 4"):
        set_model_geometry(pipe, (50, 80), 9)


def test_every_metric_a_table_shows_is_described():
    from i2v_helpers.metrics import METRIC_KEYS, describe_metrics

    lines = describe_metrics().splitlines()
    assert [line.split()[0] for line in lines] == list(METRIC_KEYS)
    assert "best at 1" in lines[METRIC_KEYS.index("motion_ratio")]
