"""Generate from held-out first frames and score against the real clips, with the
"repeat the first frame" baseline on the same clips; compare several models.

``i2v eval --model PATH [--lora DIR | --adapters DIR] --manifest VAL --out DIR`` and
``i2v eval --compare NAME=SPEC ... --manifest VAL``. A SPEC is a pipeline folder or run
folder, optionally followed by ``+lora:DIR`` or ``+adapters:DIR``; ``baseline`` is the
repeated first frame (:func:`parse_compare`; in Python, :func:`compare_models` takes
:func:`i2v_helpers.models.load_model`'s arguments). Every model sees the same clips and the same seeds.

Clips whose manifest entry carries ``objects`` (the synthetic sets' ground truth) are also
scored with ``object_err_px`` and ``object_kept`` (:func:`i2v_helpers.metrics.object_metrics`);
the rest have NaN there, and every mean, spread and paired difference skips NaN.

Introduced in notebook 08 (evaluation).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .conditioning import DEFAULT_FPS
from .data import InvalidManifest, check_entry, parse_manifest, prepare_clip
from .frames import to_model_range, to_uint8
from .generation import generate
from .metrics import (
    HIGHER_IS_BETTER,
    METRIC_KEYS,
    MOTION_KEYS,
    OBJECT_KEYS,
    beyond_two_se,
    motion_metrics,
    object_metrics,
)
from .models import load_model, model_geometry, vae_reconstruct
from .video_io import write_video
from .viz import side_by_side

BASELINE_FRAMES = 16  # frames scored when no model says how many (the baseline alone)


def _entries(manifest, max_clips, num_frames: int, sampling: str, stride: int):
    """The first ``max_clips`` entries, each checked (headers only) for ``num_frames`` frames."""
    entries, _ = parse_manifest(manifest)
    entries = entries[:max_clips] if max_clips else entries
    problems = [p for e in entries for p in check_entry(e, num_frames, sampling, stride, decode=False)]
    if any(p.fatal for p in problems):
        raise InvalidManifest(manifest, problems)
    return entries


def _clip_metrics(gen: np.ndarray, gt: np.ndarray, image: np.ndarray, objects) -> dict:
    """Every METRIC_KEYS metric of ``gen`` against ``gt`` (both ``(F, H, W, 3)`` ``uint8``)
    generated from ``image`` ``(H, W, 3)``."""
    return {**motion_metrics(gen, gt, image), **object_metrics(gen, objects)}


def _mean_std(values) -> tuple[float, float]:
    """Mean and std over the finite values; ``(nan, nan)`` when there are none."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return (float(v.mean()), float(v.std())) if len(v) else (float("nan"), float("nan"))


def _model_name(pipe) -> str:
    """A short name for progress lines: ``baseline``, the folder the pipeline was loaded from
    (``run/pipeline`` for a run's pipeline or merged folder) or its class name."""
    if pipe is None:
        return "baseline"
    path = Path(str(getattr(pipe, "name_or_path", None) or ""))
    if not path.name:
        return type(pipe).__name__
    return f"{path.parent.name}/{path.name}" if path.name in ("pipeline", "merged") else path.name


def evaluate_generation(pipe, manifest, seeds=(0, 1), steps: int = 25, max_clips: int | None = None,
                        num_frames: int | None = None, noise_aug_strength: float = 0.02, progress: bool = True,
                        keep_videos: int = 0, size: tuple[int, int] | None = None, sampling: str = "consecutive",
                        stride: int = 1, name: str | None = None, log=None, reconstruct: bool = False) -> dict:
    """Score ``pipe`` on the clips of ``manifest`` (first frame → ``num_frames`` frames).

    ``num_frames`` and ``size`` (H, W) default to the model's own
    (:func:`i2v_helpers.models.model_geometry`); ``pipe=None`` scores only the repeat-first-frame
    baseline, at ``size`` (default: each clip's own) and ``num_frames`` (default ``BASELINE_FRAMES``).
    Each clip is prepared exactly as training prepares it (:func:`i2v_helpers.data.prepare_clip`
    with ``sampling`` and ``stride``: frames sampled, resized and centre-cropped to ``size``, the
    manifest's image and the objects ground truth through the same box) and generated once per
    seed from that image with the clip's ``fps`` and ``motion_bucket_id``
    (:mod:`i2v_helpers.conditioning`). The baseline repeats the same image.

    Returns ``{"rows", "model": {metric: (mean, std)}, "baseline": {...}, "clips", "seeds",
    "num_frames", "size", "videos"}``: a row per clip and seed; the spread is the std over
    clip-seed pairs (for the object metrics, the pairs whose clip has objects); ``videos`` holds
    ``(image (H, W, 3), truth (F, H, W, 3), generated (F, H, W, 3))`` of the first ``keep_videos``
    clips (first seed).

    ``progress``: a bar over clips × seeds on stderr, described with ``name`` (default: the
    pipeline's folder, ``baseline`` for ``pipe=None``), then one line ``[eval] NAME: N videos in
    S s`` through ``log`` (default: stderr; ``log`` given, the line is written even without the bar).

    ``reconstruct``: instead of generating, score the true clip encoded and decoded by ``pipe.vae``
    (deterministic: every seed gives the same clip), the ceiling any model decoded by that VAE meets;
    paired with the baseline like a model (:func:`paired_difference`).
    """
    model_frames, h, w = model_geometry(pipe) if pipe is not None else (BASELINE_FRAMES, None, None)
    num_frames = num_frames or model_frames
    size = tuple(size) if size else ((h, w) if pipe is not None else None)
    entries = _entries(manifest, max_clips, num_frames, sampling, stride)
    rows, videos = [], []
    name = name or _model_name(pipe)
    start = time.perf_counter()
    bar = tqdm(total=len(entries) * len(seeds), desc=name, unit="video", file=sys.stderr, disable=not progress)
    for i, e in enumerate(entries):
        item = prepare_clip(e, num_frames, size, sampling, stride)
        image, gt = item["image"], item["video"]
        still = np.repeat(image[None], len(gt), axis=0)  # the baseline: the conditioning image, repeated
        base = _clip_metrics(still, gt, image, item["objects"])
        for seed in seeds:
            if pipe is None:
                gen, m = still, base
            elif reconstruct:
                gen = reconstructed(pipe.vae, gt)
                m = _clip_metrics(gen, gt, image, item["objects"])
            else:
                gen = generate(pipe, image, num_frames=num_frames, steps=steps, fps=item["fps"],
                               motion_bucket_id=item["motion_bucket_id"], noise_aug_strength=noise_aug_strength,
                               seed=seed, height=gt.shape[1], width=gt.shape[2])
                m = _clip_metrics(gen, gt, image, item["objects"])
            if i < keep_videos and seed == seeds[0]:
                videos.append((image, gt, gen))
            rows.append({"clip": e.where, "family": e.extra.get("family", ""), "seed": seed,
                         **{k: m[k] for k in METRIC_KEYS}, **{f"baseline_{k}": base[k] for k in METRIC_KEYS}})
            bar.update()
    bar.close()
    if progress or log is not None:
        n = len(rows)
        line = f"[eval] {name}: {n} video{'s' * (n != 1)} in {time.perf_counter() - start:.0f} s"
        (log or (lambda msg: print(msg, file=sys.stderr)))(line)

    def summary(prefix=""):
        return {k: _mean_std([r[prefix + k] for r in rows]) for k in METRIC_KEYS}

    return {"rows": rows, "model": summary(), "baseline": summary("baseline_"), "clips": len(entries),
            "seeds": list(seeds), "num_frames": num_frames, "size": list(size) if size else None, "videos": videos}


def reconstructed(vae, clip: np.ndarray) -> np.ndarray:
    """A ``uint8`` clip ``(F, H, W, 3)`` encoded and decoded by ``vae`` (one decode chunk), as ``uint8``:
    what the ceiling scores, in place of a generated clip."""
    return to_uint8(vae_reconstruct(vae, to_model_range(clip)).cpu())


def vae_reconstruction_metrics(vae, clips: np.ndarray) -> dict:
    """The autoencoder's ceiling: :func:`i2v_helpers.metrics.motion_metrics` of the VAE's
    reconstructions of real clips ``uint8`` ``(N, F, H, W, 3)`` (one decode chunk per clip),
    mean over clips. A generated clip is decoded by the same VAE, so a model whose latents are
    as faithful as the encoder's scores about this: a decoder that shimmers gives flow where
    the real clip is still, whatever the UNet does."""
    rows = [motion_metrics(reconstructed(vae, c), c) for c in clips]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def format_summary(result: dict) -> str:
    """A small text table: metric, model mean ± std, baseline mean ± std."""
    lines = [f"{'metric':<17}{'model':>18}{'repeat-first-frame':>22}"]
    for k in METRIC_KEYS:
        m, b = result["model"][k], result["baseline"][k]
        lines.append(f"{k:<17}{m[0]:>10.3f} ± {m[1]:<5.3f}{b[0]:>14.3f} ± {b[1]:<5.3f}")
    size = "x".join(map(str, result["size"])) if result.get("size") else "each clip's own size"
    lines.append(f"({result['clips']} clips × {len(result['seeds'])} seeds, {result['num_frames']} frames at {size})")
    return "\n".join(lines)


# ------------------------------------------------------------------ what to compare

def parse_compare(items: list[str]) -> dict[str, dict | None]:
    """``i2v eval --compare NAME=SPEC ...`` → ``{name: load_model arguments}`` for :func:`compare_models`.

    A SPEC is ``PATH[+lora:DIR][+adapters:DIR]`` (``PATH`` as :func:`i2v_helpers.models.load_model`
    takes it) or ``baseline`` (→ ``None``: the repeated first frame); an item without ``NAME=`` is
    named by its SPEC. The one place the SPEC grammar is read: in Python, give ``load_model``'s
    arguments directly."""
    named = (item.split("=", 1) if "=" in item else (item, item) for item in items)
    return {name: _parse_spec(spec) for name, spec in named}


def _parse_spec(spec: str) -> dict | None:
    """One SPEC → ``{"path", "lora", "adapters"}`` (the last two ``None`` when absent); ``None`` for ``baseline``."""
    if spec == "baseline":
        return None
    path, *extras = spec.split("+")
    model = {"path": path, "lora": None, "adapters": None}
    for extra in extras:
        kind, _, folder = extra.partition(":")
        if kind not in ("lora", "adapters") or not folder or model[kind] is not None:
            raise ValueError(f"{spec}: '+{extra}' is not one +lora:DIR or +adapters:DIR")
        model[kind] = folder
    return model


def compare_models(models: dict[str, dict | None], manifest, seeds=(0, 1), steps: int = 25,
                   max_clips: int | None = None, progress: bool = True, log=print, keep_videos: int = 0,
                   num_frames: int | None = None, size: tuple[int, int] | None = None, sampling: str = "consecutive",
                   stride: int = 1) -> dict:
    """``{name: evaluate_generation result}`` for each model on the same clips and seeds, at one
    size and frame count: ``size`` / ``num_frames`` when given, else the models' own (they must
    agree: paired differences of clips of different sizes mean nothing).

    ``models`` maps a name to :func:`i2v_helpers.models.load_model`'s keyword arguments, e.g.
    ``{"stage 2": {"path": "runs/tiny-stage1", "lora": "runs/tiny-stage2-sports/adapter"}}``, or to
    ``None`` for the repeat-first-frame baseline; each is loaded when its turn comes (one in memory at
    a time). The baseline is scored at the models' geometry, after them. ``progress``: a bar per model
    on stderr (:func:`evaluate_generation`); each model's ``[eval] NAME: N videos in S s`` goes to ``log``."""
    out, geometry = {}, None
    for name, model in models.items():
        if model is None:
            continue
        log(f"[eval] {name}: " + ", ".join(f"{k} {v}" for k, v in model.items() if v))  # path P, lora D
        pipe = load_model(**model)
        frames, h, w = model_geometry(pipe)
        g = (num_frames or frames, tuple(size) if size else (h, w))
        if geometry is not None and g != geometry:
            raise ValueError(f"{name} makes {g[0]} frames at {g[1]}, the models before it {geometry[0]} at "
                             f"{geometry[1]}; pass num_frames and size (--frames, --size) to compare them")
        geometry = g
        out[name] = evaluate_generation(pipe, manifest, seeds, steps, max_clips, g[0], progress=progress,
                                        keep_videos=keep_videos, size=g[1], sampling=sampling, stride=stride,
                                        name=name, log=log)
        del pipe
    frames, size = geometry or (num_frames, size)
    for name, model in models.items():
        if model is None:
            log(f"[eval] {name}: the repeated first frame")
            out[name] = evaluate_generation(None, manifest, seeds, steps, max_clips, frames, progress=progress,
                                            keep_videos=keep_videos, size=size, sampling=sampling, stride=stride,
                                            name=name, log=log)
    return {name: out[name] for name in models}


def write_comparison(results: dict, out_dir) -> Path:
    """``compare.json`` in ``out_dir``: each model's rows (a row per clip and seed) and what they were
    scored on (``model`` summary, ``clips``, ``seeds``, ``num_frames``, ``size``), without the videos.
    What ``i2v eval --compare --out DIR`` keeps. Returns the file's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep = ("model", "clips", "seeds", "num_frames", "size", "rows")
    path = out / "compare.json"
    path.write_text(json.dumps({name: {k: r[k] for k in keep} for name, r in results.items()}, indent=2))
    return path


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


def _by_clip_seed(result: dict, metric: str) -> dict:
    """``{(clip, seed): value}`` of one metric over ``result["rows"]``."""
    values = {}
    for r in result["rows"]:
        key = (r["clip"], r["seed"])
        if key in values:
            raise ValueError(f"two rows for {key[0]}, seed {key[1]}")
        values[key] = float(r[metric])
    return values


def paired_difference(a: dict, b: dict, metric: str) -> tuple[float, float, int]:
    """``(mean, standard error, clips)`` of ``b - a``, with the clip as the unit.

    Rows pair by ``(clip, seed)``, not by position: both results must score the same clips
    with the same seeds (a paired comparison, far less noisy than two separate means). The
    seeds of one clip share that clip's effect, so they are not independent samples: each
    clip's differences are averaged over its seeds first, and the mean and SE are those of
    the per-clip means (SE = their std, ddof 1, over sqrt(clips)). Pairs where the metric is
    NaN (object metrics of clips without objects) are left out, and clips left with none.
    ``(nan, nan, 0)`` when no clip is left; the SE is NaN with one clip."""
    va, vb = _by_clip_seed(a, metric), _by_clip_seed(b, metric)
    if va.keys() != vb.keys():
        only = sorted(va.keys() ^ vb.keys())
        raise ValueError(f"not a paired comparison: {len(only)} clip-seed pairs are scored by one result only "
                         f"(e.g. {only[0]}); compare results of the same manifest, clips and seeds")
    per_clip = defaultdict(list)
    for key, x in va.items():
        d = vb[key] - x
        if np.isfinite(d):
            per_clip[key[0]].append(d)
    means = np.array([np.mean(v) for v in per_clip.values()])
    if not len(means):
        return float("nan"), float("nan"), 0
    se = float(means.std(ddof=1) / np.sqrt(len(means))) if len(means) > 1 else float("nan")
    return float(means.mean()), se, len(means)


def versus_baseline(result: dict, max_clips: int | None = None) -> dict:
    """One :func:`evaluate_generation` result split into ``{"repeat first frame": ..., "model": ...}``,
    the two scored on the same clip-seed pairs (its rows carry both), so that
    :func:`paired_differences` / :func:`format_paired` pair the model with its own baseline without a
    second run. ``max_clips``: only the rows of the first that many clips (the clips a run with
    ``max_clips`` scores: the manifest's first)."""
    clips = set(list(dict.fromkeys(r["clip"] for r in result["rows"]))[:max_clips])
    rows = [r for r in result["rows"] if r["clip"] in clips]
    keys = [k for k in METRIC_KEYS if k in rows[0]]

    def side(prefix):
        return {"rows": [{"clip": r["clip"], "seed": r["seed"], **{k: r[prefix + k] for k in keys}} for r in rows]}

    return {"repeat first frame": side("baseline_"), "model": side("")}


def paired_differences(results: dict, pairs, metrics=MOTION_KEYS + OBJECT_KEYS) -> dict:
    """``{"b - a": {metric: (mean, SE, clips)}}`` for each ``(a, b)`` in ``pairs`` (names of one
    :func:`compare_models` result), by :func:`paired_difference`; a metric no clip has is left out.
    What :func:`format_paired` prints and :func:`i2v_helpers.viz.paired_plot` draws."""
    out = {}
    for a, b in pairs:
        diffs = {k: paired_difference(results[a], results[b], k) for k in metrics}
        out[f"{b} - {a}"] = {k: v for k, v in diffs.items() if v[2] > 0}
    return out


def format_paired(results: dict, a: str, b: str, metrics=MOTION_KEYS + OBJECT_KEYS) -> str:
    """Lines ``b - a: metric mean ± paired SE`` for two models of one :func:`compare_models` result
    (:func:`paired_difference`: the clip is the unit); a difference beyond two standard errors is
    marked significant. A metric no clip has (object metrics on clips without objects) gets no line."""
    lines = []
    for k, (d, se, n) in paired_differences(results, [(a, b)], metrics)[f"{b} - {a}"].items():
        verdict = "significant" if beyond_two_se(d, se, n) else "within noise"
        lines.append(f"  {b} - {a}: {k:<17}{d:+.3f} ± {se:.3f} (paired SE over {n} clips, seeds averaged: {verdict})")
    return "\n".join(lines)


def write_report(result: dict, out_dir, fps: float = DEFAULT_FPS) -> dict:
    """``metrics.csv`` (a row per clip and seed), ``summary.json`` and ``grid.mp4``
    (rows of input image | ground truth | generated) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(result["rows"][0]))
        w.writeheader()
        w.writerows(result["rows"])
    summary = {k: result[k] for k in ("model", "baseline", "clips", "seeds", "num_frames", "size")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    paths = {"csv": str(out / "metrics.csv"), "json": str(out / "summary.json")}
    if result.get("videos"):
        rows = [side_by_side(img, gt, gen) for img, gt, gen in result["videos"]]
        grid = np.concatenate(rows, axis=1)  # stack clips vertically: (F, H*n, W', 3)
        paths["grid"] = str(write_video(out / "grid.mp4", grid, fps=fps))
    return paths
