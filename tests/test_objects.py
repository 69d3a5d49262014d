"""Object ground truth (synth, manifests) and the object metrics on constructed cases."""

import json
import math
import shutil

import numpy as np
import pytest

from conftest import REPO  # tests/conftest.py
from i2v_helpers import synth
from i2v_helpers.course_data import add_objects, refresh_buckets
from i2v_helpers.data import parse_manifest
from i2v_helpers.metrics import find_object, object_metrics, repeat_first_frame
from i2v_helpers.video_io import read_video

FAMILIES_WITH_OBJECTS = ("shapes", "spinner", "basketball", "cartoon_hop")


def _square_clip(n=8, px=3, side=8):
    """A red ``side``-px square moving ``px`` px / frame right on flat grey: ``(n, 64, 64, 3)`` uint8
    and its true ``objects`` (pixel centres at integers, so the centre is ``left + (side - 1) / 2``)."""
    clip = np.full((n, 64, 64, 3), 90, np.uint8)
    centroids = []
    for i in range(n):
        left = 10 + px * i
        clip[i, 28:28 + side, left:left + side] = (230, 40, 40)
        centroids.append([left + (side - 1) / 2, 28 + (side - 1) / 2])
    return clip, [{"colour": [230, 40, 40], "centroid": centroids, "area": [side * side] * n}]


def test_perfect_copy_scores_zero_px_and_kept():
    clip, objects = _square_clip()
    assert object_metrics(clip, objects) == {"object_err_px": 0.0, "object_kept": 1.0}


def test_frozen_first_frame_scores_the_true_displacement():
    clip, objects = _square_clip(n=8, px=3)
    m = object_metrics(repeat_first_frame(clip), objects)
    assert m["object_kept"] == 1.0  # the object is still there...
    assert m["object_err_px"] == pytest.approx(np.mean([3 * i for i in range(1, 8)]))  # ...where it started
    frames, meta = synth.clip_basketball(0)  # the same on a drawn clip: the ball's flight from frame 0
    path = np.array(meta["objects"][0]["centroid"])
    m = object_metrics(repeat_first_frame(frames), meta["objects"])
    assert m["object_kept"] == 1.0
    assert m["object_err_px"] == pytest.approx(np.linalg.norm(path[1:] - path[0], axis=1).mean(), abs=0.3)


def test_vanished_object_is_not_kept_and_costs_the_diagonal():
    clip, objects = _square_clip()
    gone = np.repeat(np.full_like(clip[:1], 90), len(clip), axis=0)
    gone[0] = clip[0]  # the input frame is not scored
    m = object_metrics(gone, objects)
    assert m["object_kept"] == 0.0 and m["object_err_px"] == pytest.approx(math.hypot(64, 64))


def test_object_found_by_colour_despite_drift_and_not_confused_with_a_smaller_blob():
    clip, objects = _square_clip()
    drifted = clip.copy()
    drifted[np.all(clip == (230, 40, 40), axis=-1)] = (170, 80, 70)  # ~80 RGB units off, like the tiny VAE
    drifted[:, 5:8, 50:53] = (230, 40, 40)  # a 9-px speck of the exact colour: too small to be the object
    m = object_metrics(drifted, objects)
    assert m == {"object_err_px": 0.0, "object_kept": 1.0}


def test_clips_without_objects_score_nan():
    clip, _ = _square_clip()
    assert all(math.isnan(v) for v in object_metrics(clip, None).values())


def _pretrain_turned(count=3):
    """Pre-training clips whose shapes were reversed and turned (their tracks are transformed too)."""
    out, seed = [], 0
    while len(out) < count:
        frames, meta = synth.clip_pretrain(seed)
        if meta["rule"].startswith("random"):
            out.append((frames, meta))
        seed += 1
    return out


@pytest.mark.parametrize("family", FAMILIES_WITH_OBJECTS + ("pretrain_turned",))
def test_recorded_centroids_match_the_drawn_pixels(family):
    clips = _pretrain_turned() if family == "pretrain_turned" else [synth.FAMILIES[family](s) for s in range(4)]
    for frames, meta in clips:
        assert meta["objects"], family
        for obj in meta["objects"]:
            assert len(obj["centroid"]) == len(obj["area"]) == len(frames)
            for f, (xy, area) in enumerate(zip(obj["centroid"], obj["area"])):
                if xy is None or area < 0.5 * max(obj["area"]):
                    continue  # out of view or mostly covered
                found, _ = find_object(frames[f], obj["colour"], xy, area)  # a blob of ½–2× the area
                assert found is not None and np.linalg.norm(found - xy) < 1.0, (family, f, xy, found)


def test_families_without_objects_record_none():
    for family in ("waves", "pan", "zoom"):
        assert "objects" not in synth.FAMILIES[family](0)[1]


def test_touching_objects_of_one_colour_record_their_union():
    # shapes seed 10: two green shapes that overlap in every frame, one blob to a colour search
    frames, meta = synth.clip_shapes(10)
    a, b = meta["objects"]
    assert a["colour"] == b["colour"] and a["centroid"] == b["centroid"] and a["area"] == b["area"]
    assert object_metrics(frames, meta["objects"])["object_err_px"] < 0.5


# ---------------------------------------------------------------- manifests


def test_shipped_manifests_carry_objects_that_match_the_videos():
    for name, family in (("sports", "basketball"), ("animated", "cartoon_hop")):
        entries, problems = parse_manifest(REPO / f"data_samples/{name}/val.jsonl")
        assert not problems
        with_objects = [e for e in entries if e.objects]
        assert {e.extra["family"] for e in with_objects} == {family}
        assert all(e.objects is None for e in entries if e.extra["family"].startswith("footage"))
        for e in with_objects[:4]:
            m = object_metrics(read_video(e.video)[0], e.objects)  # H.264: colours shift a little
            assert m["object_kept"] == 1.0 and m["object_err_px"] < 1.0, e.where


def test_add_objects_reproduces_the_shipped_manifests(tmp_path):
    shutil.copytree(REPO / "data_samples/sports", tmp_path / "sports")
    before = {p.name: p.read_bytes() for p in (tmp_path / "sports").glob("*/*")}
    counts = add_objects(tmp_path, sets=["sports"], log=lambda *a: None)
    assert counts == {"sports/train": 36, "sports/val": 16}
    for split in ("train", "val"):  # the shipped manifests are up to date
        shipped = (REPO / f"data_samples/sports/{split}.jsonl").read_text()
        assert (tmp_path / f"sports/{split}.jsonl").read_text() == shipped
    assert {p.name: p.read_bytes() for p in (tmp_path / "sports").glob("*/*")} == before  # media untouched


def test_add_objects_refuses_a_manifest_made_another_way(tmp_path):
    shutil.copytree(REPO / "data_samples/sports", tmp_path / "sports")
    val = tmp_path / "sports/val"
    (val / "0000.png").write_bytes((val / "0001.png").read_bytes())
    with pytest.raises(ValueError, match="0000.png"):
        add_objects(tmp_path, sets=["sports"], log=lambda *a: None)


def test_parse_manifest_exposes_and_checks_objects(tmp_path):
    clip, objects = _square_clip()
    good = {"video": "a.mp4", "objects": objects, "family": "x"}
    bad = {"video": "a.mp4", "objects": [{"colour": [1, 2], "centroid": [], "area": []}]}
    (tmp_path / "m.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    entries, problems = parse_manifest(tmp_path / "m.jsonl")
    assert len(entries) == 1 and entries[0].objects == objects and entries[0].extra == {"family": "x"}
    assert len(problems) == 1 and "'objects'" in str(problems[0]) and "entry 1" in str(problems[0])
    (tmp_path / "m.csv").write_text('video,objects\na.mp4,"' + json.dumps(objects).replace('"', '""') + '"\n')
    entries, problems = parse_manifest(tmp_path / "m.csv")
    assert not problems and entries[0].objects == objects


def test_refresh_buckets_gives_todays_bucket_and_touches_nothing_else(tmp_path):
    """The sports manifests were rewritten with today's motion_score: refreshing changes none of
    them; a bucket edited by hand is put back, and no other key or media file changes."""
    shutil.copytree(REPO / "data_samples" / "sports", tmp_path / "sports")
    f = tmp_path / "sports" / "val.jsonl"
    lines = f.read_text().splitlines()
    entry = json.loads(lines[0])
    lines[0] = json.dumps({**entry, "motion_bucket_id": entry["motion_bucket_id"] + 7})
    f.write_text("\n".join(lines) + "\n")
    counts = refresh_buckets(tmp_path, sets=["sports"], log=lambda *a: None)
    assert counts == {"sports/train": 0, "sports/val": 1}
    assert f.read_text() == (REPO / "data_samples" / "sports" / "val.jsonl").read_text()
