"""Manifests in the seed's ``{"image", "video", "prompt"}`` format, checked up front, and a
torch ``Dataset`` of (first frame, clip) pairs. The frame operations a clip goes through
(sampling, resize and crop, the [-1, 1] range) live in :mod:`i2v_helpers.frames`; choosing
clips by quality (``curate_manifest``) lives in :mod:`i2v_helpers.prepare`.

Manifest formats (chosen by suffix):

* ``.jsonl``: one JSON object per line (blank lines and ``#`` comments are skipped);
* ``.json``: a JSON list of objects;
* ``.csv``: a header row naming the keys, empty cells meaning "absent".

Keys: ``video`` (required: a video file — mp4, webm, gif, ... — or a folder of frame
images), ``image`` (optional: the conditioning image; without it the clip's first
sampled frame is used), ``prompt`` (optional text; SVD ignores it, the course keeps
it), ``fps`` and ``motion_bucket_id`` (optional numbers; ``fps`` overrides the
container's frame rate, a missing ``motion_bucket_id`` is derived from optical flow),
``objects`` (optional: the ground truth of a synthetic clip's objects, ``[{"colour":
[r, g, b], "centroid": [[x, y] or null per frame], "area": [px per frame]}]`` as
:mod:`i2v_helpers.synth` records it; in a ``.csv`` cell, that JSON). Other keys are kept
unchecked in ``ClipEntry.extra`` (the sample sets' ``family`` and ``rule``).

Relative paths start at the manifest's folder. **Paths that resolve outside the
manifest's folder are rejected** (``allow_outside=True`` / ``--allow-outside`` allows
them), so a manifest cannot reach into unrelated parts of a disk by accident.

Images in grayscale, RGBA (composited over black), palette or 16-bit modes are
converted to 8-bit RGB and reported as warnings, not errors.

Introduced in notebook 05 (dataset).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .conditioning import DEFAULT_FPS, clip_fps, clip_motion_bucket
from .frames import crop_box, objects_in_clip, resize_crop, sample_frame_indices, to_model_range
from .motion import motion_score
from .video_io import MediaError, probe_video, read_image, read_video

KNOWN_KEYS = {"image", "video", "prompt", "fps", "motion_bucket_id", "objects"}


class ManifestError(ValueError):
    """A manifest that cannot be used at all (missing, empty, unparseable as a whole)."""


@dataclass
class Problem:
    """One thing wrong with one entry: where, what, and how to fix it."""

    where: str
    what: str
    fix: str
    fatal: bool = True

    def __str__(self) -> str:
        kind = "error" if self.fatal else "warning"
        return f"{self.where}: {kind}: {self.what} -> fix: {self.fix}"


@dataclass
class ClipEntry:
    """A parsed manifest entry; ``where`` names it in messages ("entry 3 (line 4)")."""

    where: str
    video: Path
    image: Path | None = None
    prompt: str = ""
    fps: float | None = None
    motion_bucket_id: float | None = None
    extra: dict = field(default_factory=dict)
    objects: list[dict] | None = None  # ground truth for the object metrics (synthetic clips)
    # filled in by the check
    num_frames: int = 0
    source_fps: float | None = None
    size: tuple[int, int] = (0, 0)  # (H, W)


# ------------------------------------------------------------------ parsing

def _raw_entries(path: Path) -> list[tuple[str, dict | Problem]]:
    """``(where, dict)`` per entry, or ``(where, Problem)`` for an entry that cannot be parsed."""
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found; give a .jsonl, .json or .csv file")
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    out: list[tuple[str, dict | Problem]] = []
    if suffix == ".jsonl":
        n = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = f"entry {n} (line {lineno})"
            n += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                out.append((where, Problem(where, f"malformed JSON ({e.msg} at column {e.colno})",
                                           "write one complete JSON object per line, with double quotes")))
                continue
            out.append((where, obj))
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}; "
                                "a .json manifest is one JSON list of objects") from e
        if isinstance(data, dict) and "data" in data:
            data = data["data"]
        if not isinstance(data, list):
            raise ManifestError(f"{path}: a .json manifest must be a list of objects, got {type(data).__name__}")
        out = [(f"entry {i}", obj) for i, obj in enumerate(data)]
    elif suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        for i, row in enumerate(rows):
            obj = {k.strip(): v.strip() for k, v in row.items() if k and v is not None and v.strip() != ""}
            out.append((f"entry {i} (line {i + 2})", obj))
    else:
        raise ManifestError(f"{path}: unknown manifest type {suffix!r}; use .jsonl, .json or .csv")
    if not out:
        raise ManifestError(f"{path}: the manifest has no entries; add one line per clip, e.g. "
                            '{"image": "0000.png", "video": "0000.mp4", "prompt": "..."}')
    return out


def _resolve(root: Path, value, where: str, key: str, allow_outside: bool) -> Path | Problem:
    if not isinstance(value, str) or not value.strip():
        return Problem(where, f"'{key}' must be a non-empty path string, got {value!r}",
                       f"set '{key}' to a path relative to the manifest's folder")
    p = Path(value).expanduser()
    full = (p if p.is_absolute() else root / p).resolve()
    if not allow_outside and not full.is_relative_to(root.resolve()):
        return Problem(where, f"'{key}' path {value!r} escapes the manifest's folder {root}",
                       "move the file under the manifest's folder, or allow it with --allow-outside "
                       "(allow_outside=True)")
    return full


def _number(obj: dict, key: str, where: str, lo: float, hi: float) -> float | Problem | None:
    if key not in obj:
        return None
    try:
        v = float(obj[key])
    except (TypeError, ValueError):
        return Problem(where, f"'{key}' must be a number, got {obj[key]!r}", f"write {key} as a number")
    if not (lo <= v <= hi):
        return Problem(where, f"'{key}' = {v} is outside [{lo}, {hi}]", f"use a {key} between {lo} and {hi}")
    return v


def _objects(obj: dict, where: str) -> list[dict] | Problem | None:
    """The entry's ``objects`` checked for shape (see the module doc); ``None`` when absent."""
    if "objects" not in obj:
        return None
    value = obj["objects"]
    try:
        value = json.loads(value) if isinstance(value, str) else value  # a .csv cell
        ok = isinstance(value, list) and all(
            isinstance(o, dict) and len(o["colour"]) == 3 and len(o["centroid"]) == len(o["area"])
            and all(c is None or len(c) == 2 for c in o["centroid"]) for o in value)
    except (json.JSONDecodeError, KeyError, TypeError):
        ok = False
    if not ok:
        return Problem(where, "'objects' must be a list of {\"colour\": [r, g, b], \"centroid\": [[x, y] or null "
                       "per frame], \"area\": [px per frame]}",
                       "fix it, or drop 'objects' (only the object metrics use it)")
    return value


def parse_manifest(path: str | Path, allow_outside: bool = False) -> tuple[list[ClipEntry], list[Problem]]:
    """Parse a manifest without opening any media: entries and per-entry problems."""
    path = Path(path)
    root = path.parent
    entries, problems = [], []
    for where, obj in _raw_entries(path):
        if isinstance(obj, Problem):
            problems.append(obj)
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(where, f"entry is a {type(obj).__name__}, not an object",
                                    'write it as {"image": ..., "video": ..., "prompt": ...}'))
            continue
        if "video" not in obj:
            problems.append(Problem(where, f"missing key 'video' (has: {', '.join(sorted(obj)) or 'nothing'})",
                                    "add \"video\": the clip's path relative to the manifest"))
            continue
        bad = []
        video = _resolve(root, obj["video"], where, "video", allow_outside)
        image = _resolve(root, obj["image"], where, "image", allow_outside) if obj.get("image") else None
        fps = _number(obj, "fps", where, 0.1, 1000)
        bucket = _number(obj, "motion_bucket_id", where, 0, 255)
        objects = _objects(obj, where)
        for v in (video, image, fps, bucket, objects):
            if isinstance(v, Problem):
                bad.append(v)
        prompt = obj.get("prompt", "")
        if not isinstance(prompt, str):
            bad.append(Problem(where, f"'prompt' must be text, got {type(prompt).__name__}", "quote the prompt"))
        if bad:
            problems += bad
            continue
        entries.append(ClipEntry(where, video, image, prompt, fps, bucket,
                                 {k: v for k, v in obj.items() if k not in KNOWN_KEYS}, objects))
    return entries, problems


# ------------------------------------------------------------------ checking

def frames_needed(num_frames: int, sampling: str, stride: int) -> int:
    """Source frames a clip must have to yield ``num_frames`` with this sampling."""
    return (num_frames - 1) * stride + 1 if sampling == "consecutive" else num_frames


def check_entry(e: ClipEntry, num_frames: int = 16, sampling: str = "consecutive", stride: int = 1,
                decode: bool = True) -> list[Problem]:
    """Open the entry's media and list its problems (fills ``e.num_frames``, ``e.size``, ...).

    With ``decode`` every frame is decoded, which catches truncated files up front.
    """
    probs: list[Problem] = []
    try:
        info = probe_video(e.video)
        if decode:
            video, fps = read_video(e.video)
            e.num_frames, e.source_fps, e.size = len(video), fps, video.shape[1:3]
        else:
            e.num_frames, e.source_fps, e.size = info["frames"], info["fps"], (info["height"], info["width"])
    except MediaError as err:
        return [Problem(e.where, f"video {err}", "replace or re-encode the file, or drop the entry")]
    need = frames_needed(num_frames, sampling, stride)
    if e.num_frames < need:
        probs.append(Problem(e.where, f"video {e.video.name} has {e.num_frames} frames, {need} needed "
                             f"({num_frames} frames, {sampling} sampling, stride {stride})",
                             "use a longer clip, fewer frames (--frames) or a smaller stride"))
    if e.fps is None and e.source_fps is None:
        probs.append(Problem(e.where, "frame rate unknown (frame folders carry none)",
                             "add \"fps\": N to the entry", fatal=False))
    if e.image is not None:
        try:
            with Image.open(e.image) as im:
                mode = im.mode
            img = read_image(e.image)
        except (MediaError, OSError) as err:
            probs.append(Problem(e.where, f"image {err}", "replace the image, or drop 'image' to use the "
                                 "video's first frame"))
        else:
            if mode not in ("RGB",):
                probs.append(Problem(e.where, f"image {e.image.name} is mode {mode}; converted to 8-bit RGB",
                                     "save it as 8-bit RGB to silence this", fatal=False))
            if img.shape[:2] != tuple(e.size):
                probs.append(Problem(e.where, f"image {e.image.name} is {img.shape[1]}x{img.shape[0]} but "
                                     f"video {e.video.name} is {e.size[1]}x{e.size[0]}",
                                     "the image should be the clip's first frame: export it at the video's "
                                     "size, or drop 'image' to use the first frame"))
    return probs


def check_manifest(path: str | Path, num_frames: int = 16, sampling: str = "consecutive", stride: int = 1,
                   allow_outside: bool = False, decode: bool = True):
    """Parse and check every entry. Returns ``(good_entries, problems)``;
    an entry is good when it has no fatal problem (warnings may remain)."""
    entries, problems = parse_manifest(path, allow_outside)
    good = []
    for e in entries:
        p = check_entry(e, num_frames, sampling, stride, decode)
        problems += p
        if not any(x.fatal for x in p):
            good.append(e)
    return good, sorted(problems, key=_entry_number)


def motion_stats(entries: list[ClipEntry], num_frames: int) -> dict[str, float]:
    """``{"min", "mean", "max"}`` over the entries of the optical-flow motion (px / frame,
    :func:`~i2v_helpers.motion.motion_score`) of each video's first ``num_frames`` frames:
    ``i2v data check --motion``, a look at how much a set moves before training on it."""
    scores = [motion_score(read_video(e.video)[0][:num_frames]) for e in entries]
    return {"min": float(min(scores)), "mean": float(np.mean(scores)), "max": float(max(scores))}


def _entry_number(p: Problem) -> int:
    parts = p.where.split()
    return int(parts[1]) if len(parts) > 1 and parts[0] == "entry" and parts[1].isdigit() else -1


class InvalidManifest(ValueError):
    """Raised by the dataset when entries are bad and ``skip_invalid`` is off."""

    def __init__(self, path, problems):
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems if p.fatal)
        super().__init__(f"{path}: {sum(p.fatal for p in problems)} bad entries:\n{lines}\n"
                         f"Fix them (`i2v data check {path}` lists them all), or drop them with "
                         "VideoClipDataset(..., skip_invalid=True).")


# ------------------------------------------------------------------ one clip as training sees it

def prepare_clip(e: ClipEntry, num_frames: int, size: tuple[int, int] | None, sampling: str = "consecutive",
                 stride: int = 1, start: int | None = 0, crop: str = "center", hflip: float = 0.0,
                 rng: np.random.Generator | None = None, default_fps: float = DEFAULT_FPS) -> dict:
    """One entry as training sees it: what :class:`VideoClipDataset` trains on and evaluation
    scores against.

    Returns ``{"image": uint8 (H, W, 3), "video": uint8 (F, H, W, 3), "fps": float,
    "motion_bucket_id": float, "objects": list | None}`` with ``F = num_frames`` and
    ``(H, W) = size`` (``None``: the video's own size). The frames are sampled by
    :func:`~i2v_helpers.frames.sample_frame_indices` (``start`` ``None``: random), resized to
    cover ``size`` and cropped (:func:`~i2v_helpers.frames.crop_box`,
    :func:`~i2v_helpers.frames.resize_crop`); the image is the manifest's ``image``
    through the same box, else the first sampled frame; with probability ``hflip`` both are
    mirrored. ``fps`` and ``motion_bucket_id`` follow :mod:`i2v_helpers.conditioning` (the
    bucket from the prepared frames); ``objects`` is the entry's ground truth mapped onto the
    clip (:func:`~i2v_helpers.frames.objects_in_clip`). ``rng`` draws the start, the crop and the flip, in that order.
    """
    rng = rng if rng is not None else np.random.default_rng()
    try:
        video, container_fps = read_video(e.video)
    except MediaError as err:  # changed on disk since the check
        raise MediaError(f"{e.where}: {err}") from err
    idx = sample_frame_indices(len(video), num_frames, sampling, stride, start, rng)
    clip = video[idx]
    fps = clip_fps(e.fps, container_fps or default_fps, idx, sampling, stride)
    src_size = clip.shape[1:3]
    size = tuple(size) if size is not None else src_size
    box = crop_box(*src_size, size, crop, rng)
    clip = resize_crop(clip, size, box)
    image = resize_crop(read_image(e.image)[None], size, box)[0] if e.image is not None else clip[0]
    flipped = bool(hflip) and rng.uniform() < hflip
    if flipped:
        clip, image = clip[:, :, ::-1], image[:, ::-1]
    return {"image": np.ascontiguousarray(image), "video": np.ascontiguousarray(clip), "fps": fps,
            "motion_bucket_id": clip_motion_bucket(e.motion_bucket_id, clip),
            "objects": objects_in_clip(e.objects, idx, src_size, size, box, flipped)}


# ------------------------------------------------------------------ the dataset

class VideoClipDataset(torch.utils.data.Dataset):
    """(first frame, clip) pairs from a manifest, every entry checked at construction.

    Each item is a dict: ``image`` ``(3, H, W)`` and ``video`` ``(F, 3, H, W)`` in [-1, 1],
    ``prompt`` (str), ``fps`` (float: the sampled clip's frame rate, source fps / stride),
    ``motion_bucket_id`` (float: from the manifest, else from optical flow), ``index``.

    Args:
        manifest: path of a .jsonl/.json/.csv manifest.
        num_frames: frames per clip (16 as in the seed; SVD uses 14, SVD-xt 25).
        size: output (H, W) or one int for squares.
        sampling: "consecutive" (``stride`` apart) or "spread" (evenly over the clip).
        random_start: consecutive clips start at a random frame (only for entries
            without an explicit ``image``, which must stay the first frame).
        crop: "center" or "random"; hflip: probability of a horizontal flip (flipping
            reverses horizontal motion: leave it 0 when direction carries meaning).
        skip_invalid: drop bad entries (listed in ``self.problems``) instead of raising.
        decode_check: decode every frame when checking (catches truncated files).
    """

    def __init__(self, manifest, num_frames: int = 16, size: int | tuple[int, int] = 64,
                 sampling: str = "consecutive", stride: int = 1, random_start: bool = False,
                 crop: str = "center", hflip: float = 0.0, skip_invalid: bool = False,
                 allow_outside: bool = False, decode_check: bool = True, default_fps: float = DEFAULT_FPS,
                 seed: int | None = None):
        self.manifest = Path(manifest)
        self.num_frames, self.sampling, self.stride = num_frames, sampling, stride
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.random_start, self.crop, self.hflip = random_start, crop, hflip
        self.default_fps = default_fps
        self.rng = np.random.default_rng(seed)
        if crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
        self.entries, self.problems = check_manifest(manifest, num_frames, sampling, stride, allow_outside,
                                                     decode_check)
        if any(p.fatal for p in self.problems) and not skip_invalid:
            raise InvalidManifest(manifest, self.problems)
        if not self.entries:
            raise InvalidManifest(manifest, self.problems or [Problem(str(manifest), "no usable entries", "")])

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def deterministic(self) -> bool:
        """True when an item depends only on its index (no random crop, flip or start)."""
        return self.crop == "center" and self.hflip == 0 and not self.random_start

    def fingerprint(self) -> str:
        """A hash of everything that decides the items: the manifest's text, each entry's media
        (path, size and modification time, so an edited file counts), and the frame count, size,
        sampling, stride, crop, flip, random start and default fps. Read at call time, so a
        trimmed ``entries`` list counts too. What the encoded-clip cache keys its files on
        (:class:`~i2v_helpers.encoded.EncodedClips`): equal fingerprints, equal items."""
        h = hashlib.sha256(self.manifest.read_bytes())
        for e in self.entries:
            for f in (e.video, e.image):
                if f is not None:
                    st = f.stat()
                    h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
        h.update(json.dumps([self.num_frames, self.size, self.sampling, self.stride, self.crop, self.hflip,
                             self.random_start, self.default_fps]).encode())
        return h.hexdigest()

    def __getitem__(self, i: int) -> dict:
        e = self.entries[i]
        start = None if (self.random_start and e.image is None) else 0
        item = prepare_clip(e, self.num_frames, self.size, self.sampling, self.stride, start, self.crop, self.hflip,
                            self.rng, self.default_fps)
        return {"image": to_model_range(item["image"]), "video": to_model_range(item["video"]), "prompt": e.prompt,
                "fps": item["fps"], "motion_bucket_id": item["motion_bucket_id"], "index": i}


def summarize(entries: list[ClipEntry], problems: list[Problem]) -> dict:
    """Numbers for ``i2v data check``'s summary table."""
    frames = [e.num_frames for e in entries]
    fps = sorted({round(e.fps or e.source_fps, 2) for e in entries if (e.fps or e.source_fps)})
    sizes = sorted({f"{e.size[1]}x{e.size[0]}" for e in entries})
    return {"good entries": len(entries), "bad entries": len({p.where for p in problems if p.fatal}),
            "warnings": sum(not p.fatal for p in problems),
            "frames min/max": f"{min(frames)}/{max(frames)}" if frames else "-",
            "sizes": ", ".join(sizes) or "-", "fps": ", ".join(map(str, fps)) or "-",
            "with image": sum(e.image is not None for e in entries),
            "with motion_bucket_id": sum(e.motion_bucket_id is not None for e in entries)}

