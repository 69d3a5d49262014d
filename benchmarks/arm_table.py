"""The UNet ablation arms side by side: each arm's probe points as one markdown table.

    python benchmarks/arm_table.py /work/v2build/arms [ARM ...]

Reads ARMS_DIR/NAME/curve.csv (written by ``i2v pretrain unet``, one row per probe metric) and prints,
per arm and probe, the training step and minutes and the probe's object and flow figures (8 held-out
``general`` clips with objects, seed 0: i2v_helpers.probe). Repeat-the-first-frame is one extra row.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

COLUMNS = ["object_kept", "object_err_px", "flow_epe", "err@1", "err@3", "err@10", "err@700", "kept@700"]


def arm_points(path: Path) -> list[tuple[int, float, dict]]:
    """``[(step, seconds, {metric: value}), ...]`` of one arm's UNet probes, in step order."""
    points = defaultdict(dict)
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["phase"] == "unet":
                points[(int(row["step"]), float(row["seconds"]))][row["metric"]] = float(row["value"])
    return [(s, sec, m) for (s, sec), m in sorted(points.items())]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("arms_dir")
    ap.add_argument("arms", nargs="*", help="default: every arm folder with a curve.csv")
    args = ap.parse_args()
    root = Path(args.arms_dir)
    names = args.arms or sorted(p.parent.name for p in root.glob("*/curve.csv"))
    print("| arm | step | train min | " + " | ".join(COLUMNS) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |")
    baseline = None
    for name in names:
        for step, sec, m in arm_points(root / name / "curve.csv"):
            baseline = baseline or m
            cells = [f"{m[c]:.3g}" if c in m else "" for c in COLUMNS]
            print(f"| {name} | {step} | {sec / 60:.1f} | " + " | ".join(cells) + " |")
    if baseline:
        b = [f"{baseline[k]:.3g}" for k in ("base_object_kept", "base_object_err_px", "base_flow_epe")]
        print("| repeat the first frame | | | " + " | ".join(b) + " |" + " |" * (len(COLUMNS) - 3))


if __name__ == "__main__":
    main()
