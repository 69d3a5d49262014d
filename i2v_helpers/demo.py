"""The course's main job, end to end on the shipped data and tiny SVD: ``i2v demo`` (``bash run.sh demo``).

    result = run_demo("data_samples", "outputs/demo", quick=True)   # or: i2v demo --quick
    result["summary"]                 # {"sports: stage 2 - stage 1: flow_epe": [diff, se, n], ...}

What it does, top to bottom (:func:`run_demo`):

1. checks the ``train`` and ``val`` manifests of ``general``, ``sports`` and ``animated``
   (as ``i2v data check`` does) and writes ``preview_{set}.png``, a grid of a few ``val``
   clips (:func:`check_data`);
2. stage 1: full fine-tune of the tiny SVD on ``general`` (config ``tiny-stage1``, into
   ``stage1/``; :func:`train_stages`);
3. stage 2: a LoRA on top of stage 1 for ``sports`` (config ``tiny-stage2-sports``, into
   ``stage2-sports/``);
4. evaluates on held-out clips, the same clips and seeds for every model (repeat-the-first-frame
   baseline, base, stage 1, stage 2; :func:`evaluate_stages`), prints the tables with paired
   differences, writes them to ``summary.json`` and stage 2's report to ``eval-sports-stage2/``;
5. writes a generated video, ``generated.mp4``, and ``compare_real_stage1_stage2.mp4``
   (real | stage 1 | stage 2 side by side), with its frames 0, 3, ..., 15 as labelled strips in
   ``compare_real_stage1_stage2.png`` (:func:`write_videos`).

``quick`` runs every stage shortly (40 + 20 training steps: a tour, not a result). A manifest
with a fatal problem, or a missing shipped model, stops it with :class:`DemoError` before any
training; a diverged run raises :class:`~i2v_helpers.training.TrainingDiverged`.

Introduced in the README's "Quick start" (``bash run.sh demo``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from PIL import Image

from .conditioning import DEFAULT_FPS
from .config import load_config
from .data import check_manifest, summarize
from .evaluation import compare_models, format_comparison, format_paired, paired_difference, write_report
from .metrics import MOTION_KEYS, OBJECT_KEYS
from .models import TINY_SVD_DIR
from .training import train
from .video_io import read_video, write_video
from .viz import clip_grid, frame_strips, side_by_side

SETS = ("general", "sports", "animated")
QUICK_STEPS = (40, 20)  # stage 1, stage 2 training steps with ``quick``


class DemoError(RuntimeError):
    """The demo cannot start: a manifest has a fatal problem or the shipped model is missing."""


def check_data(root: Path, out: Path, log=print) -> None:
    """Step 1: check every set's ``train`` and ``val`` manifest and write ``preview_{set}.png``
    (a grid of the first 6 good ``val`` clips); :class:`DemoError` on a fatal problem."""
    for name in SETS:
        for split in ("train", "val"):
            manifest = root / name / f"{split}.jsonl"
            good, problems = check_manifest(manifest)
            s = summarize(good, problems)
            log(f"[data] {manifest}: {s['good entries']} good, {s['bad entries']} bad, {s['sizes']}, fps {s['fps']}")
            for p in problems:
                log(f"  {p}")
            if any(p.fatal for p in problems):
                raise DemoError(f"fix {manifest} first (i2v data check {manifest})")
        clips = [read_video(e.video)[0] for e in good[:6]]
        Image.fromarray(clip_grid(clips, every=2)).save(out / f"preview_{name}.png")
    if not (TINY_SVD_DIR / "model_index.json").is_file():
        raise DemoError(f"the shipped model {TINY_SVD_DIR} is missing")


def train_stages(root: Path, stage1: Path, stage2: Path, quick: bool = False, stage1_steps: int | None = None,
                 stage2_steps: int | None = None, max_train_clips: int | None = None, log=print) -> tuple[dict, dict]:
    """Steps 2 and 3: stage 1 (``tiny-stage1`` on ``general`` into ``stage1``), then stage 2
    (``tiny-stage2-sports``, a LoRA on stage 1, into ``stage2``); returns both :func:`train` results.
    Steps: ``stageN_steps``, else :data:`QUICK_STEPS` with ``quick``, else the config's."""
    common = ["checkpoint_every=0", "report_to=none"]
    if max_train_clips:
        common += [f"max_train_samples={max_train_clips}", f"max_val_samples={max_train_clips}"]
    s1_steps = stage1_steps or (QUICK_STEPS[0] if quick else None)
    s2_steps = stage2_steps or (QUICK_STEPS[1] if quick else None)
    log(f"== 2/5 stage 1: i2v train tiny-stage1 (full fine-tune on general){' --quick' if quick else ''}")
    cfg1 = load_config("tiny-stage1", common + [f"output_dir={stage1}", f"train_manifest={root}/general/train.jsonl",
                                              f"val_manifest={root}/general/val.jsonl", "val_images=[]"]
                       + ([f"max_steps={s1_steps}"] if s1_steps else []))
    r1 = train(cfg1, log=log)
    log(f"[stage 1] {r1['steps']} steps in {r1['seconds']:.0f} s, val loss {r1['val_loss']}")
    log("== 3/5 stage 2: i2v train tiny-stage2-sports (LoRA on stage 1)")
    cfg2 = load_config("tiny-stage2-sports", common + [f"init_from={stage1}", f"output_dir={stage2}",
                                                     f"train_manifest={root}/sports/train.jsonl",
                                                     f"val_manifest={root}/sports/val.jsonl", "val_images=[]"]
                       + ([f"max_steps={s2_steps}"] if s2_steps else []))
    r2 = train(cfg2, log=log)
    log(f"[stage 2] {r2['steps']} steps in {r2['seconds']:.0f} s, {r2['share_percent']:.2f} % of the UNet trained")
    return r1, r2


def evaluate_stages(root: Path, stage1: Path, stage2: Path, seeds=(0, 1), steps: int = 25, max_clips: int = 16,
                    log=print) -> tuple[dict, dict]:
    """Step 4: ``general`` (baseline, base, stage 1) and ``sports`` (baseline, stage 1, stage 2)
    on their held-out clips, the same clips and seeds for every model; logs the tables with the
    paired differences. Returns ``(tables, summary)``: ``{set: compare_models result}`` and
    ``{"SET: NEW - OLD: METRIC": [diff, se, n]}`` (metrics with no clip to score left out)."""
    kw = dict(seeds=tuple(seeds), steps=steps, max_clips=max_clips, log=log)
    tables = {
        "general": compare_models({"baseline": None, "base": {"path": TINY_SVD_DIR}, "stage 1": {"path": stage1}},
                                  root / "general" / "val.jsonl", **kw),
        "sports": compare_models({"baseline": None, "stage 1": {"path": stage1},
                                  "stage 2": {"path": stage1, "lora": stage2 / "adapter"}},
                                 root / "sports" / "val.jsonl", keep_videos=4, **kw),
    }
    summary = {}
    for name, (a, b) in (("general", ("base", "stage 1")), ("sports", ("stage 1", "stage 2"))):
        log(f"\n[{name}, held out]\n{format_comparison(tables[name])}\n{format_paired(tables[name], a, b)}")
        for k in MOTION_KEYS + OBJECT_KEYS:
            d, se, n = paired_difference(tables[name][a], tables[name][b], k)
            if n:  # object metrics need clips with objects
                summary[f"{name}: {b} - {a}: {k}"] = [d, se, n]
    return tables, summary


def write_videos(sports: dict, out: Path) -> tuple[Path, Path]:
    """Step 5: stage 2's first held-out sports video as ``generated.mp4`` and real | stage 1 |
    stage 2 side by side as ``compare_real_stage1_stage2.mp4``, its frames also drawn as labelled
    strips (:func:`~i2v_helpers.viz.frame_strips`) in ``compare_real_stage1_stage2.png``; returns the
    two video paths."""
    import matplotlib.pyplot as plt  # matplotlib picks a non-interactive backend when there is no display

    _, truth, gen = sports["stage 2"]["videos"][0]
    stage1_gen = sports["stage 1"]["videos"][0][2]
    path = write_video(out / "generated.mp4", gen, fps=DEFAULT_FPS)
    compare = out / "compare_real_stage1_stage2.mp4"
    write_video(compare, side_by_side(truth, stage1_gen, gen), fps=DEFAULT_FPS)
    fig = frame_strips({"real": truth, "stage 1": stage1_gen, "stage 2": gen},
                       title="held-out sports clip 0, seed 0: real | stage 1 | stage 2")
    fig.savefig(compare.with_suffix(".png"), dpi=100)
    plt.close(fig)
    return path, compare


def run_demo(data_dir="data_samples", out_dir="outputs/demo", quick: bool = False, stage1_steps: int | None = None,
             stage2_steps: int | None = None, max_train_clips: int | None = None, eval_clips: int = 16,
             eval_seeds: int = 2, eval_steps: int = 25, log=print) -> dict:
    """Run the five steps (see the module docstring) with everything written under ``out_dir``.

    Returns ``{"stage1", "stage2"}`` (the :func:`~i2v_helpers.training.train` results),
    ``"tables"`` and ``"summary"`` (:func:`evaluate_stages`; ``summary`` is also ``summary.json``),
    ``"video"`` and ``"comparison_video"`` (paths) and ``"seconds"``. ``eval_seeds`` seeds
    ``0 .. eval_seeds - 1`` per clip, ``eval_clips`` held-out clips per set, ``eval_steps``
    sampling steps. Raises :class:`DemoError` (bad data, missing model) or
    :class:`~i2v_helpers.training.TrainingDiverged`."""
    root, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log("== 1/5 data check")
    check_data(root, out, log)
    stage1, stage2 = out / "stage1", out / "stage2-sports"
    r1, r2 = train_stages(root, stage1, stage2, quick, stage1_steps, stage2_steps, max_train_clips, log)

    log("== 4/5 evaluation on held-out clips (same clips and seeds for every model)")
    tables, summary = evaluate_stages(root, stage1, stage2, range(eval_seeds), eval_steps, eval_clips, log)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_report(tables["sports"]["stage 2"], out / "eval-sports-stage2")

    log("== 5/5 a generated video")
    path, compare = write_videos(tables["sports"], out)
    log(f"[video] {path} (stage 2 from a held-out sports frame); {compare} (real | stage 1 | stage 2)")
    seconds = time.time() - t0
    log(f"done in {seconds:.0f} s; everything is in {out}/")
    return {"stage1": r1, "stage2": r2, "tables": tables, "summary": summary, "video": path,
            "comparison_video": compare, "seconds": seconds}
