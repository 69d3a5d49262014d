"""Issue 24 (benchmarks/RESULTS.md, "Stage 2's overshoot"): does a weaker stage-2 LoRA at sampling time keep
the ball gain and lose the overshoot? Needs runs/tiny-stage1 and runs/tiny-stage2-sports (notebooks 06-07 or
`i2v train`). About 12 minutes on 2 idle cores: python benchmarks/v2_stage2_knobs.py"""
import os
from pathlib import Path

from i2v_helpers.evaluation import evaluate_generation, format_comparison, format_paired
from i2v_helpers.lora import set_lora_scale
from i2v_helpers.metrics import MOTION_KEYS, OBJECT_KEYS
from i2v_helpers.models import load_model

os.chdir(Path(__file__).resolve().parents[1])  # run folders and data are relative to the repository root
VAL, KW = "data_samples/sports/val.jsonl", dict(seeds=(0, 1), steps=25, max_clips=16, progress=False)
KEYS = MOTION_KEYS + OBJECT_KEYS

res = {"stage 1": evaluate_generation(load_model("runs/tiny-stage1"), VAL, name="stage 1", **KW)}
stage2 = load_model("runs/tiny-stage1", lora="runs/tiny-stage2-sports/adapter")
for scale in (1.0, 0.75, 0.5):
    set_lora_scale(stage2.unet, scale)
    res[f"s2 x{scale}"] = evaluate_generation(stage2, VAL, name=f"s2 x{scale}", **KW)
print(format_comparison(res))
for name in ("s2 x1.0", "s2 x0.75", "s2 x0.5"):
    print(format_paired(res, "stage 1", name, metrics=KEYS))
print(format_paired(res, "s2 x1.0", "s2 x0.5", metrics=KEYS))
