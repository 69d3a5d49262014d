"""Video metrics computed from the frames alone (no downloads).

All take ``uint8`` clips ``(F, H, W, 3)``. Motion metrics compare dense optical flow
(:func:`i2v_helpers.motion.optical_flow`) of a generated clip with the ground truth:

* ``flow_cosine``: cosine similarity of the two whole flow fields (frames × pixels × xy,
  flattened). 1 = same motion pattern, 0 = unrelated or no motion, < 0 = opposite.
* ``flow_epe``: mean end-point error |flow_gen - flow_gt| in px / frame (lower is better).
  A static clip scores the ground truth's own mean flow magnitude.
* ``motion_ratio``: mean flow magnitude of generated / ground truth (1 = same amount); NaN
  (undefined, left out of means and paired differences) when the truth is still, its mean flow
  below ``STILL_TRUTH``: a ratio to nothing would swamp any average.
* ``moving_epe`` and ``static_flow`` split ``flow_epe`` by where the truth moves: the
  end-point error over the pixels whose true flow is non-zero (did the object move right?),
  and the mean generated flow magnitude over the pixels that are truly static (shimmer and
  drift that the flow estimator reads as motion). A small ball on a still court is ~10 % of
  the pixels, so whole-frame ``flow_epe`` and ``motion_ratio`` mostly measure the background.
* ``far_flow``: the part of ``static_flow`` that is far (> ``PATH_RADIUS`` px) from anywhere
  the truth moves in *any* frame: background shimmer and drift only. Still pixels on or next
  to the object's path count in ``static_flow`` too: a ball that flies the right path a
  frame late moves where the true ball is not (yet), and is charged twice, once in
  ``moving_epe`` and once in ``static_flow`` (the "double penalty" of point-wise scores),
  while a frozen frame is charged once. ``far_flow`` separates that from shimmer.

* ``warp_error``: flicker, the frame-to-frame change that motion does not explain: each
  frame is predicted from the next one warped back by their flow; the mean absolute
  residual (0..1). 0 for a static clip or a clean translation; high for shimmering noise.
* ``first_frame_psnr``: fidelity to the input image (dB), frame 0 against the image.

Object metrics use the ground truth that :mod:`i2v_helpers.synth` records for clips with
distinct objects (``meta["objects"]``, the manifests' ``objects`` field): each object's
fill colour and, per frame, its centroid and area. In a generated frame the object is
*found by colour* (:func:`find_object`): the pixels within an RGB distance of its colour,
split into 8-connected blobs. A blob less than half or more than twice the true area
(``AREA_RANGE``) is something else: a speck, a piece of the hoop (72 from the ball's
orange), or a background region of similar colour that the object merged into (the sky
behind a light-blue cartoon character is 32 away, but the black outline keeps them
apart). Of the rest, the blob nearest the true centroid is the object; so two objects of
one colour are told apart by position. The distances ``OBJECT_COLOUR_TOLS`` (40, 60, 80,
100) are tried tightest first until such a blob exists: a clean object is measured
exactly, while one whose colour the tiny model's VAE drifted by 50-100 (it desaturates
small objects) is still found.

* ``object_kept``: the fraction of frames where the object is found (so with ½–2× its
  true area), anywhere in the frame: there is no distance limit, so a frozen first frame
  can score 1.0 however far the real object moves (the repeated first frame does, on both of
  notebook 08's sets); where it is found is ``object_err_px``'s job.
* ``object_err_px``: distance in px between the found and the true centroid, mean over
  objects and frames; a frame where the object is not found counts as the frame's diagonal
  (90.5 px at 64×64), so losing an object is never better than misplacing it.

Frame 0 is not scored (it is the input image), nor frames where the truth shows less than
``MIN_VISIBLE`` (half) of the object's largest area in the clip (partly out of view or
behind another object). Clips without objects score NaN; the evaluation's means skip them.
On the shipped (H.264) videos themselves the truth scores ~0.3 px and 1.0; "repeat the
first frame" scores the object's true mean displacement from frame 0 (~31 px on the
basketball val clips).

PSNR and SSIM (scikit-image) are per frame against the ground truth, mean over frames
1..F-1: frame 0 is the conditioning image (``first_frame_psnr`` scores it), and counting it
would lift every model, and most of all the repeated first frame, whose frame 0 is exact
(PSNR capped at 100 dB there). They barely separate models on motion (a static copy of the
first frame scores well), which is why the motion metrics exist.

``METRIC_KEYS`` names every metric the evaluation reports, in its tables' order (the motion
ones ``MOTION_KEYS``, the object ones ``OBJECT_KEYS``), ``HIGHER_IS_BETTER`` which way is
better, and ``METRIC_MEANINGS`` what each measures in a line (:func:`describe_metrics`).

Introduced in notebook 08 (evaluation); the tiny model's quality bar uses them first.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .motion import optical_flow

MIN_FLOW = 0.05  # px / frame: smaller flow vectors are estimator noise and count as 0
STILL_TRUTH = 0.01  # px / frame: a true clip whose mean cleaned flow is below this is still (motion_ratio NaN)


def clean_flow(flow: np.ndarray) -> np.ndarray:
    """Zero the flow vectors shorter than MIN_FLOW (Farnebäck returns ~1e-3 on identical frames)."""
    return np.where(np.linalg.norm(flow, axis=-1, keepdims=True) < MIN_FLOW, 0.0, flow)


def flow_cosine(flow_gen: np.ndarray, flow_gt: np.ndarray) -> float:
    a, b = flow_gen.reshape(-1).astype(np.float64), flow_gt.reshape(-1).astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 1e-9 and nb > 1e-9 else 0.0


def flow_epe(flow_gen: np.ndarray, flow_gt: np.ndarray) -> float:
    return float(np.linalg.norm(flow_gen - flow_gt, axis=-1).mean())


PATH_RADIUS = 4  # px: still pixels this close to the true motion's path are not "far"


def region_flow(flow_gen: np.ndarray, flow_gt: np.ndarray) -> tuple[float, float, float]:
    """``(moving_epe, static_flow, far_flow)`` of flows ``(F-1, H, W, 2)``, already cleaned:
    the EPE where the truth moves, the generated flow magnitude where it does not, and that
    magnitude only over still pixels farther than ``PATH_RADIUS`` from every pixel that moves
    in any frame. 0.0 for an empty region."""
    moving = np.linalg.norm(flow_gt, axis=-1) > 0  # (F-1, H, W)
    err = np.linalg.norm(flow_gen - flow_gt, axis=-1)
    mag = np.linalg.norm(flow_gen, axis=-1)
    k = 2 * PATH_RADIUS + 1
    near_path = cv2.dilate(moving.any(0).astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    far = ~moving & ~near_path[None]

    def mean(x, where):
        return float(x[where].mean()) if where.any() else 0.0

    return mean(err, moving), mean(mag, ~moving), mean(mag, far)


def psnr(gen: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-frame PSNR in dB of two ``uint8`` clips ``(F, H, W, 3)``; an exact frame counts 100 dB."""
    err = ((gen.astype(np.float64) - gt.astype(np.float64)) / 255.0) ** 2
    mse = err.reshape(len(gen), -1).mean(1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-10))))


def ssim(gen: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-frame SSIM (scikit-image, colour, data range 255)."""
    from skimage.metrics import structural_similarity

    return float(np.mean([structural_similarity(a, b, channel_axis=-1, data_range=255) for a, b in zip(gen, gt)]))


def warp_error(clip: np.ndarray, flow: np.ndarray | None = None) -> float:
    """Flicker: mean |frame_t - warp(frame_t+1, flow_t)| / 255 over the clip (see module doc)."""
    flow = optical_flow(clip) if flow is None else flow
    h, w = clip.shape[1:3]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    errs = []
    for a, b, f in zip(clip[:-1], clip[1:], flow):
        back = cv2.remap(b, gx + f[..., 0], gy + f[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        errs.append(np.abs(a.astype(np.float32) - back.astype(np.float32)).mean() / 255.0)
    return float(np.mean(errs)) if errs else 0.0


def first_frame_psnr(gen: np.ndarray, image: np.ndarray) -> float:
    """PSNR (dB) of the generated first frame against the input image ``(H, W, 3)``."""
    return psnr(gen[:1], image[None])


def motion_metrics(gen: np.ndarray, gt: np.ndarray, image: np.ndarray | None = None) -> dict:
    """Every metric of a generated clip ``(F, H, W, 3)`` against the truth ``(F, H, W, 3)``:
    ``flow_cosine, flow_epe, motion_ratio, moving_epe, static_flow, far_flow, warp_error, psnr,
    ssim, first_frame_psnr``. ``psnr`` and ``ssim`` score frames 1..F-1 only: frame 0 is the
    condition, which ``first_frame_psnr`` scores against ``image`` ``(H, W, 3)``, the input
    image (default ``gt[0]``). ``motion_ratio`` is NaN when ``gt`` is still (see ``STILL_TRUTH``)."""
    n = min(len(gen), len(gt))
    raw = optical_flow(gen[:n])
    fg, ft = clean_flow(raw), clean_flow(optical_flow(gt[:n]))
    mag_gt = np.linalg.norm(ft, axis=-1).mean()
    ratio = float(np.linalg.norm(fg, axis=-1).mean() / mag_gt) if mag_gt >= STILL_TRUTH else float("nan")
    moving_epe, static_flow, far_flow = region_flow(fg, ft)
    return {"flow_cosine": flow_cosine(fg, ft), "flow_epe": flow_epe(fg, ft), "motion_ratio": ratio,
            "moving_epe": moving_epe, "static_flow": static_flow, "far_flow": far_flow,
            "warp_error": warp_error(gen[:n], raw), "psnr": psnr(gen[1:n], gt[1:n]), "ssim": ssim(gen[1:n], gt[1:n]),
            "first_frame_psnr": first_frame_psnr(gen, gt[0] if image is None else image)}


def repeat_first_frame(gt: np.ndarray) -> np.ndarray:
    """The baseline every image-to-video model must beat: the first frame, repeated."""
    return np.repeat(gt[:1], len(gt), axis=0)


# ------------------------------------------------------------------ objects

OBJECT_COLOUR_TOLS = (40.0, 60.0, 80.0, 100.0)  # RGB distances, tried tightest first (see the module doc)
MIN_VISIBLE = 0.5  # frames where the truth shows less of the object than this share of its largest area are skipped
AREA_RANGE = (0.5, 2.0)  # a blob outside this many times the true area is not the object


def colour_mask(frame: np.ndarray, colour, tol: float) -> np.ndarray:
    """``(H, W)`` bool: the pixels of ``frame`` ``(H, W, 3)`` ``uint8`` within RGB distance ``tol`` of ``colour``."""
    diff = frame.astype(np.float32) - np.asarray(colour, np.float32)
    return np.linalg.norm(diff, axis=-1) <= tol


def find_object(frame: np.ndarray, colour, near, area: float,
                tols=OBJECT_COLOUR_TOLS) -> tuple[np.ndarray | None, float]:
    """Find an object of fill ``colour`` and true ``area`` (px) in ``frame`` ``(H, W, 3)`` ``uint8``:
    ``(centroid [x, y], blob area in px)``, or ``(None, 0.0)``.

    Blobs are the 8-connected components of :func:`colour_mask`; those within ``AREA_RANGE``
    of ``area`` are candidates, and the one whose centroid is nearest ``near`` (the true ``[x, y]``)
    is the object. ``x`` is the column, ``y`` the row, pixel centres at integers. Each tolerance
    of ``tols`` is tried in turn, tightest first, until a candidate exists.
    """
    for tol in tols:
        _, _, stats, centroids = cv2.connectedComponentsWithStats(
            colour_mask(frame, colour, tol).astype(np.uint8), connectivity=8)
        sizes, centroids = stats[1:, cv2.CC_STAT_AREA].astype(float), centroids[1:]  # label 0 is the rest
        candidate = (sizes >= AREA_RANGE[0] * area) & (sizes <= AREA_RANGE[1] * area)
        if candidate.any():
            dist = np.where(candidate, np.linalg.norm(centroids - np.asarray(near, float), axis=1), np.inf)
            best = int(np.argmin(dist))
            return centroids[best], float(sizes[best])
    return None, 0.0


def object_metrics(gen: np.ndarray, objects: list[dict] | None) -> dict:
    """``{"object_err_px", "object_kept"}`` of a clip ``(F, H, W, 3)`` ``uint8`` against the true
    ``objects`` (``[{"colour", "centroid", "area"}]``, see :mod:`i2v_helpers.synth`), pooled over
    objects and frames 1.. (see the module doc). Both NaN when nothing is scored."""
    diagonal = math.hypot(*gen.shape[1:3])
    errs, kept = [], []
    for obj in objects or ():
        full = max(obj["area"])
        for f in range(1, min(len(gen), len(obj["area"]))):
            true_xy, true_area = obj["centroid"][f], obj["area"][f]
            if true_xy is None or true_area < MIN_VISIBLE * full:
                continue
            xy, _ = find_object(gen[f], obj["colour"], true_xy, true_area)
            errs.append(diagonal if xy is None else float(np.linalg.norm(xy - np.asarray(true_xy))))
            kept.append(xy is not None)
    if not errs:
        return {"object_err_px": math.nan, "object_kept": math.nan}
    return {"object_err_px": float(np.mean(errs)), "object_kept": float(np.mean(kept))}


# ------------------------------------------------------------------ the registry

# Every metric the evaluation reports (i2v_helpers.evaluation), in its tables' order, and which way is better
MOTION_KEYS = ("flow_cosine", "flow_epe", "motion_ratio", "moving_epe", "static_flow", "far_flow")
OBJECT_KEYS = ("object_err_px", "object_kept")  # NaN for clips without objects
METRIC_KEYS = MOTION_KEYS + OBJECT_KEYS + ("warp_error", "psnr", "ssim", "first_frame_psnr")
HIGHER_IS_BETTER = {"flow_cosine": True, "flow_epe": False, "motion_ratio": None, "moving_epe": False,
                    "static_flow": False, "far_flow": False, "object_err_px": False, "object_kept": True,
                    "warp_error": False, "psnr": True, "ssim": True, "first_frame_psnr": True}
# What each column of a comparison table measures (notebooks print it before the first table; the module doc)
METRIC_MEANINGS = {
    "flow_cosine": "does the generated optical flow point the same way as the real clip's (whole frame)",
    "flow_epe": "mean end-point error between generated and real flow, px/frame",
    "motion_ratio": "generated / real mean flow magnitude: above 1 moves too much, below 1 too little",
    "moving_epe": "flow error only where the real clip moves: did the object move right?",
    "static_flow": "generated flow where the real clip is still: shimmer and drift read as motion",
    "far_flow": "the same, only more than 4 px from anywhere the real clip moves: shimmer, not a late object",
    "object_err_px": "generated vs true object centre, px; a lost object counts as the frame diagonal "
                     "(clips with object ground truth only)",
    "object_kept": "share of frames where a blob of the true colour and size is found anywhere in the frame "
                   "(no distance limit: the place is object_err_px's job)",
    "warp_error": "flicker: change between frames that the video's own motion does not explain",
    "psnr": "per-frame pixel fidelity to the real clip, dB (frames 1.., frame 0 is the given image)",
    "ssim": "per-frame structural similarity to the real clip (frames 1..)",
    "first_frame_psnr": "does the video start from the input image, dB",
}


def describe_metrics(keys=METRIC_KEYS) -> str:
    """A line per metric: its name, which way is better, and what it measures (``METRIC_MEANINGS``)."""
    arrow = {True: "↑ higher is better", False: "↓ lower is better", None: "≈1 best at 1"}
    return "\n".join(f"{k:<17}{arrow[HIGHER_IS_BETTER[k]]:<20}{METRIC_MEANINGS[k]}" for k in keys)


def beyond_two_se(d: float, se: float, n: int) -> bool:
    """The course's "significant": a paired difference ``d`` further from 0 than two standard errors ``se``
    over ``n`` clips (never with one clip, whose SE is undefined)."""
    return n > 1 and abs(d) > 2 * se
