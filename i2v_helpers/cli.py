"""The ``i2v`` command line: ``env``, ``data check``, ``data make-samples``, ``sample``, ``pretrain``.

Every subcommand is a thin wrapper over a package function the notebooks call too.
Run ``i2v -h`` or ``i2v SUBCOMMAND -h``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _table(rows: list[tuple[str, object]]) -> str:
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def cmd_env(args) -> int:
    from .device import environment_report

    rep = environment_report()
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print(_table(list(rep.items())))
    return 0


def cmd_data_check(args) -> int:
    from .data import ManifestError, check_manifest, summarize

    try:
        good, problems = check_manifest(args.manifest, args.frames, args.sampling, args.stride,
                                        args.allow_outside, decode=not args.no_decode)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.manifest}: checked for {args.frames} frames, {args.sampling} sampling, stride {args.stride}")
    print(_table(list(summarize(good, problems).items())))
    if args.motion and good:
        import numpy as np

        from .motion import motion_score
        from .video_io import read_video

        scores = [motion_score(read_video(e.video)[0][:args.frames]) for e in good]
        print(f"  motion px/frame  min {min(scores):.2f}  mean {np.mean(scores):.2f}  max {max(scores):.2f}")
    for p in problems:
        print(p, file=sys.stderr if p.fatal else sys.stdout)
    return 1 if any(p.fatal for p in problems) else 0


def cmd_make_samples(args) -> int:
    from .samples import make_samples

    make_samples(args.out, seed=args.seed, size=args.size, frames=args.frames, sets=args.sets)
    return 0


def cmd_sample(args) -> int:
    from .models import load_pipeline
    from .sampling import generate, save_frames
    from .training import resolve_model_path
    from .video_io import read_image

    pipe = load_pipeline(resolve_model_path(args.model))
    if args.lora:
        from .lora import load_lora_into_pipeline

        load_lora_into_pipeline(pipe, args.lora)
    frames = generate(pipe, read_image(args.image), num_frames=args.frames, steps=args.steps, fps=args.fps,
                      motion_bucket_id=args.motion_bucket_id, noise_aug_strength=args.noise_aug_strength,
                      min_guidance=args.min_guidance, max_guidance=args.max_guidance, seed=args.seed,
                      height=args.height, width=args.width)
    out = save_frames(args.out, frames, fps=args.fps)
    print(f"wrote {out} ({len(frames)} frames, {frames.shape[2]}x{frames.shape[1]})")
    return 0


def cmd_pretrain(args) -> int:
    from .evaluation import format_summary
    from .pretrain import (PretrainConfig, evaluate_base, finalize, run_decoder_phase, run_unet_phase, run_vae_phase,
                           write_model_card)

    cfg = PretrainConfig(out_dir=args.out, work_dir=args.work_dir, seed=args.seed,
                         vae_minutes=args.vae_minutes, unet_minutes=args.unet_minutes)
    if args.phase in ("vae", "all"):
        run_vae_phase(cfg)
    if args.phase in ("unet", "all"):
        run_unet_phase(cfg)
    if args.phase in ("decoder", "all") and args.decoder_minutes > 0:
        run_decoder_phase(cfg, args.decoder_minutes)
    if args.phase in ("finalize", "all"):
        finalize(cfg)
    if args.phase in ("finalize", "all", "evaluate"):
        res = evaluate_base(cfg.out_dir, args.manifest, max_clips=args.max_clips)
        print(f"VAE PSNR {res['vae_psnr_db']:.2f} dB")
        print(format_summary(res))
        if args.phase != "evaluate":
            print(f"model card: {write_model_card(cfg, res)}")
    return 0


def cmd_train(args) -> int:
    from .training import TrainingDiverged, load_config, train

    cfg = load_config(args.config, args.set)
    try:
        result = train(cfg, resume=args.resume)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(json.dumps(result, indent=2))
    return 0


def cmd_demo(args) -> int:
    """Check the sample sets, write previews, and (with the shipped tiny SVD) make a video."""
    import numpy as np
    from PIL import Image

    from .data import check_manifest, summarize
    from .models import TINY_SVD_DIR
    from .video_io import read_video, write_video
    from .viz import clip_grid

    root, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = 0
    for name in ("general", "sports", "animated"):
        for split in ("train", "val"):
            manifest = root / name / f"{split}.jsonl"
            good, problems = check_manifest(manifest)
            s = summarize(good, problems)
            print(f"[data] {manifest}: {s['good entries']} good, {s['bad entries']} bad, {s['sizes']}, fps {s['fps']}")
            status |= int(any(p.fatal for p in problems))
        clips = [read_video(e.video)[0] for e in good[:6]]
        Image.fromarray(clip_grid(clips, every=2)).save(out / f"preview_{name}.png")
        write_video(out / f"preview_{name}.gif", np.concatenate(clips[:4], axis=2), fps=8)
    print(f"[data] previews in {out}/preview_*.png|gif")
    if not (TINY_SVD_DIR / "model_index.json").is_file():
        print(f"[model] {TINY_SVD_DIR} not found: skipping generation")
        return status
    from .models import load_pipeline
    from .sampling import generate

    entry = check_manifest(root / "general" / "val.jsonl", decode=False)[0][0]
    pipe = load_pipeline(TINY_SVD_DIR)
    frames = generate(pipe, read_video(entry.video)[0][0], fps=entry.fps or 7,
                      motion_bucket_id=entry.motion_bucket_id or 127, seed=0)
    path = write_video(out / "generated.mp4", frames, fps=entry.fps or 7)
    print(f"[model] {entry.where} of general/val ({entry.prompt!r}) -> {path}")
    return status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2v", description="Image-to-video diffusion course tools")
    sub = p.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("env", help="versions, device, GPU name and memory")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_env)

    d = sub.add_parser("data", help="check manifests, make the sample sets")
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
    m = dsub.add_parser("make-samples", help="write data_samples/{general,sports,animated}")
    m.add_argument("--out", default="data_samples")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--size", type=int, default=64)
    m.add_argument("--frames", type=int, default=16)
    m.add_argument("--sets", nargs="*", default=None, help="only these sets (general, sports, animated)")
    m.set_defaults(fn=cmd_make_samples)

    s = sub.add_parser("sample", help="generate a video from an image")
    s.add_argument("--model", default=None, help="pipeline folder or hub id (default: the shipped tiny SVD)")
    s.add_argument("--image", required=True)
    s.add_argument("--out", required=True, help=".mp4, .gif or .webm")
    s.add_argument("--lora", default=None, help="a LoRA adapter folder (peft format)")
    s.add_argument("--frames", type=int, default=None)
    s.add_argument("--steps", type=int, default=25)
    s.add_argument("--fps", type=int, default=7)
    s.add_argument("--motion-bucket-id", type=int, default=127)
    s.add_argument("--noise-aug-strength", type=float, default=0.02)
    s.add_argument("--min-guidance", type=float, default=1.0)
    s.add_argument("--max-guidance", type=float, default=3.0)
    s.add_argument("--height", type=int, default=None)
    s.add_argument("--width", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_sample)

    t = sub.add_parser("train", help="fine-tune: i2v train CONFIG [--set key=value ...] [--resume]")
    t.add_argument("config", help="a shipped config name (tiny-stage1, tiny-stage2-sports, svd-xt-lora, ...) or a YAML file")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    t.set_defaults(fn=cmd_train)

    dm = sub.add_parser("demo", help="the quick-start main job on the shipped data and model")
    dm.add_argument("--data", default="data_samples")
    dm.add_argument("--out", default="outputs/demo")
    dm.set_defaults(fn=cmd_demo)

    pt = sub.add_parser("pretrain", help="(project maintainers) rebuild the shipped tiny SVD from scratch")
    pt.add_argument("phase", choices=["vae", "unet", "decoder", "finalize", "evaluate", "all"],
                    help="finalize = save to --out, evaluate, write the model card; evaluate = print the card's metrics")
    pt.add_argument("--manifest", default="data_samples/general/val.jsonl")
    pt.add_argument("--max-clips", type=int, default=None)
    pt.add_argument("--out", default="data_samples/models/tiny-svd")
    pt.add_argument("--work-dir", default="runs/pretrain")
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--vae-minutes", type=float, default=25.0)
    pt.add_argument("--unet-minutes", type=float, default=45.0)
    pt.add_argument("--decoder-minutes", type=float, default=20.0, help="decoder-only VAE sharpening after the UNet")
    pt.set_defaults(fn=cmd_pretrain)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "cmd", None) == "sample" and args.model is None:
        from .models import TINY_SVD_DIR

        args.model = str(TINY_SVD_DIR)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
