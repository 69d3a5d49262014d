"""Full-size SVD-xt training benchmarks on one GPU (random weights, SVD-xt's architecture).

    python benchmarks/gpu_svd_xt.py OUT.jsonl [--budget-s 240] [--preset svd-xt]

Runs the matrix of ``benchmarks/RESULTS.md`` in priority order, one JSON line per
configuration (``i2v bench train`` rows), and stops starting new configurations once
``--budget-s`` seconds have passed. ``--preset tiny`` runs the same script on a CPU in
seconds (how it is tested before a GPU session).
"""

from __future__ import annotations

import argparse
import json
import time

from i2v_helpers.bench import BenchSetup, bench_train, format_bench

# (technique, frames, height, width, checkpointing, modes)
MATRIX = [
    ("lora", 25, 576, 1024, "full", ("trainer",)),
    ("full", 25, 576, 1024, "full", ("trainer",)),
    ("lora", 14, 576, 1024, "full", ("trainer",)),
    ("full", 14, 576, 1024, "full", ("trainer",)),
    ("lora", 14, 320, 512, False, ("naive", "trainer")),
    ("lora", 25, 576, 1024, True, ("trainer",)),
    ("lora", 14, 576, 1024, False, ("trainer",)),
    ("full", 14, 576, 1024, False, ("trainer",)),
    ("lora", 25, 576, 1024, False, ("trainer",)),
    ("lora", 14, 576, 1024, "full", ("naive", "trainer")),
    ("full", 14, 320, 512, False, ("naive", "trainer")),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--budget-s", type=float, default=240)
    ap.add_argument("--preset", default="svd-xt")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", type=int, nargs="*", default=None, help="indexes into MATRIX")
    args = ap.parse_args()
    t0 = time.time()
    with open(args.out, "a") as f:
        for i, (technique, frames, h, w, ckpt, modes) in enumerate(MATRIX):
            if args.only is not None and i not in args.only:
                continue
            if time.time() - t0 > args.budget_s:
                print(f"[gpu-bench] budget of {args.budget_s:.0f} s spent: skipping the rest", flush=True)
                break
            if args.preset == "tiny":
                frames, h, w = min(frames, 4), 64, 64
            setup = BenchSetup(preset=args.preset, technique=technique, frames=frames, height=h, width=w,
                               batch=1, lora_rank=16, gradient_checkpointing=ckpt, warmup=2, steps=args.steps)
            t = time.time()
            try:
                res = bench_train(setup, modes=modes)
            except Exception as e:  # record and go on: one failure must not lose the other rows
                res = {"setup": setup.__dict__, "error": f"{type(e).__name__}: {str(e)[:300]}"}
            res["wall_s"] = round(time.time() - t, 1)
            f.write(json.dumps(res, default=str) + "\n")
            f.flush()
            print(format_bench(res) if "error" not in res else res, flush=True)
            print(f"[gpu-bench] {res['wall_s']} s", flush=True)


if __name__ == "__main__":
    main()
