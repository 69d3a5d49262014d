"""Generate from held-out first frames and score against the real clips, with the
"repeat the first frame" baseline on the same clips; compare several models.

``i2v eval --model PATH [--lora DIR | --adapters DIR] --manifest VAL --out DIR`` and
``i2v eval --compare NAME=SPEC ... --manifest VAL``. A SPEC is a pipeline folder or run
folder, optionally followed by ``+lora:DIR`` or ``+adapters:DIR``; ``baseline`` is the
repeated first frame. Every model sees the same clips and the same seeds.

Introduced in notebook 08 (evaluation).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .data import parse_manifest
from .metrics import motion_metrics, repeat_first_frame
from .sampling import generate
from .video_io import read_video

MOTION_KEYS = ("flow_cosine", "flow_epe", "motion_ratio", "moving_epe", "static_flow", "far_flow")
METRIC_KEYS = MOTION_KEYS + ("warp_error", "psnr", "ssim", "first_frame_psnr")
HIGHER_IS_BETTER = {"flow_cosine": True, "flow_epe": False, "motion_ratio": None, "moving_epe": False,
                    "static_flow": False, "far_flow": False, "warp_error": False, "psnr": True, "ssim": True, "first_frame_psnr": True}


def _entries(manifest, max_clips):
    entries, _ = parse_manifest(manifest)
    return entries[:max_clips] if max_clips else entries


def evaluate_generation(pipe, manifest, seeds=(0, 1), steps: int = 25, max_clips: int | None = None,
                        num_frames: int = 16, noise_aug_strength: float = 0.02, progress=None,
                        keep_videos: int = 0) -> dict:
    """Score ``pipe`` on the clips of ``manifest`` (first frame → ``num_frames`` frames).

    Each clip is generated once per seed with the entry's ``fps`` and ``motion_bucket_id``;
    ``pipe=None`` scores only the baseline. Returns ``{"rows", "model": {metric: (mean, std)},
    "baseline": {...}, "clips", "seeds", "videos"}``; the spread is the std over clip-seed
    pairs; ``videos`` holds ``(image, truth, generated)`` of the first ``keep_videos`` clips (seed 0).
    """
    entries = _entries(manifest, max_clips)
    rows, videos = [], []
    it = entries if progress is None else progress(entries)
    for i, e in enumerate(it):
        gt = read_video(e.video)[0][:num_frames]
        base = motion_metrics(repeat_first_frame(gt), gt)
        for seed in seeds:
            if pipe is None:
                gen, m = repeat_first_frame(gt), base
            else:
                gen = generate(pipe, gt[0], num_frames=num_frames, steps=steps, fps=e.fps or 7,
                               motion_bucket_id=e.motion_bucket_id if e.motion_bucket_id is not None else 127,
                               noise_aug_strength=noise_aug_strength, seed=seed)
                m = motion_metrics(gen, gt)
            if i < keep_videos and seed == seeds[0]:
                videos.append((gt[0], gt, gen))
            rows.append({"clip": e.where, "family": e.extra.get("family", ""), "seed": seed,
                         **{k: m[k] for k in METRIC_KEYS}, **{f"baseline_{k}": base[k] for k in METRIC_KEYS}})

    def summary(prefix=""):
        return {k: (float(np.mean([r[prefix + k] for r in rows])), float(np.std([r[prefix + k] for r in rows])))
                for k in METRIC_KEYS}

    return {"rows": rows, "model": summary(), "baseline": summary("baseline_"), "clips": len(entries),
            "seeds": list(seeds), "videos": videos}


def vae_reconstruction_metrics(vae, clips: np.ndarray) -> dict:
    """The autoencoder's ceiling: :func:`i2v_helpers.metrics.motion_metrics` of the VAE's
    reconstructions of real clips ``uint8`` ``(N, F, H, W, 3)`` (one decode chunk per clip),
    mean over clips. A generated clip is decoded by the same VAE, so a model whose latents are
    as faithful as the encoder's scores about this: a decoder that shimmers gives flow where
    the real clip is still, whatever the UNet does."""
    from .data import to_model_range, to_uint8
    from .pretrain import vae_reconstruct

    rows = [motion_metrics(to_uint8(vae_reconstruct(vae, to_model_range(c)).cpu()), c) for c in clips]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def format_summary(result: dict) -> str:
    """A small text table: metric, model mean ± std, baseline mean ± std."""
    lines = [f"{'metric':<17}{'model':>18}{'repeat-first-frame':>22}"]
    for k in METRIC_KEYS:
        m, b = result["model"][k], result["baseline"][k]
        lines.append(f"{k:<17}{m[0]:>10.3f} ± {m[1]:<5.3f}{b[0]:>14.3f} ± {b[1]:<5.3f}")
    lines.append(f"({result['clips']} clips × {len(result['seeds'])} seeds)")
    return "\n".join(lines)


# ------------------------------------------------------------------ loading what to compare

def load_model_spec(spec: str, device=None, dtype=None):
    """``PATH[+lora:DIR][+adapters:DIR]`` → a pipeline (``None`` for ``baseline``).

    ``PATH`` is a pipeline folder, a hub id or a run folder; ``device``/``dtype`` as in
    :func:`i2v_helpers.models.load_pipeline`. What ``i2v sample`` and ``i2v eval`` load.
    """
    from .models import load_pipeline
    from .training import resolve_model_path

    if spec == "baseline":
        return None
    path, *extras = spec.split("+")
    pipe = load_pipeline(resolve_model_path(path), device=device, dtype=dtype)
    for extra in extras:
        kind, _, d = extra.partition(":")
        if kind == "lora":
            from .lora import load_lora_into_pipeline

            load_lora_into_pipeline(pipe, d)
        elif kind == "adapters":
            from .adapters import load_adapters

            load_adapters(pipe.unet, d)
        else:
            raise ValueError(f"{spec}: '+{extra}' is neither +lora:DIR nor +adapters:DIR")
    return pipe


def model_spec(path: str, lora: str | None = None, adapters: str | None = None) -> str:
    """The spec string of a model path plus optional LoRA / adapter folders."""
    return path + (f"+lora:{lora}" if lora else "") + (f"+adapters:{adapters}" if adapters else "")


def compare_models(specs: dict[str, str], manifest, seeds=(0, 1), steps: int = 25, max_clips: int | None = None,
                   progress=None, log=print, keep_videos: int = 0) -> dict:
    """``{name: evaluate_generation result}`` for each ``name=spec`` on the same clips and seeds."""
    out = {}
    for name, spec in specs.items():
        log(f"[eval] {name}: {spec}")
        out[name] = evaluate_generation(load_model_spec(spec), manifest, seeds, steps, max_clips, progress=progress,
                                        keep_videos=keep_videos)
    return out


def format_comparison(results: dict) -> str:
    """One table: a row per model, mean ± std per metric (arrows say which way is better)."""
    arrow = {True: "↑", False: "↓", None: "≈1"}
    w = max(12, *(len(n) + 1 for n in results))
    head = f"{'model':<{w}}" + "".join(f"{k + ' ' + arrow[HIGHER_IS_BETTER[k]]:>19}" for k in METRIC_KEYS)
    lines = [head]
    for name, r in results.items():
        lines.append(f"{name:<{w}}" + "".join(f"{r['model'][k][0]:>11.3f} ± {r['model'][k][1]:<5.3f}"
                                             for k in METRIC_KEYS))
    any_r = next(iter(results.values()))
    lines.append(f"({any_r['clips']} clips × seeds {any_r['seeds']}; mean ± std over clip-seed pairs)")
    return "\n".join(lines)


def paired_difference(a: dict, b: dict, metric: str) -> tuple[float, float, int]:
    """Mean and standard error of ``b - a`` over the clip-seed pairs both scored
    (same clips, same seeds: a paired comparison, far less noisy than two separate means)."""
    d = np.array([rb[metric] - ra[metric] for ra, rb in zip(a["rows"], b["rows"])])
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0, len(d)


def format_paired(results: dict, a: str, b: str, metrics=MOTION_KEYS) -> str:
    """Lines ``b - a: metric mean ± paired SE`` for two models of one :func:`compare_models` result;
    a difference beyond two standard errors is marked significant."""
    lines = []
    for k in metrics:
        d, se, n = paired_difference(results[a], results[b], k)
        verdict = "significant" if n > 1 and abs(d) > 2 * se else "within noise"
        lines.append(f"  {b} - {a}: {k:<17}{d:+.3f} ± {se:.3f} (paired SE, {n} clip-seed pairs: {verdict})")
    return "\n".join(lines)


def write_report(result: dict, out_dir, fps: int = 7) -> dict:
    """``metrics.csv`` (a row per clip and seed), ``summary.json`` and ``grid.mp4``
    (rows of input image | ground truth | generated) in ``out_dir``."""
    from .video_io import write_video
    from .viz import side_by_side

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(result["rows"][0]))
        w.writeheader()
        w.writerows(result["rows"])
    summary = {k: result[k] for k in ("model", "baseline", "clips", "seeds")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    paths = {"csv": str(out / "metrics.csv"), "json": str(out / "summary.json")}
    if result.get("videos"):
        rows = [side_by_side(img, gt, gen) for img, gt, gen in result["videos"]]
        grid = np.concatenate(rows, axis=1)  # stack clips vertically: (F, H*n, W', 3)
        paths["grid"] = str(write_video(out / "grid.mp4", grid, fps=fps))
    return paths
