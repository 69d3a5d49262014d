"""Generate from held-out first frames and score against the real clips, with the
"repeat the first frame" baseline on the same clips.

Introduced in notebook 08 (evaluation).
"""

from __future__ import annotations

import numpy as np

from .data import parse_manifest
from .metrics import motion_metrics, repeat_first_frame
from .sampling import generate
from .video_io import read_video

METRIC_KEYS = ("flow_cosine", "flow_epe", "motion_ratio", "psnr")


def evaluate_generation(pipe, manifest, seeds=(0, 1), steps: int = 25, max_clips: int | None = None,
                        num_frames: int = 16, noise_aug_strength: float = 0.02, progress=None) -> dict:
    """Score ``pipe`` on the clips of ``manifest`` (first frame → ``num_frames`` frames).

    Each clip is generated once per seed with the entry's ``fps`` and ``motion_bucket_id``.
    Returns ``{"rows": [...], "model": {metric: (mean, std)}, "baseline": {...},
    "clips": n, "seeds": [...]}``; the spread is the std over clip-seed pairs.
    """
    entries, _ = parse_manifest(manifest)
    entries = entries[:max_clips] if max_clips else entries
    rows = []
    it = entries if progress is None else progress(entries)
    for e in it:
        gt = read_video(e.video)[0][:num_frames]
        base = motion_metrics(repeat_first_frame(gt), gt)
        for seed in seeds:
            gen = generate(pipe, gt[0], num_frames=num_frames, steps=steps, fps=e.fps or 7,
                           motion_bucket_id=e.motion_bucket_id if e.motion_bucket_id is not None else 127,
                           noise_aug_strength=noise_aug_strength, seed=seed)
            m = motion_metrics(gen, gt)
            rows.append({"clip": e.where, "family": e.extra.get("family", ""), "seed": seed,
                         **{k: m[k] for k in METRIC_KEYS}, **{f"baseline_{k}": base[k] for k in METRIC_KEYS}})

    def summary(prefix=""):
        return {k: (float(np.mean([r[prefix + k] for r in rows])), float(np.std([r[prefix + k] for r in rows])))
                for k in METRIC_KEYS}

    return {"rows": rows, "model": summary(), "baseline": summary("baseline_"), "clips": len(entries),
            "seeds": list(seeds)}


def format_summary(result: dict) -> str:
    """A small text table: metric, model mean ± std, baseline mean ± std."""
    lines = [f"{'metric':<14}{'model':>18}{'repeat-first-frame':>22}"]
    for k in METRIC_KEYS:
        m, b = result["model"][k], result["baseline"][k]
        lines.append(f"{k:<14}{m[0]:>10.3f} ± {m[1]:<5.3f}{b[0]:>14.3f} ± {b[1]:<5.3f}")
    lines.append(f"({result['clips']} clips × {len(result['seeds'])} seeds)")
    return "\n".join(lines)
