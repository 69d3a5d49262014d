"""Operations on frames, the same wherever frames are prepared: which frames to take from a
clip, the cover-resize and crop that training, evaluation, generation and ``i2v data
prepare`` share, the conversions between ``uint8`` pixels and the model's [-1, 1] range (and
[0, 1] floats to ``uint8``), and a clip's object ground truth carried through a crop.

Frames are ``uint8`` ``(F, H, W, 3)`` (RGB) unless a function says otherwise. torch is
imported only by :func:`to_model_range`, which needs it: ``motion`` and ``video_io`` use this
module and stay importable without torch (``i2v --help`` loads them).

Introduced in notebook 05 (dataset).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch


def sample_frame_indices(total: int, num_frames: int, sampling: str = "consecutive", stride: int = 1,
                         start: int | None = 0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices of the frames to take from a ``total``-frame clip.

    ``consecutive``: ``num_frames`` frames ``stride`` apart from ``start`` (``None``: random
    start). ``spread``: ``num_frames`` frames evenly over the whole clip.
    """
    if sampling == "spread":
        return np.linspace(0, total - 1, num_frames).round().astype(int)
    if sampling != "consecutive":
        raise ValueError(f"sampling must be 'consecutive' or 'spread', got {sampling!r}")
    span = (num_frames - 1) * stride + 1
    if span > total:
        raise ValueError(f"{total} frames cannot give {num_frames} frames at stride {stride}")
    if start is None:
        start = int((rng or np.random.default_rng()).integers(0, total - span + 1))
    return start + stride * np.arange(num_frames)


def crop_box(h: int, w: int, size: tuple[int, int], mode: str = "center",
             rng: np.random.Generator | None = None) -> tuple[float, int, int]:
    """``(scale, top, left)``: resize by ``scale`` so the frame covers ``size`` (H, W), then crop."""
    th, tw = size
    scale = max(th / h, tw / w)
    rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))
    if mode == "center":
        return scale, (rh - th) // 2, (rw - tw) // 2
    if mode == "random":
        rng = rng or np.random.default_rng()
        return scale, int(rng.integers(0, rh - th + 1)), int(rng.integers(0, rw - tw + 1))
    raise ValueError(f"crop must be 'center' or 'random', got {mode!r}")


def resize_crop(frames: np.ndarray, size: tuple[int, int], box: tuple[float, int, int]) -> np.ndarray:
    """``uint8`` ``(F, H, W, 3)`` → ``(F, size[0], size[1], 3)`` with the given box (area resampling)."""

    scale, top, left = box
    h, w = frames.shape[1:3]
    rh, rw = max(size[0], round(h * scale)), max(size[1], round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    out = [cv2.resize(f, (rw, rh), interpolation=interp)[top:top + size[0], left:left + size[1]] for f in frames]
    return np.stack(out)


def to_model_range(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8`` ``(..., H, W, 3)`` (an array, or a tensor on any device) → float ``(..., 3, H, W)`` in [-1, 1]."""
    import torch

    x = frames if torch.is_tensor(frames) else torch.from_numpy(np.require(frames, requirements=["C", "W"]))
    return x.float().div(127.5).sub(1).movedim(-1, -3)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float ``(..., 3, H, W)`` in [-1, 1] → ``uint8`` ``(..., H, W, 3)``."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().movedim(-3, -1).cpu().numpy()


def float01_to_uint8(x) -> np.ndarray:
    """An array of floats in [0, 1] (any shape; values outside are clamped) → ``uint8`` 0..255,
    rounded; a ``uint8`` array is returned as it is."""
    arr = np.asarray(x)
    return arr if arr.dtype == np.uint8 else (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)


def objects_in_clip(objects: list[dict] | None, indices: np.ndarray, src_size: tuple[int, int],
                    size: tuple[int, int], box: tuple[float, int, int], flipped: bool = False) -> list[dict] | None:
    """A manifest's ``objects`` ground truth (per source frame, source pixels) mapped onto a clip
    prepared from source frames ``indices`` ``(F,)`` of size ``src_size`` (H, W) by ``box`` to
    ``size`` (:func:`resize_crop`), mirrored if ``flipped``: per clip frame, the centroid in the
    clip's pixels (``None`` where it falls outside the crop) and the area scaled with the resize."""
    if objects is None:
        return None
    scale, top, left = box
    rh, rw = max(size[0], round(src_size[0] * scale)), max(size[1], round(src_size[1] * scale))
    sy, sx = rh / src_size[0], rw / src_size[1]
    out = []
    for o in objects:
        cents = []
        for i in indices:
            c = o["centroid"][i]
            x, y = (None, None) if c is None else ((c[0] + 0.5) * sx - 0.5 - left, (c[1] + 0.5) * sy - 0.5 - top)
            inside = c is not None and -0.5 <= x <= size[1] - 0.5 and -0.5 <= y <= size[0] - 0.5
            cents.append([size[1] - 1 - x if flipped else x, y] if inside else None)
        out.append({**o, "centroid": cents, "area": [o["area"][i] * sx * sy for i in indices]})
    return out
