"""Optical flow and motion scores (OpenCV Farnebäck), and SVD's motion bucket from data.

SVD conditions on a ``motion_bucket_id`` (0..255, 127 by default) but publishes no
recipe for deriving it from a clip. Here it is a documented linear map of the clip's
mean optical-flow magnitude, in percent of the frame width per frame, so it does not
depend on resolution: ``bucket = clip(round(BUCKET_PER_PERCENT * percent), 0, 255)``.
With BUCKET_PER_PERCENT = 50, a motion of 2.5 % of the width per frame gives 125.

Introduced in notebook 05 (dataset); the flow metrics in notebook 08 build on it.
"""

from __future__ import annotations

import cv2
import numpy as np

from .frames import float01_to_uint8

BUCKET_PER_PERCENT = 50.0
CHANGE_THRESHOLD = 2  # grey levels: smaller frame differences are compression noise


def _grey(frame: np.ndarray) -> np.ndarray:
    frame = float01_to_uint8(frame)
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame


def optical_flow(video: np.ndarray) -> np.ndarray:
    """Dense Farnebäck flow between consecutive frames.

    ``video`` ``uint8`` ``(F, H, W, 3)`` → ``float32`` ``(F-1, H, W, 2)`` in pixels per frame
    (x right, y down). Parameters are tuned for small (64 px) frames. Flow is zeroed where
    nothing changes nearby, so a static clip has exactly zero flow.
    """
    grey = [_grey(f) for f in video]
    h, w = grey[0].shape
    levels = max(1, int(np.log2(min(h, w) / 16)))
    flows = []
    for a, b in zip(grey[:-1], grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=levels, winsize=9, iterations=3,
                                            poly_n=5, poly_sigma=1.1, flags=0)
        # Farnebäck reports up to ~0.4 px of spurious flow between identical frames: keep flow
        # only where the picture changes somewhere within a 7×7 neighbourhood.
        changed = cv2.dilate((cv2.absdiff(a, b) > CHANGE_THRESHOLD).astype(np.uint8), np.ones((7, 7), np.uint8))
        flows.append(flow * changed[..., None])
    return np.stack(flows).astype(np.float32)


def motion_score(video: np.ndarray) -> float:
    """Mean optical-flow magnitude of a clip, in pixels per frame (0 for a static clip)."""
    if len(video) < 2:
        return 0.0
    return float(np.linalg.norm(optical_flow(video), axis=-1).mean())


def motion_bucket(score_px: float, width: int) -> int:
    """SVD ``motion_bucket_id`` for a clip moving ``score_px`` pixels per frame at ``width`` px."""
    return int(np.clip(round(BUCKET_PER_PERCENT * 100.0 * score_px / width), 0, 255))
