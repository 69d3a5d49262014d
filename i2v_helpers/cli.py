"""The ``i2v`` command line: ``env``, ``data``, ``sample``, ``train``, ``eval``, ``bench``, ``estimate``,
``demo``, ``pretrain``.

Every subcommand is a thin wrapper over a package function the notebooks call too.
Run ``i2v -h`` or ``i2v SUBCOMMAND -h``. Errors a user can fix (:data:`EXIT_CODES`) end in one
``error: ...`` line and an exit code, not a traceback.
"""

# Each cmd_* handler imports what it needs when it runs: torch and diffusers take ~2 s, -h and typos must not wait.
from __future__ import annotations

import argparse
import json
import sys

from .conditioning import DEFAULT_FPS, DEFAULT_MOTION_BUCKET
from .errors import ConfigError, TrainingDiverged

# error → exit code of ``i2v``, printed as one ``error: ...`` line. 2 as argparse's own for a bad argument
# (a config error is a usage error too); 1 stays a handler's "failed" (data check, data prepare, demo)
EXIT_CODES = {ConfigError: 2, TrainingDiverged: 3}


def _table(rows: list[tuple[str, object]]) -> str:
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def cmd_env(args) -> int:
    from .device import environment_report, sdpa_backends, tuning_report

    rep = environment_report()
    if args.tuning:
        rep["tuning"] = tuning_report()
        rep["attention"] = sdpa_backends()
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        flat = [(k, v) for k, v in rep.items() if k not in ("tuning", "attention")]
        flat += [(k, v) for k, v in rep.get("tuning", {}).items()]
        flat += [(f"sdpa {name}", f"{r['ms']} ms" if r["ok"] else f"unavailable: {r['why']}")
                 for name, r in rep.get("attention", {}).items()]
        print(_table(flat))
    return 0


def cmd_data_check(args) -> int:
    from .data import ManifestError, check_manifest, motion_stats, summarize

    try:
        good, problems = check_manifest(args.manifest, args.frames, args.sampling, args.stride,
                                        args.allow_outside, decode=not args.no_decode)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.manifest}: checked for {args.frames} frames, {args.sampling} sampling, stride {args.stride}")
    print(_table(list(summarize(good, problems).items())))
    if args.motion and good:
        print("  motion px/frame  " + "  ".join(f"{k} {v:.2f}" for k, v in motion_stats(good, args.frames).items()))
    for p in problems:
        print(p, file=sys.stderr if p.fatal else sys.stdout)
    return 1 if any(p.fatal for p in problems) else 0


def cmd_make_samples(args) -> int:
    from .course_data import add_objects, make_samples

    make = add_objects if args.objects_only else make_samples
    make(args.out, seed=args.seed, size=args.size, frames=args.frames, sets=args.sets)
    return 0


def cmd_data_prepare(args) -> int:
    from .prepare import prepare_videos

    size = tuple(int(x) for x in args.size.lower().split("x")) if "x" in args.size.lower() else int(args.size)
    try:
        summary = prepare_videos(args.raw, args.out, num_frames=args.frames, fps=args.fps, size=size,
                                 val_fraction=args.val_fraction, max_clips_per_scene=args.max_clips_per_scene,
                                 scene_threshold=args.scene_threshold)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{summary['clips']['train']} train and {summary['clips'].get('val', 0)} val clips from "
          f"{summary['sources']['ok']} videos in {args.out} (train.jsonl, val.jsonl, summary.json, preview.png); "
          f"{summary['sources']['skipped']} skipped")
    for s in summary["skipped"]:
        print(f"  skipped {s['path']}: {s['reason']}")
    if "note" in summary:
        print(f"  note: {summary['note']}")
    return 0


def cmd_sample(args) -> int:
    from .generation import generate
    from .models import TINY_SVD_DIR, load_model
    from .video_io import read_image, write_video

    pipe = load_model(args.model or TINY_SVD_DIR, lora=args.lora, adapters=args.adapters)
    frames = generate(pipe, read_image(args.image), num_frames=args.frames, steps=args.steps, fps=args.fps,
                      motion_bucket_id=args.motion_bucket_id, noise_aug_strength=args.noise_aug_strength,
                      min_guidance=args.min_guidance, max_guidance=args.max_guidance, seed=args.seed,
                      height=args.height, width=args.width)
    out = write_video(args.out, frames, fps=args.fps)
    print(f"wrote {out} ({len(frames)} frames, {frames.shape[2]}x{frames.shape[1]})")
    return 0


def cmd_pretrain(args) -> int:
    from .evaluation import format_paired, format_summary, versus_baseline
    from .model_card import SHIP_CLIPS, evaluate_base, write_model_card
    from .models import TINY_MODEL_DIR
    from .pretrain import pretrain_config, run_pretrain

    cfg = pretrain_config(args.set, out_dir=args.out or TINY_MODEL_DIR, work_dir=args.work_dir, seed=args.seed,
                          vae_minutes=args.vae_minutes, unet_minutes=args.unet_minutes,
                          decoder_minutes=args.decoder_minutes)  # ConfigError: exit 2
    done = run_pretrain(cfg, args.phase, args.seconds)
    if "throughput" in done:
        print(json.dumps(done["throughput"]))
    if "model_dir" in done:
        print(f"model card: {write_model_card(cfg, rebuild=args.rebuild)}")
    if args.phase == "evaluate" or (args.phase == "all" and not args.no_eval):
        res = evaluate_base(cfg.out_dir, args.manifest, max_clips=args.max_clips)
        print(f"VAE PSNR {res['vae_psnr_db']:.2f} dB")
        print("VAE reconstructions of the real clips (what faithful latents would score): "
              + ", ".join(f"{k} {v:.3f}" for k, v in res["vae_reconstruction"].items()))
        print(format_summary(res))
        for n in (None, SHIP_CLIPS) if res["clips"] > SHIP_CLIPS else (None,):
            which = f"the first {n}" if n else f"all {res['clips']}"
            print(f"paired with repeat-the-first-frame, {which} clips:")
            print(format_paired(versus_baseline(res, n), "repeat first frame", "model"))
        if args.card:
            print(f"model card: {write_model_card(cfg, res, rebuild=args.rebuild)}")
    return 0


def cmd_train(args) -> int:
    from .config import load_config
    from .training import train

    cfg = load_config(args.config, args.set)  # a bad key or value: ConfigError (exit 2) before the model loads
    result = train(cfg, resume=args.resume)  # TrainingDiverged: exit 3
    print(json.dumps(result, indent=2))
    return 0


def cmd_eval(args) -> int:
    from .evaluation import (
        compare_models,
        evaluate_generation,
        format_comparison,
        format_paired,
        format_summary,
        parse_compare,
        write_comparison,
        write_report,
    )
    from .models import TINY_MODEL_DIR, load_model

    if args.compare:
        res = compare_models(parse_compare(args.compare), args.manifest, tuple(args.seeds), args.steps,
                             args.max_clips, num_frames=args.frames, size=args.size, sampling=args.sampling,
                             stride=args.stride)
        print(format_comparison(res))
        names = list(res)
        for a, b in zip(names, names[1:]):
            print(format_paired(res, a, b))
        print(f"wrote {write_comparison(res, args.out)}")
        return 0
    model = args.model or TINY_MODEL_DIR
    pipe = None if model == "baseline" else load_model(model, lora=args.lora, adapters=args.adapters)
    res = evaluate_generation(pipe, args.manifest, tuple(args.seeds), args.steps, args.max_clips, args.frames,
                              keep_videos=args.grid_clips, size=args.size, sampling=args.sampling, stride=args.stride)
    print(format_summary(res))
    for v in write_report(res, args.out).values():
        print(f"wrote {v}")
    return 0


def _ckpt_arg(v: str):
    return {"false": False, "off": False, "true": True, "on": True, "diffusers": True, "full": "full"}[v.lower()]


def cmd_bench_train(args) -> int:
    from .bench import BenchSetup, bench_train, format_bench

    setup = BenchSetup(preset=args.preset, technique=args.technique, frames=args.frames, height=args.height,
                       width=args.width, batch=args.batch, lora_rank=args.lora_rank,
                       mixed_precision=args.mixed_precision,
                       gradient_checkpointing=None if args.checkpointing is None else _ckpt_arg(args.checkpointing),
                       warmup=args.warmup, steps=args.steps)
    modes = ("trainer",) if args.trainer_only else ("naive", "trainer")
    res = bench_train(setup, device=args.device, modes=modes, flops=not args.no_flops)
    print(json.dumps(res) if args.json else format_bench(res))
    return 0


def cmd_bench_sample(args) -> int:
    from .bench import bench_sample

    res = bench_sample(args.model, steps=args.steps, frames=args.frames, repeats=args.repeats,
                       device=args.device, compile=args.compile)
    if args.json:
        print(json.dumps(res))
    else:
        for k in ("plain_diffusers", "package"):
            print(f"{k:<16} {res[k]['median_s']:.3f} s per video (median of {args.repeats})")
        print(f"package / plain: {res['ratio']:.3f}  ({res['device']}, {res['frames']} frames, {res['steps']} steps)")
    return 0


def cmd_estimate(args) -> int:
    from .config import load_config
    from .estimate import estimate_memory, format_estimate

    cfg = load_config(args.config, args.set)
    est = estimate_memory(cfg)
    print(json.dumps(est, default=str) if args.json else format_estimate(args.config, est))
    return 0


def cmd_demo(args) -> int:
    """``i2v demo``: :func:`i2v_helpers.demo.run_demo` (data check, stage 1, stage 2, evaluation, a video)."""
    from .demo import DemoError, run_demo

    try:
        run_demo(args.data, args.out, quick=args.quick, stage1_steps=args.stage1_steps,
                 stage2_steps=args.stage2_steps, max_train_clips=args.max_train_clips, eval_clips=args.eval_clips,
                 eval_seeds=args.eval_seeds, eval_steps=args.eval_steps)
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _add_env_command(sub) -> None:
    """``i2v env``."""
    e = sub.add_parser("env", help="versions, device, GPU name and memory")
    e.add_argument("--json", action="store_true")
    e.add_argument("--tuning", action="store_true",
                   help="also the allocator / MIOpen / cuDNN settings and which attention kernels run (timed)")
    e.set_defaults(fn=cmd_env)


def _add_data_commands(sub) -> None:
    """``i2v data check``, ``i2v data prepare`` and ``i2v data make-samples``."""
    d = sub.add_parser("data", help="check manifests, prepare your own videos, make the sample sets")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    c = dsub.add_parser("check", help="check every entry of a manifest; exit 1 if any is bad")
    c.add_argument("manifest")
    c.add_argument("--frames", type=int, default=16)
    c.add_argument("--sampling", choices=["consecutive", "spread"], default="consecutive")
    c.add_argument("--stride", type=int, default=1)
    c.add_argument("--allow-outside", action="store_true", help="allow paths outside the manifest's folder")
    c.add_argument("--no-decode", action="store_true", help="probe headers only (faster, misses truncation)")
    c.add_argument("--motion", action="store_true", help="also print optical-flow motion statistics")
    c.set_defaults(fn=cmd_data_check)
    p = dsub.add_parser("prepare", help="raw videos (files or folders) -> clips, train/val manifests, summary")
    p.add_argument("raw", nargs="+", help="video files and/or folders of videos (any length, size, frame rate)")
    p.add_argument("--out", required=True, help="a new folder for clips/, train.jsonl, val.jsonl, summary.json")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help="target frame rate: every round(src/fps)-th frame")
    p.add_argument("--size", default="64", help="H or HxW in px (aspect kept: resize to cover, centre crop)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of source videos (not clips) for val")
    p.add_argument("--max-clips-per-scene", type=int, default=4)
    p.add_argument("--scene-threshold", type=float, default=27.0, help="PySceneDetect ContentDetector threshold")
    p.set_defaults(fn=cmd_data_prepare)
    m = dsub.add_parser("make-samples", help="write data_samples/{general,sports,animated}")
    m.add_argument("--out", default="data_samples")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--size", type=int, default=64)
    m.add_argument("--frames", type=int, default=16)
    m.add_argument("--sets", nargs="*", default=None, help="only these sets (general, sports, animated)")
    m.add_argument("--objects-only", action="store_true",
                   help="only add the objects ground truth to the existing manifests (media untouched)")
    m.set_defaults(fn=cmd_make_samples)


def _add_sample_command(sub) -> None:
    """``i2v sample``."""
    s = sub.add_parser("sample", help="generate a video from an image")
    s.add_argument("--model", default=None, help="pipeline folder or hub id (default: the shipped tiny SVD)")
    s.add_argument("--image", required=True)
    s.add_argument("--out", required=True, help=".mp4, .gif or .webm")
    s.add_argument("--lora", default=None, help="a LoRA adapter folder (peft format)")
    s.add_argument("--adapters", default=None, help="an adapter-layer run's adapters/ folder")
    s.add_argument("--frames", type=int, default=None)
    s.add_argument("--steps", type=int, default=25)
    s.add_argument("--fps", type=float, default=DEFAULT_FPS, help="the frame rate to condition on (not rounded)")
    s.add_argument("--motion-bucket-id", type=float, default=DEFAULT_MOTION_BUCKET)
    s.add_argument("--noise-aug-strength", type=float, default=0.02)
    s.add_argument("--min-guidance", type=float, default=1.0)
    s.add_argument("--max-guidance", type=float, default=3.0)
    s.add_argument("--height", type=int, default=None)
    s.add_argument("--width", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_sample)


def _add_train_command(sub) -> None:
    """``i2v train``."""
    t = sub.add_parser("train", help="fine-tune: i2v train CONFIG [--set key=value ...] [--resume]")
    t.add_argument("config",
                   help="a shipped config name (tiny-stage1, tiny-stage2-sports, svd-xt-lora, ...) or a YAML file")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    t.set_defaults(fn=cmd_train)


def _add_eval_command(sub) -> None:
    """``i2v eval``."""
    ev = sub.add_parser("eval", help="score generations against held-out clips (and the repeat-first-frame baseline)")
    ev.add_argument("--model", default=None,
                    help="pipeline folder, run folder, or baseline (default: the shipped tiny SVD)")
    ev.add_argument("--lora", default=None)
    ev.add_argument("--adapters", default=None)
    ev.add_argument("--manifest", required=True)
    ev.add_argument("--out", default="outputs/eval")
    ev.add_argument("--max-clips", type=int, default=None)
    ev.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ev.add_argument("--steps", type=int, default=25)
    ev.add_argument("--grid-clips", type=int, default=6, help="clips in grid.mp4")
    ev.add_argument("--frames", type=int, default=None, help="frames to generate and score (default: the model's)")
    ev.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="generate and score at this size (default: the model's); clips are resized and "
                         "centre-cropped to it as training does")
    ev.add_argument("--sampling", choices=["consecutive", "spread"], default="consecutive",
                    help="how the clips' frames are taken, as in training")
    ev.add_argument("--stride", type=int, default=1, help="as in training: fps is the clip's / stride")
    ev.add_argument("--compare", nargs="+", default=None, metavar="NAME=SPEC",
                    help="compare models: baseline, NAME=PATH, NAME=PATH+lora:DIR, NAME=PATH+adapters:DIR")
    ev.set_defaults(fn=cmd_eval)


def _add_bench_commands(sub) -> None:
    """``i2v bench train`` and ``i2v bench sample``."""
    b = sub.add_parser("bench", help="measure training / sampling speed and memory")
    bsub = b.add_subparsers(dest="bench_cmd", required=True)
    bt = bsub.add_parser("train", help="naive loop vs the package's trainer, same model, batch and data")
    bt.add_argument("--preset", choices=["tiny", "svd-xt"], default="tiny")
    bt.add_argument("--technique", choices=["lora", "full", "adapter"], default="lora")
    bt.add_argument("--frames", type=int, default=None)
    bt.add_argument("--height", type=int, default=None)
    bt.add_argument("--width", type=int, default=None)
    bt.add_argument("--batch", type=int, default=1)
    bt.add_argument("--lora-rank", type=int, default=16)
    bt.add_argument("--mixed-precision", choices=["auto", "no", "bf16", "fp16"], default="auto")
    bt.add_argument("--checkpointing", default=None, help="false | true (diffusers' blocks) | full")
    bt.add_argument("--warmup", type=int, default=2)
    bt.add_argument("--steps", type=int, default=5)
    bt.add_argument("--device", default=None)
    bt.add_argument("--trainer-only", action="store_true", help="skip the naive loop")
    bt.add_argument("--no-flops", action="store_true")
    bt.add_argument("--json", action="store_true")
    bt.set_defaults(fn=cmd_bench_train)
    bs = bsub.add_parser("sample", help="generate with the package vs a plain diffusers pipeline call")
    bs.add_argument("--model", default=None, help="pipeline folder (default: the shipped tiny SVD)")
    bs.add_argument("--steps", type=int, default=25)
    bs.add_argument("--frames", type=int, default=None)
    bs.add_argument("--repeats", type=int, default=3)
    bs.add_argument("--device", default=None)
    bs.add_argument("--compile", action="store_true", help="torch.compile the UNet (both paths)")
    bs.add_argument("--json", action="store_true")
    bs.set_defaults(fn=cmd_bench_sample)


def _add_estimate_command(sub) -> None:
    """``i2v estimate``."""
    es = sub.add_parser("estimate", help="predicted peak training memory of a config")
    es.add_argument("config")
    es.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    es.add_argument("--json", action="store_true")
    es.set_defaults(fn=cmd_estimate)


def _add_demo_command(sub) -> None:
    """``i2v demo``."""
    dm = sub.add_parser("demo", help="the main job: data check, stage 1, stage 2, evaluation, a video")
    dm.add_argument("--data", default="data_samples")
    dm.add_argument("--out", default="outputs/demo")
    dm.add_argument("--quick", action="store_true",
                    help="40 + 20 training steps instead of the tiny-stage1 and tiny-stage2-sports configs' "
                         "(a tour, not a result)")
    dm.add_argument("--stage1-steps", type=int, default=None)
    dm.add_argument("--stage2-steps", type=int, default=None)
    dm.add_argument("--max-train-clips", type=int, default=None, help="train on the first N clips only (smoke tests)")
    dm.add_argument("--eval-clips", type=int, default=16,
                    help="held-out clips per set (sports: the 16 basketball clips)")
    dm.add_argument("--eval-seeds", type=int, default=2)
    dm.add_argument("--eval-steps", type=int, default=25)
    dm.set_defaults(fn=cmd_demo)


def _add_pretrain_command(sub) -> None:
    """``i2v pretrain``."""
    pt = sub.add_parser("pretrain", help="(project maintainers) rebuild the shipped tiny SVD from scratch")
    pt.add_argument("phase", choices=["vae", "unet", "decoder", "finalize", "evaluate", "all", "throughput"],
                    help="all = the three phases, finalize (save to --out, model card) and evaluate; rerun to resume. "
                         "throughput = samples/s of the UNet step (--set model=v1|v2, unet_batch, precision)")
    pt.add_argument("--manifest", default="data_samples/general/val.jsonl")
    pt.add_argument("--max-clips", type=int, default=16)  # model_card.SHIP_CLIPS (not imported at parse time)
    pt.add_argument("--no-eval", action="store_true", help="all: skip the (CPU-heavy) evaluation")
    pt.add_argument("--card", action="store_true", help="evaluate: write the metrics into --out's model card")
    pt.add_argument("--rebuild", default=None,
                    help="the model card's rebuild command, when the weights were not made by one `i2v pretrain all` "
                         "(e.g. benchmarks/v2_cpu_build.sh); default: that command for the recorded config")
    pt.add_argument("--out", default=None,
                    help="the model folder finalize writes and evaluate scores (default: the shipped tiny SVD's)")
    pt.add_argument("--work-dir", default="runs/pretrain")
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--vae-minutes", type=float, default=25.0)
    pt.add_argument("--unet-minutes", type=float, default=45.0)
    pt.add_argument("--decoder-minutes", type=float, default=5.0, help="decoder-only VAE sharpening after the UNet")
    pt.add_argument("--seconds", type=float, default=20.0, help="throughput: seconds to time")
    pt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a PretrainConfig field, e.g. --set device=cuda --set unet_batch=32")
    pt.set_defaults(fn=cmd_pretrain)


def build_parser() -> argparse.ArgumentParser:
    """The ``i2v`` parser; building it and ``-h`` import no torch (tests/test_cli.py)."""
    p = argparse.ArgumentParser(prog="i2v", description="Image-to-video diffusion course tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_env_command(sub)
    _add_data_commands(sub)
    _add_sample_command(sub)
    _add_train_command(sub)
    _add_eval_command(sub)
    _add_bench_commands(sub)
    _add_estimate_command(sub)
    _add_demo_command(sub)
    _add_pretrain_command(sub)
    return p


def main(argv=None) -> int:
    """Run one subcommand; an error in :data:`EXIT_CODES` becomes ``error: ...`` on stderr and its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except tuple(EXIT_CODES) as e:
        print(f"error: {e}", file=sys.stderr)
        return next(code for cls, code in EXIT_CODES.items() if isinstance(e, cls))


if __name__ == "__main__":
    sys.exit(main())
