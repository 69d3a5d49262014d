"""Look at a model's frames on the learning-curve probe's clips: real | generated strips.

    python benchmarks/peek_frames.py MODEL_DIR OUT.png [--clips 0,1,2,3] [--max-guidance 3] [--title T]

The first held-out ``general`` clips with objects (``probe.probe_items``, the probe's clips), each generated
from its own first frame with the sampler's defaults (25 steps, seed 0), drawn by ``viz.frame_strips`` (frames
0, 3, 6, 9, 12, 15). For a build in progress, assemble its checkpoint first:
``i2v pretrain finalize --work-dir /work/v2build/trunk --out /tmp/v2peek``.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

from i2v_helpers.generation import generate  # noqa: E402
from i2v_helpers.models import load_pipeline  # noqa: E402
from i2v_helpers.probe import probe_items  # noqa: E402
from i2v_helpers.viz import frame_strips  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--clips", default="0,1,2,3", help="indices into the probe's clips")
    ap.add_argument("--max-guidance", type=float, default=3.0)
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    pipe = load_pipeline(args.model_dir)
    idx = [int(i) for i in args.clips.split(",")]
    items = probe_items(n=max(idx) + 1)
    rows = {}
    for i in idx:
        real = items[i]["video"]
        rows[f"real {i}"] = real
        rows[f"model {i}"] = generate(pipe, items[i]["image"], fps=items[i]["fps"],
                                      motion_bucket_id=items[i]["motion_bucket_id"],
                                      max_guidance=args.max_guidance, seed=0)
    frame_strips(rows, title=args.title or args.model_dir).savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
