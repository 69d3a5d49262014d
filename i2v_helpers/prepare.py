"""Your own videos → the course's dataset format: ``i2v data prepare RAW [RAW ...] --out DIR``.

    report = prepare_videos(["holiday.mov", "clips/"], "data/mine", num_frames=16, fps=7, size=(64, 64))

For each raw video (any length, size and frame rate), top to bottom:

1. **probe** it; a file that is not a readable video, or has no video stream, is reported by
   name and skipped (nothing else is lost);
2. **scene cuts** with PySceneDetect's ``ContentDetector`` (``scenedetect.detect``): a clip never
   spans a cut;
3. **clips** of ``num_frames`` frames at about ``fps``: every ``stride``-th source frame, with
   ``stride = round(source fps / fps)`` (no resampling: the manifest records the clip's real fps,
   ``source fps / stride``); consecutive, non-overlapping windows inside each scene, at most
   ``max_clips_per_scene`` per scene; a video whose longest scene is shorter than
   ``(num_frames - 1) × stride + 1`` frames is reported as too short;
4. every kept frame is **resized** keeping its aspect ratio until it covers ``size`` and
   centre-cropped (the rule training uses: :func:`i2v_helpers.frames.crop_box`);
5. each clip is written as H.264 mp4 with its first frame as the PNG ``image`` and its
   ``motion_bucket_id`` from optical flow (:func:`i2v_helpers.conditioning.clip_motion_bucket`,
   the rule training uses for clips without one);
6. **split by source video** (never by clip, so no scene leaks from train into val): sources are
   ordered by a hash of their file name and the first ``val_fraction`` of them go to val;
7. ``train.jsonl``, ``val.jsonl``, ``summary.json`` and ``preview.png`` (a few clips, every
   second frame) are written last, so a folder with manifests is a finished one.

Frames are decoded one at a time and only the kept, resized ones are held, so a long 4K video
needs no more memory than its clips.

Curation, a step after preparing: :func:`curate_manifest` scores a manifest's clips
(:func:`clip_quality`: motion, flicker, sharpness) and writes a manifest of those that pass
thresholds.

Introduced in notebook 05 (dataset) and the "your own videos" notebook; curation in notebook
09 (specialized scenarios).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
import scenedetect
from PIL import Image
from scenedetect.detectors import ContentDetector
from tqdm.auto import tqdm

from .conditioning import DEFAULT_FPS, clip_motion_bucket
from .data import ClipEntry, InvalidManifest, check_manifest
from .frames import crop_box, resize_crop
from .metrics import warp_error
from .motion import motion_score
from .video_io import MediaError, probe_video, read_video, write_video
from .viz import clip_grid


@dataclass
class SourceReport:
    """What happened to one raw video."""

    path: str
    status: str = "ok"  # ok | skipped
    reason: str = ""
    width: int = 0
    height: int = 0
    source_fps: float = 0.0
    source_frames: int = 0
    stride: int = 1
    clip_fps: float = 0.0
    scenes: list[tuple[int, int]] = field(default_factory=list)  # [start, end) source frame numbers
    clips: list[dict] = field(default_factory=list)  # manifest lines, paths relative to the output folder
    split: str = ""


def find_videos(raws: list[str | Path]) -> list[Path]:
    """The files named, and every file under the folders named (sorted; names starting with a dot skipped)."""
    out = []
    for r in raws:
        r = Path(r)
        if r.is_dir():
            out += sorted(p for p in r.rglob("*") if p.is_file()
                          and not any(part.startswith(".") for part in p.relative_to(r).parts))
        else:
            out.append(r)
    return out


def detect_scenes(path: Path, total: int, threshold: float = 27.0) -> list[tuple[int, int]]:
    """``[(start, end), ...)`` source frame ranges between cuts (PySceneDetect ``ContentDetector``);
    one range over the whole video when there is no cut."""

    found = scenedetect.detect(str(path), ContentDetector(threshold=threshold), show_progress=False)
    return [(a.frame_num, b.frame_num) for a, b in found] or [(0, total)]


def source_fps_and_stride(source_fps: float | None, fps: float) -> tuple[float, int]:
    """``(source fps, stride)``: take every ``stride``-th frame to come closest to ``fps``
    (a source without a frame rate is taken to be at ``fps``)."""
    src = float(source_fps or fps)
    return src, max(1, round(src / fps))


def _clip_windows(path: Path, scenes: list[tuple[int, int]], stride: int, num_frames: int, size: tuple[int, int],
                  max_per_scene: int):
    """Yield ``(scene index, first source frame, uint8 (F, H, W, 3))`` clips, decoding frame by frame."""

    box = None
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        scene_i, window, start, made = 0, [], 0, 0
        for i, frame in enumerate(c.decode(stream)):
            while scene_i < len(scenes) and i >= scenes[scene_i][1]:
                scene_i, window, made = scene_i + 1, [], 0
            if scene_i == len(scenes):
                break
            s0 = scenes[scene_i][0]
            if i < s0 or (i - s0) % stride or made >= max_per_scene:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            box = box or crop_box(rgb.shape[0], rgb.shape[1], size)
            if not window:
                start = i
            window.append(resize_crop(rgb[None], size, box)[0])
            if len(window) == num_frames:
                yield scene_i, start, np.stack(window)
                window, made = [], made + 1


def prepare_one(path: Path, out: Path, name: str, num_frames: int, fps: float, size: tuple[int, int],
                max_per_scene: int, threshold: float) -> SourceReport:
    """Clips of one raw video into ``out/clips/``; a video that fails part-way leaves no clip behind."""
    rep = SourceReport(str(path))
    try:
        meta = probe_video(path)
    except (MediaError, FileNotFoundError, IsADirectoryError) as e:
        return _skip(rep, str(e))
    src_fps, stride = source_fps_and_stride(meta["fps"], fps)
    rep.width, rep.height, rep.source_fps, rep.stride = meta["width"], meta["height"], src_fps, stride
    rep.clip_fps = src_fps / stride
    span = (num_frames - 1) * stride + 1
    written = []
    try:
        total = meta["frames"] or 10 ** 9  # unknown count: the last scene ends where decoding ends
        rep.scenes = detect_scenes(path, total, threshold)
        for scene, start, clip in _clip_windows(path, rep.scenes, stride, num_frames, size, max_per_scene):
            stem = f"{name}_s{scene:02d}_f{start:06d}"
            video = write_video(out / "clips" / f"{stem}.mp4", clip, fps=rep.clip_fps)
            image = out / "clips" / f"{stem}.png"
            Image.fromarray(clip[0]).save(image)
            written += [video, image]
            rep.clips.append({"image": f"clips/{image.name}", "video": f"clips/{video.name}", "prompt": "",
                              "fps": round(rep.clip_fps, 3), "motion_bucket_id": clip_motion_bucket(None, clip),
                              "source": path.name, "scene": scene, "start_frame": start})
    except Exception as e:  # a broken file part-way: drop what it made, keep going with the others
        for f in written:
            f.unlink(missing_ok=True)
        rep.clips = []
        return _skip(rep, f"decoding failed part-way ({type(e).__name__}: {e}); re-encode it, e.g. "
                          "ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4")
    rep.source_frames = meta["frames"]
    if not rep.clips:
        longest = max((b - a for a, b in rep.scenes if b < 10 ** 9), default=meta["frames"])
        return _skip(rep, f"too short: its longest scene has {longest} frames, a clip of {num_frames} frames at "
                          f"stride {stride} needs {span}; lower --frames or --fps")
    return rep


def _skip(rep: SourceReport, reason: str) -> SourceReport:
    rep.status, rep.reason = "skipped", reason
    return rep


def split_sources(names: list[str], val_fraction: float) -> set[str]:
    """The source names that go to val: ordered by a hash of the name (stable when videos are added or
    the folder moves: pass file names, not paths), the first ``ceil(val_fraction × n)`` (at least one
    when there are two or more sources)."""
    if val_fraction <= 0 or len(names) < 2:
        return set()
    order = sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    return set(order[:min(len(names) - 1, max(1, math.ceil(val_fraction * len(names))))])


def prepare_videos(raws: list[str | Path], out: str | Path, num_frames: int = 16, fps: float = DEFAULT_FPS,
                   size: int | tuple[int, int] = 64, val_fraction: float = 0.2, max_clips_per_scene: int = 4,
                   scene_threshold: float = 27.0, progress: bool = True) -> dict:
    """Raw videos → ``out/{train,val}.jsonl``, ``out/clips/``, ``out/summary.json``, ``out/preview.png``.
    Returns the summary (also written). Bad inputs are in ``summary["skipped"]`` with the reason."""
    out = Path(out)
    size = (size, size) if isinstance(size, int) else tuple(size)
    if (out / "train.jsonl").exists():
        raise FileExistsError(f"{out}: already holds a prepared dataset (train.jsonl); choose another --out "
                              "or delete that folder first")
    videos = find_videos(raws)
    if not videos:
        raise FileNotFoundError(f"no files found in {[str(r) for r in raws]}")
    reports, name_of = [], {}  # path -> unique name (file stem); the split and the clip names use it
    for path in tqdm(videos, desc="prepare", unit="video", disable=not progress):
        name = path.stem
        while name in name_of.values():  # the same file name in two folders
            name += "_"
        name_of[str(path)] = name
        rep = prepare_one(path, out, name, num_frames, fps, size, max_clips_per_scene, scene_threshold)
        if progress:
            what = (f"{len(rep.clips)} clips from {len(rep.scenes)} scenes, {rep.source_fps:g} fps / stride "
                    f"{rep.stride} = {rep.clip_fps:.2f} fps" if rep.status == "ok" else f"skipped, {rep.reason}")
            tqdm.write(f"[prepare] {path}: {what}")
        reports.append(rep)
    good = [r for r in reports if r.status == "ok"]
    val_names = split_sources([name_of[r.path] for r in good], val_fraction)  # by name: the folder does not matter
    val = {r.path for r in good if name_of[r.path] in val_names}
    lines = {"train": [], "val": []}
    for r in good:
        r.split = "val" if r.path in val else "train"
        lines[r.split] += r.clips
    if not lines["train"]:
        raise ValueError(f"no clip could be made from {len(videos)} file(s): "
                         + "; ".join(f"{r.path}: {r.reason}" for r in reports))
    for split, rows in lines.items():
        if rows:
            (out / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    shown = [r.clips[0] for r in good][:6]
    preview = clip_grid([read_video(out / c["video"])[0] for c in shown], every=2)
    Image.fromarray(preview).save(out / "preview.png")
    summary = {"settings": {"num_frames": num_frames, "fps": fps, "size": list(size), "val_fraction": val_fraction,
                            "max_clips_per_scene": max_clips_per_scene, "scene_threshold": scene_threshold},
               "clips": {k: len(v) for k, v in lines.items()},
               "sources": {"ok": len(good), "skipped": len(reports) - len(good), "val": sorted(val)},
               "skipped": [{"path": r.path, "reason": r.reason} for r in reports if r.status != "ok"],
               "videos": [{k: v for k, v in asdict(r).items() if k != "clips"} | {"clips": len(r.clips)}
                          for r in reports]}
    if not lines["val"]:
        summary["note"] = "no val.jsonl: one usable source video cannot be split without leaking scenes into val"
    text = json.dumps(summary, indent=2)
    (out / "summary.json").write_text(text)
    return json.loads(text)  # as written: scene ranges are lists


# ------------------------------------------------------------------ curation

def clip_quality(e: ClipEntry, num_frames: int = 16) -> dict:
    """Quality scores of one entry's first ``num_frames`` frames: ``motion`` (mean optical-flow
    px/frame), ``flicker`` (:func:`i2v_helpers.metrics.warp_error`) and ``sharpness``
    (variance of the Laplacian, mean over frames)."""

    clip = read_video(e.video)[0][:num_frames]
    sharp = float(np.mean([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for f in clip]))
    return {"motion": motion_score(clip), "flicker": warp_error(clip), "sharpness": sharp}


def curate_manifest(src: str | Path, dst: str | Path | None = None, min_motion: float = 0.0,
                    max_flicker: float | None = None, min_sharpness: float = 0.0, num_frames: int = 16):
    """Write a manifest of the entries of ``src`` that pass quality thresholds (the seed's
    "quality improvement" stage trains on such a subset).

    ``dst`` defaults to ``SRC.curated.jsonl`` next to ``src`` (it must stay in the same folder:
    paths are relative to it). Returns ``(dst, rows)`` with every entry's scores and ``kept`` flag.
    """
    src = Path(src)
    dst = Path(dst) if dst else src.with_name(src.stem + ".curated.jsonl")
    if dst.parent.resolve() != src.parent.resolve():
        raise ValueError(f"{dst}: write the curated manifest next to {src} (its paths are relative to that folder)")
    good, problems = check_manifest(src, num_frames)
    if any(p.fatal for p in problems):
        raise InvalidManifest(src, problems)
    rows, lines = [], []
    root = src.parent.resolve()
    for e in good:
        q = clip_quality(e, num_frames)
        kept = q["motion"] >= min_motion and q["sharpness"] >= min_sharpness \
            and (max_flicker is None or q["flicker"] <= max_flicker)
        rows.append({"where": e.where, **q, "kept": kept})
        if kept:
            obj = {"video": str(e.video.relative_to(root)), "prompt": e.prompt, **e.extra}
            if e.image is not None:
                obj["image"] = str(e.image.relative_to(root))
            obj.update({k: v for k, v in (("fps", e.fps), ("motion_bucket_id", e.motion_bucket_id),
                                          ("objects", e.objects)) if v is not None})
            lines.append(json.dumps(obj))
    if not lines:
        raise ValueError(f"{src}: no entry passes min_motion={min_motion}, max_flicker={max_flicker}, "
                         f"min_sharpness={min_sharpness}; loosen the thresholds")
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(dst)
    return dst, rows
