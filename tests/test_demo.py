"""`i2v demo`, the README's main job, end to end at smoke-test size (1 step per stage, 2 clips)."""

import json
import math

import pytest
from PIL import Image

from conftest import REPO  # tests/conftest.py
from i2v_helpers.cli import main
from i2v_helpers.video_io import read_video

DATA = REPO / "data_samples"


@pytest.mark.slow
def test_demo_runs_check_stage1_stage2_eval_and_writes_a_video(tmp_path, capsys):
    rc = main(["demo", "--data", str(DATA), "--out", str(tmp_path), "--stage1-steps", "1", "--stage2-steps", "1",
               "--max-train-clips", "2", "--eval-clips", "1", "--eval-seeds", "1", "--eval-steps", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    for stage in ("1/5 data check", "2/5 stage 1", "3/5 stage 2", "4/5 evaluation", "5/5 a generated video"):
        assert stage in printed
    assert "baseline" in printed and "stage 2" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {k.split(":")[0] for k in summary} == {"general", "sports"}
    assert all(math.isfinite(d) and n == 1 for d, se, n in summary.values())
    assert "sports: stage 2 - stage 1: static_flow" in summary  # the region split is reported too
    assert "sports: stage 2 - stage 1: far_flow" in summary
    assert "sports: stage 2 - stage 1: object_err_px" in summary  # the ball's position, from its ground truth
    assert (tmp_path / "stage1" / "pipeline" / "model_index.json").is_file()
    assert (tmp_path / "stage2-sports" / "adapter" / "adapter_model.safetensors").is_file()
    frames, _ = read_video(tmp_path / "generated.mp4")
    assert frames.shape == (16, 64, 64, 3)
    assert read_video(tmp_path / "compare_real_stage1_stage2.mp4")[0].shape[2] > 3 * 64
    strips = Image.open(tmp_path / "compare_real_stage1_stage2.png")  # its frames, labelled, for a quick look
    assert strips.width > 6 * 64 and strips.height > 3 * 64
    assert (tmp_path / "eval-sports-stage2" / "metrics.csv").is_file()
