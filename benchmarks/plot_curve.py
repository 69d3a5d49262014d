"""Plot the tiny-v2 build's learning curve (``curve.csv`` written by ``i2v pretrain``) to a PNG.

    python benchmarks/plot_curve.py WORK_DIR/curve.csv [MORE.csv ...] [--out benchmarks/v2_learning_curve.png]

Several CSVs are read as one curve (the build's VAE phase in one folder, the UNet trunk in another).
Panels: the VAE's held-out PSNR over its training minutes; then, over the UNet phase's training
minutes, the generated clips' ``object_err_px`` next to repeat-the-first-frame, the σ_start probe's
object error at each σ, ``object_kept`` / ``flow_epe``, and the paired differences generated −
repeat-the-first-frame with ± 2 SE over clips (the ship target: below zero by more than 2 SE; probes
that recorded it). Minutes are training time of the phase (probe time excluded).
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
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--out", default="benchmarks/v2_learning_curve.png")
    args = ap.parse_args()
    c = {}
    for path in args.csv:
        c.update(read_curve(path))
    fig, axes = plt.subplots(1, 5, figsize=(22, 4))

    def line(ax, key, **kw):
        if key in c:
            x, y = zip(*c[key])
            ax.plot(x, y, marker="o", ms=3, **kw)

    line(axes[0], ("vae", "vae_psnr_db"), label="VAE PSNR (8 held-out general clips)")
    axes[0].axhline(30, color="grey", ls="--", lw=1, label="target 30 dB")
    axes[0].set(title="VAE phase", xlabel="training minutes", ylabel="dB")
    line(axes[1], ("unet", "object_err_px"), label="generated (guidance 1→3)")
    line(axes[1], ("unet", "base_object_err_px"), label="repeat first frame", ls="--")
    axes[1].set(title="object error, 8 held-out clips × 1 seed", xlabel="UNet training minutes",
                ylabel="px")
    for s in ("1", "3", "10", "700"):
        line(axes[2], ("unet", f"err@{s}"), label=f"σ_start {s}")
    line(axes[2], ("unet", "base_object_err_px"), label="repeat first frame", ls="--", color="grey")
    axes[2].set(title="σ_start probe: object error", xlabel="UNet training minutes", ylabel="px")
    line(axes[3], ("unet", "object_kept"), label="object_kept (generated)")
    line(axes[3], ("unet", "flow_epe"), label="flow_epe (generated)")
    line(axes[3], ("unet", "base_flow_epe"), label="flow_epe (repeat first frame)", ls="--")
    axes[3].set(title="kept / flow", xlabel="UNet training minutes")
    for k, colour in (("object_err_px", "tab:blue"), ("flow_epe", "tab:orange")):
        if ("unet", f"d_{k}") in c:
            (x, d), (_, se) = zip(*c[("unet", f"d_{k}")]), zip(*c[("unet", f"se_d_{k}")])
            axes[4].errorbar(x, d, yerr=[2 * e for e in se], marker="o", ms=3, capsize=3, color=colour,
                             label=f"Δ{k} ± 2 SE")
    axes[4].set(title="generated − repeat first frame (paired)", xlabel="UNet training minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines or ax.containers:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no probe yet", ha="center", va="center", transform=ax.transAxes, color="grey")
    if axes[4].containers:
        axes[4].axhline(0, color="grey", ls="--", lw=1)  # the ship target: the bar wholly below this line
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
