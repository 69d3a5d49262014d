"""The UNet ablation arms side by side: each arm's probe points as one markdown table.

    python benchmarks/arm_table.py /work/v2build/arms [ARM ...]

Reads ARMS_DIR/NAME/curve.csv (written by ``i2v pretrain unet``, one row per probe metric) and prints,
per arm and probe, the training step and minutes and the probe's object and flow figures (held-out
``general`` clips with objects, seed 0: i2v_helpers.probe; 8 clips in the 15-minute arms and the
trunk), with the paired difference from repeat-the-first-frame and its SE over clips where the probe
recorded it. Repeat-the-first-frame gets one row per probe size (8 or 16 clips).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

COLUMNS = ["object_kept", "object_err_px", "flow_epe", "err@1", "err@3", "err@10", "err@700", "kept@700"]
PAIRED = ["object_err_px", "flow_epe"]  # generated - repeat-the-first-frame, ± SE over clips (probes since the trunk)


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
    heads = COLUMNS + [f"Δ{k} ± SE" for k in PAIRED]
    print("| arm | step | train min | " + " | ".join(heads) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in heads) + " |")
    baselines = {}  # one repeat-the-first-frame row per probe size
    for name in names:
        for step, sec, m in arm_points(root / name / "curve.csv"):
            baselines.setdefault(int(m.get("clips", 8)), m)
            cells = [f"{m[c]:.3g}" if c in m else "" for c in COLUMNS]
            cells += [f"{m[f'd_{k}']:+.3g} ± {m[f'se_d_{k}']:.2g}" if f"d_{k}" in m else "" for k in PAIRED]
            print(f"| {name} | {step} | {sec / 60:.1f} | " + " | ".join(cells) + " |")
    for clips, m in sorted(baselines.items()):
        b = [f"{m[k]:.3g}" for k in ("base_object_kept", "base_object_err_px", "base_flow_epe")]
        print(f"| repeat the first frame ({clips} clips) | | | " + " | ".join(b) + " |" + " |" * (len(heads) - 3))


if __name__ == "__main__":
    main()
