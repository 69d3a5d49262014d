"""Video metrics computed from the frames alone (no downloads).

All take ``uint8`` clips ``(F, H, W, 3)``. Motion metrics compare dense optical flow
(:func:`i2v_helpers.motion.optical_flow`) of a generated clip with the ground truth:

* ``flow_cosine``: cosine similarity of the two whole flow fields (frames × pixels × xy,
  flattened). 1 = same motion pattern, 0 = unrelated or no motion, < 0 = opposite.
* ``flow_epe``: mean end-point error |flow_gen - flow_gt| in px / frame (lower is better).
  A static clip scores the ground truth's own mean flow magnitude.
* ``motion_ratio``: mean flow magnitude of generated / ground truth (1 = same amount).

PSNR is per frame against the ground truth; it barely separates models on motion (a
static copy of the first frame scores well), which is why the motion metrics exist.

Introduced in notebook 08 (evaluation); the tiny model's quality bar uses them first.
"""

from __future__ import annotations

import numpy as np

from .motion import optical_flow

MIN_FLOW = 0.05  # px / frame: smaller flow vectors are estimator noise and count as 0


def clean_flow(flow: np.ndarray) -> np.ndarray:
    """Zero the flow vectors shorter than MIN_FLOW (Farnebäck returns ~1e-3 on identical frames)."""
    return np.where(np.linalg.norm(flow, axis=-1, keepdims=True) < MIN_FLOW, 0.0, flow)


def flow_cosine(flow_gen: np.ndarray, flow_gt: np.ndarray) -> float:
    a, b = flow_gen.reshape(-1).astype(np.float64), flow_gt.reshape(-1).astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 1e-9 and nb > 1e-9 else 0.0


def flow_epe(flow_gen: np.ndarray, flow_gt: np.ndarray) -> float:
    return float(np.linalg.norm(flow_gen - flow_gt, axis=-1).mean())


def psnr(gen: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-frame PSNR in dB of two ``uint8`` clips."""
    err = ((gen.astype(np.float64) - gt.astype(np.float64)) / 255.0) ** 2
    mse = err.reshape(len(gen), -1).mean(1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-10))))


def motion_metrics(gen: np.ndarray, gt: np.ndarray) -> dict:
    """``{flow_cosine, flow_epe, motion_ratio, psnr}`` of a generated clip against the truth."""
    n = min(len(gen), len(gt))
    fg, ft = clean_flow(optical_flow(gen[:n])), clean_flow(optical_flow(gt[:n]))
    mag_gt = np.linalg.norm(ft, axis=-1).mean()
    return {"flow_cosine": flow_cosine(fg, ft), "flow_epe": flow_epe(fg, ft),
            "motion_ratio": float(np.linalg.norm(fg, axis=-1).mean() / max(mag_gt, 1e-9)),
            "psnr": psnr(gen[:n], gt[:n])}


def repeat_first_frame(gt: np.ndarray) -> np.ndarray:
    """The baseline every image-to-video model must beat: the first frame, repeated."""
    return np.repeat(gt[:1], len(gt), axis=0)
