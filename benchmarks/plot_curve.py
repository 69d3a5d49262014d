"""Plot the tiny-v2 build's learning curve (``curve.csv`` written by ``i2v pretrain``) to a PNG.

    python benchmarks/plot_curve.py WORK_DIR/curve.csv [--out benchmarks/v2_learning_curve.png]

Panels: the VAE's held-out PSNR over its training minutes; then, over the UNet phase's training
minutes, the generated clips' ``object_err_px`` next to repeat-the-first-frame, the σ_start probe's
object error at each σ, and ``object_kept`` / ``flow_epe``. Minutes are training time of the phase
(probe time excluded).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_curve(path) -> dict:
    """``{(phase, metric): [(minutes, value), ...]}`` from a long-format curve.csv."""
    out = defaultdict(list)
    with open(path) as f:
        for row in csv.DictReader(f):
            out[(row["phase"], row["metric"])].append((float(row["seconds"]) / 60, float(row["value"])))
    return {k: sorted(v) for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--out", default="benchmarks/v2_learning_curve.png")
    args = ap.parse_args()
    c = read_curve(args.csv)
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))

    def line(ax, key, **kw):
        if key in c:
            x, y = zip(*c[key])
            ax.plot(x, y, marker="o", ms=3, **kw)

    line(axes[0], ("vae", "vae_psnr_db"), label="VAE PSNR (8 held-out general clips)")
    axes[0].axhline(30, color="grey", ls="--", lw=1, label="target 30 dB")
    axes[0].set(title="VAE phase", xlabel="training minutes", ylabel="dB")
    line(axes[1], ("unet", "object_err_px"), label="generated (guidance 1→3)")
    line(axes[1], ("unet", "base_object_err_px"), label="repeat first frame", ls="--")
    axes[1].set(title="object error, 8 held-out clips", xlabel="UNet training minutes", ylabel="px")
    for s in ("1", "3", "10", "700"):
        line(axes[2], ("unet", f"err@{s}"), label=f"σ_start {s}")
    line(axes[2], ("unet", "base_object_err_px"), label="repeat first frame", ls="--", color="grey")
    axes[2].set(title="σ_start probe: object error", xlabel="UNet training minutes", ylabel="px")
    line(axes[3], ("unet", "object_kept"), label="object_kept (generated)")
    line(axes[3], ("unet", "flow_epe"), label="flow_epe (generated)")
    line(axes[3], ("unet", "base_flow_epe"), label="flow_epe (repeat first frame)", ls="--")
    axes[3].set(title="kept / flow", xlabel="UNet training minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no probe yet", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
