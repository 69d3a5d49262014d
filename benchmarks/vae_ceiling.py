"""How high the ship test's bar sits against the VAE's own ceiling.

    python benchmarks/vae_ceiling.py MODEL_DIR [--manifest data_samples/general/val.jsonl] [--max-clips N]

Every held-out clip encoded and decoded by MODEL_DIR's VAE, scored as a generated clip would be
(``evaluation.evaluate_generation(reconstruct=True)``), and paired clip by clip with repeat-the-first-frame
(``evaluation.format_paired``: the clip is the unit). No UNet runs: a base decoded by this VAE can at best
score about this, so a target the ceiling itself does not reach beyond 2 SE cannot be met by any UNet.
"""

from __future__ import annotations

import argparse

import torch

from i2v_helpers.evaluation import evaluate_generation, format_paired
from i2v_helpers.models import load_pipeline, model_geometry


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--manifest", default="data_samples/general/val.jsonl")
    ap.add_argument("--max-clips", type=int, default=None)
    args = ap.parse_args()
    pipe = load_pipeline(args.model_dir, device="cpu", dtype=torch.float32)
    frames, h, w = model_geometry(pipe)
    res = {"repeat first frame": evaluate_generation(None, args.manifest, seeds=(0,), max_clips=args.max_clips,
                                                     num_frames=frames, size=(h, w), progress=False),
           "vae ceiling": evaluate_generation(pipe, args.manifest, seeds=(0,), max_clips=args.max_clips,
                                              reconstruct=True, progress=False)}
    print(f"{args.model_dir}: {res['vae ceiling']['clips']} clips of {args.manifest}")
    print(format_paired(res, "repeat first frame", "vae ceiling"))


if __name__ == "__main__":
    main()
