"""Pictures of clips for previews, notebooks and reports (pure numpy; plotting stays in notebooks).

Introduced in notebook 05 (dataset).
"""

from __future__ import annotations

import numpy as np


def clip_strip(clip: np.ndarray, every: int = 1, gap: int = 2) -> np.ndarray:
    """``uint8`` ``(F, H, W, 3)`` → one row ``(H, W', 3)`` of every ``every``-th frame, white gaps."""
    frames = list(clip[::every])
    h = frames[0].shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    row = [x for f in frames for x in (f, sep)][:-1]
    return np.concatenate(row, axis=1)


def clip_grid(clips: list[np.ndarray], every: int = 2, gap: int = 2) -> np.ndarray:
    """Stack :func:`clip_strip` rows of several clips (same shapes) into one image."""
    rows = [clip_strip(c, every, gap) for c in clips]
    sep = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([x for r in rows for x in (r, sep)][:-1], axis=0)


def side_by_side(*clips: np.ndarray, gap: int = 2) -> np.ndarray:
    """Clips ``(F, H, W, 3)`` placed next to each other, frame by frame → ``(F, H, W*n + gaps, 3)``.

    A single image ``(H, W, 3)`` is repeated over the frames (e.g. the input image)."""
    f = max(len(c) for c in clips if c.ndim == 4)
    clips = [np.repeat(c[None], f, 0) if c.ndim == 3 else c[:f] for c in clips]
    h = clips[0].shape[1]
    sep = np.full((f, h, gap, 3), 255, np.uint8)
    return np.concatenate([x for c in clips for x in (c, sep)][:-1], axis=2)


def setup_mediapy():
    """Let ``mediapy.show_video`` work without a system ffmpeg: point it at the binary that
    the ``imageio-ffmpeg`` package (in the ``course`` extra) ships. Returns the ffmpeg path."""
    import shutil

    import mediapy

    path = shutil.which("ffmpeg")
    if path is None:
        import imageio_ffmpeg

        path = imageio_ffmpeg.get_ffmpeg_exe()
        mediapy.set_ffmpeg(path)
    return path
