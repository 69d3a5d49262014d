"""Data layer: manifests, decoding, sampling, transforms, motion and every documented bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO  # tests/conftest.py
from i2v_helpers import synth
from i2v_helpers.data import (
    InvalidManifest,
    ManifestError,
    VideoClipDataset,
    check_manifest,
    motion_stats,
    parse_manifest,
)
from i2v_helpers.frames import crop_box, float01_to_uint8, resize_crop, sample_frame_indices
from i2v_helpers.motion import motion_bucket, motion_score, optical_flow
from i2v_helpers.video_io import read_image, read_video, write_video


@pytest.fixture(scope="module")
def clip():
    return synth.clip_shapes(3)[0]  # (16, 64, 64, 3)


@pytest.fixture
def folder(tmp_path, clip):
    write_video(tmp_path / "a.mp4", clip, fps=8)
    Image.fromarray(clip[0]).save(tmp_path / "a.png")
    return tmp_path


def _problems_for(folder, entry, name="m.jsonl", **kw):
    (folder / name).write_text(json.dumps(entry) + "\n")
    good, problems = check_manifest(folder / name, **kw)
    return good, [p for p in problems if p.fatal], [p for p in problems if not p.fatal]


# ---------------------------------------------------------------- formats

def test_manifest_formats_agree(folder):
    rows = [{"image": "a.png", "video": "a.mp4", "prompt": "p", "fps": 8}, {"video": "a.mp4"}]
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "m.json").write_text(json.dumps(rows))
    (folder / "m.csv").write_text("image,video,prompt,fps\na.png,a.mp4,p,8\n,a.mp4,,\n")
    parsed = {s: parse_manifest(folder / f"m.{s}") for s in ("jsonl", "json", "csv")}
    for entries, problems in parsed.values():
        assert problems == []
        assert [(e.video.name, e.image.name if e.image else None, e.prompt, e.fps) for e in entries] == \
            [("a.mp4", "a.png", "p", 8.0), ("a.mp4", None, "", None)]


def test_decode_mp4_gif_and_frame_folder(tmp_path, clip):
    write_video(tmp_path / "c.mp4", clip, fps=8)
    write_video(tmp_path / "c.gif", clip, fps=8)
    write_video(tmp_path / "frames", clip)
    v_mp4, fps = read_video(tmp_path / "c.mp4")
    assert v_mp4.shape == clip.shape and fps == 8
    assert np.abs(v_mp4.astype(int) - clip).mean() < 6  # lossy H.264
    v_gif, gfps = read_video(tmp_path / "c.gif")
    assert v_gif.shape == clip.shape and gfps is not None and abs(gfps - 8) < 0.5
    v_dir, dfps = read_video(tmp_path / "frames")
    assert np.array_equal(v_dir, clip) and dfps is None


def test_webm_roundtrip(tmp_path, clip):
    write_video(tmp_path / "c.webm", clip, fps=8)
    v, fps = read_video(tmp_path / "c.webm")
    assert v.shape == clip.shape and fps == 8


# ---------------------------------------------------------------- sampling and transforms

def test_frame_sampling():
    assert list(sample_frame_indices(40, 4, "consecutive", 3, start=2)) == [2, 5, 8, 11]
    assert list(sample_frame_indices(31, 4, "spread")) == [0, 10, 20, 30]
    idx = sample_frame_indices(40, 16, "consecutive", 2, start=None, rng=np.random.default_rng(0))
    assert idx[0] + 30 == idx[-1] and idx[-1] < 40
    with pytest.raises(ValueError):
        sample_frame_indices(10, 16)


def test_resize_crop_center_and_random():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 40:] = 255  # right half white
    box = crop_box(40, 80, (20, 20), "center")
    out = resize_crop(frames, (20, 20), box)
    assert out.shape == (2, 20, 20, 3)
    assert out[0, :, :9].max() == 0 and out[0, :, 11:].min() == 255  # centre straddles the edge
    rnd = {crop_box(40, 80, (20, 20), "random", np.random.default_rng(s))[2] for s in range(20)}
    assert len(rnd) > 3


def test_float01_to_uint8_clamps_rounds_and_passes_uint8_through():
    assert float01_to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0])).tolist() == [0, 0, 128, 255, 255]
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    assert float01_to_uint8(frames) is frames


def test_dataset_shapes_range_and_fps(folder):
    (folder / "m.jsonl").write_text(json.dumps({"image": "a.png", "video": "a.mp4", "prompt": "x"}) + "\n"
                                    + json.dumps({"video": "a.mp4"}) + "\n")
    ds = VideoClipDataset(folder / "m.jsonl", num_frames=8, size=(32, 48), stride=2)
    item = ds[0]
    assert item["image"].shape == (3, 32, 48) and item["video"].shape == (8, 3, 32, 48)
    assert item["video"].min() >= -1 and item["video"].max() <= 1 and item["video"].dtype == torch.float32
    assert item["fps"] == 4.0  # 8 fps at stride 2
    assert 0 <= item["motion_bucket_id"] <= 255 and item["prompt"] == "x"
    # without an image, the first sampled frame is the conditioning image
    assert torch.equal(ds[1]["image"], ds[1]["video"][0])
    spread = VideoClipDataset(folder / "m.jsonl", num_frames=4, size=32, sampling="spread")
    assert spread[0]["fps"] == pytest.approx(8 * 3 / 15)


def test_hflip_flips_image_and_video_together(folder):
    (folder / "m.jsonl").write_text(json.dumps({"video": "a.mp4"}) + "\n")
    a = VideoClipDataset(folder / "m.jsonl", num_frames=4, size=32)[0]
    b = VideoClipDataset(folder / "m.jsonl", num_frames=4, size=32, hflip=1.0)[0]
    assert torch.equal(b["video"], a["video"].flip(-1)) and torch.equal(b["image"], a["image"].flip(-1))


# ---------------------------------------------------------------- motion

def test_motion_score_orders_moving_above_static():
    pan = synth.clip_photo_pan(0)[0]  # content moves 1.5 px / frame
    static = np.repeat(pan[:1], 16, axis=0)
    assert motion_score(static) < 0.01
    assert 0.5 < motion_score(pan) < 2.5  # Farneback underestimates on flat regions


def test_shifted_clip_has_expected_flow():
    base = synth.photo("chelsea")[100:164, 100:164]
    shifted = np.stack([synth.photo("chelsea")[100:164, 100 - 2 * i:164 - 2 * i] for i in range(4)])
    flow = optical_flow(shifted)[:, 8:-8, 8:-8]  # content moves right by 2 px per frame
    assert base.shape == (64, 64, 3)
    assert np.median(flow[..., 0]) == pytest.approx(2.0, abs=0.3)
    assert abs(np.median(flow[..., 1])) < 0.3
    assert motion_bucket(2.0, 64) == round(50 * 100 * 2 / 64)


# ---------------------------------------------------------------- bad inputs

def _ball_centre(frame):
    """Centroid (x, y) of the basketball's orange fill in one ``(H, W, 3)`` frame."""
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    ys, xs = np.nonzero((r > 200) & (g > 100) & (g < 160) & (b < 70))
    return xs.mean(), ys.mean()


def test_aimed_basketball_reaches_the_ring_on_the_same_frame_from_any_start():
    # the sports rule is decided by the first frame: wherever the ball starts, it is at the ring on frame 11
    starts, at_ring = [], []
    for seed in range(6):
        clip = synth.clip_basketball(seed)[0]
        starts.append(_ball_centre(clip[0])[0])
        at_ring.append(_ball_centre(clip[synth.SHOT_FRAMES])[0])
    assert np.ptp(starts) > 4 and np.ptp(at_ring) < 1.5 and abs(np.mean(at_ring) - 53.5) < 1.5
    # the pre-training variant throws at random speeds: no common frame
    random_x = [_ball_centre(synth.clip_basketball(seed, aimed=False)[0][6])[0] for seed in range(6)]
    assert np.ptp(random_x) > 4


def test_missing_file(folder):
    _, bad, _ = _problems_for(folder, {"video": "nope.mp4"})
    assert len(bad) == 1 and "entry 0 (line 1)" in str(bad[0]) and "not found" in str(bad[0])


def test_corrupt_truncated_mp4(folder):
    data = (folder / "a.mp4").read_bytes()
    (folder / "t.mp4").write_bytes(data[: len(data) // 3])
    _, bad, _ = _problems_for(folder, {"video": "t.mp4"})
    assert len(bad) == 1 and "t.mp4" in str(bad[0]) and "re-encode" in str(bad[0])


def test_non_video_named_mp4(folder):
    (folder / "text.mp4").write_text("this is not a video\n" * 50)
    _, bad, _ = _problems_for(folder, {"video": "text.mp4"})
    assert len(bad) == 1 and "not a readable video" in str(bad[0])


def test_too_few_frames(folder, clip):
    write_video(folder / "short.mp4", clip[:5], fps=8)
    _, bad, _ = _problems_for(folder, {"video": "short.mp4"})
    assert len(bad) == 1 and "has 5 frames, 16 needed" in str(bad[0])
    good, bad, _ = _problems_for(folder, {"video": "short.mp4"}, num_frames=5)
    assert bad == [] and len(good) == 1


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_image_modes_are_converted_with_a_warning(folder, clip, mode):
    rgb = Image.fromarray(clip[0])
    if mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
        assert img.mode == "I;16"
    else:
        img = rgb.convert(mode)
    img.save(folder / "odd.png")
    good, bad, warn = _problems_for(folder, {"image": "odd.png", "video": "a.mp4"})
    assert bad == [] and len(good) == 1 and len(warn) == 1 and "converted to 8-bit RGB" in str(warn[0])
    arr = read_image(folder / "odd.png")
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    if mode == "I;16":  # 16-bit scaled down, not clipped
        assert abs(int(arr.mean()) - int(np.asarray(rgb.convert("L")).mean())) <= 1


def test_image_and_video_of_different_sizes(folder, clip):
    Image.fromarray(clip[0]).resize((32, 32)).save(folder / "small.png")
    _, bad, _ = _problems_for(folder, {"image": "small.png", "video": "a.mp4"})
    assert len(bad) == 1 and "32x32 but video a.mp4 is 64x64" in str(bad[0])


def test_missing_keys_and_bad_values(folder):
    _, bad, _ = _problems_for(folder, {"image": "a.png", "prompt": "no video"})
    assert len(bad) == 1 and "missing key 'video'" in str(bad[0])
    _, bad, _ = _problems_for(folder, {"video": "a.mp4", "motion_bucket_id": 999})
    assert len(bad) == 1 and "outside [0, 255]" in str(bad[0])


def test_empty_manifest(folder):
    (folder / "empty.jsonl").write_text("\n# only a comment\n")
    with pytest.raises(ManifestError, match="no entries"):
        check_manifest(folder / "empty.jsonl")


def test_malformed_json_line_reports_line_number(folder):
    (folder / "m.jsonl").write_text(json.dumps({"video": "a.mp4"}) + "\n\n{'video': 'a.mp4'}\n")
    good, problems = check_manifest(folder / "m.jsonl")
    assert len(good) == 1 and len(problems) == 1 and "(line 3)" in str(problems[0])
    (folder / "bad.json").write_text('[{"video": "a.mp4"},\n {"video": }]')
    with pytest.raises(ManifestError, match="line 2"):
        check_manifest(folder / "bad.json")


def test_path_escaping_the_manifest_folder_is_rejected(folder):
    sub = folder / "sub"
    sub.mkdir()
    _, bad, _ = _problems_for(sub, {"video": "../a.mp4"})
    assert len(bad) == 1 and "escapes the manifest's folder" in str(bad[0])
    good, bad, _ = _problems_for(sub, {"video": "../a.mp4"}, allow_outside=True)
    assert bad == [] and len(good) == 1


def test_dataset_raises_or_skips_bad_entries(folder):
    (folder / "m.jsonl").write_text(json.dumps({"video": "a.mp4"}) + "\n" + json.dumps({"video": "gone.mp4"}) + "\n")
    with pytest.raises(InvalidManifest, match="gone.mp4") as err:
        VideoClipDataset(folder / "m.jsonl")
    # the advice names a command that exists (there is no --skip-invalid flag) and the keyword argument
    assert "--skip-invalid" not in str(err.value) and "i2v data check" in str(err.value)
    ds = VideoClipDataset(folder / "m.jsonl", skip_invalid=True)
    assert len(ds) == 1 and len([p for p in ds.problems if p.fatal]) == 1


# ---------------------------------------------------------------- the shipped samples and the CLI

def test_shipped_sample_manifests_are_valid():
    for name in ("general", "sports", "animated"):
        for split in ("train", "val"):
            good, problems = check_manifest(REPO / "data_samples" / name / f"{split}.jsonl", decode=False)
            assert [p for p in problems if p.fatal] == [] and len(good) >= 16


def test_cli_data_check_exit_codes(folder):
    ok = subprocess.run([sys.executable, "-m", "i2v_helpers.cli", "data", "check",
                         str(REPO / "data_samples/general/train.jsonl")], capture_output=True, text=True)
    assert ok.returncode == 0 and "good entries" in ok.stdout
    (folder / "broken.jsonl").write_text("\n".join([json.dumps({"video": "a.mp4"}), json.dumps({"video": "x.mp4"}),
                                                    "{oops", json.dumps({"prompt": "p"})]) + "\n")
    bad = subprocess.run([sys.executable, "-m", "i2v_helpers.cli", "data", "check", str(folder / "broken.jsonl")],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    err = bad.stderr.splitlines()
    assert len(err) == 3 and err[0].startswith("entry 1 (line 2)") and "line 3" in err[1] and "missing key" in err[2]


def test_motion_stats_of_a_manifest_for_data_check(folder, clip):
    (folder / "m.jsonl").write_text(json.dumps({"video": "a.mp4"}) + "\n" + json.dumps({"video": "b.mp4"}) + "\n")
    write_video(folder / "b.mp4", np.repeat(clip[:1], 16, axis=0), fps=8)  # a still clip
    good, _ = check_manifest(folder / "m.jsonl", num_frames=8)
    stats = motion_stats(good, 8)
    assert list(stats) == ["min", "mean", "max"] and stats["min"] < 0.05 < stats["max"]
    assert stats["max"] == pytest.approx(motion_score(read_video(folder / "a.mp4")[0][:8]))


def test_curate_manifest_keeps_clips_that_pass_and_writes_a_valid_manifest(tmp_path):
    from i2v_helpers.prepare import curate_manifest

    moving, meta = synth.clip_shapes(3)
    write_video(tmp_path / "moving.mp4", moving, fps=8)
    write_video(tmp_path / "static.mp4", np.repeat(moving[:1], 16, axis=0), fps=8)
    (tmp_path / "all.jsonl").write_text(json.dumps({"video": "moving.mp4", "prompt": "m", "family": "x",
                                                    "objects": meta["objects"]}) + "\n"
                                        + json.dumps({"video": "static.mp4", "prompt": "s", "fps": 8}) + "\n")
    dst, rows = curate_manifest(tmp_path / "all.jsonl", min_motion=0.05)
    assert dst == tmp_path / "all.curated.jsonl"
    assert [r["kept"] for r in rows] == [True, False] and rows[1]["motion"] == 0.0 and rows[1]["flicker"] == 0.0
    good, problems = check_manifest(dst)
    assert [e.prompt for e in good] == ["m"] and good[0].extra == {"family": "x"} and not problems
    assert good[0].objects == meta["objects"]  # the object ground truth survives curation
    with pytest.raises(ValueError, match="no entry passes"):
        curate_manifest(tmp_path / "all.jsonl", min_motion=1e6)
    with pytest.raises(ValueError, match="next to"):
        curate_manifest(tmp_path / "all.jsonl", tmp_path / "sub" / "x.jsonl")
