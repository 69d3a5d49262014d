"""SVD's micro-conditioning of a clip, in one place: the frame rate and the motion bucket.

SVD conditions every clip on ``added_time_ids = [fps - 1, motion_bucket_id, noise_aug]``
(:func:`i2v_helpers.objective.added_time_ids`). A model is asked at sampling time for
what it learned only if training, validation, evaluation and ``i2v sample`` derive these
numbers the same way, so they all take them from here:

* **fps** (:func:`clip_fps`): the manifest's ``fps``, else the container's frame rate,
  else ``DEFAULT_FPS``; divided by the stride for consecutive sampling (frames ``stride``
  apart play ``stride`` times faster), or scaled by the span for spread sampling. Never
  rounded: 12.5 fps stays 12.5.
* **motion bucket** (:func:`clip_motion_bucket`): the manifest's ``motion_bucket_id``,
  else derived from the optical flow of the clip *as prepared* (resized and cropped to the
  model's size, :func:`i2v_helpers.data.prepare_clip`) by :func:`i2v_helpers.motion.motion_bucket`.

``DEFAULT_FPS`` (7) and ``DEFAULT_MOTION_BUCKET`` (127) are the diffusers pipeline's own
defaults: what a bare image with no clip behind it (``i2v sample``) is generated with.

Introduced in notebook 05 (dataset); notebook 08 (evaluation) relies on it.
"""

from __future__ import annotations

import numpy as np

from .motion import motion_bucket, motion_score

DEFAULT_FPS = 7.0
DEFAULT_MOTION_BUCKET = 127.0


def clip_fps(entry_fps: float | None, container_fps: float | None, indices: np.ndarray,
             sampling: str = "consecutive", stride: int = 1) -> float:
    """Frame rate of the clip made of source frames ``indices`` (``(F,)`` ints).

    ``entry_fps`` (the manifest's) wins over ``container_fps``; with neither, ``DEFAULT_FPS``.
    """
    src = entry_fps or container_fps or DEFAULT_FPS
    if sampling == "consecutive":
        return float(src / stride)
    return float(src * (len(indices) - 1) / max(1, int(indices[-1] - indices[0])))


def clip_motion_bucket(entry_bucket: float | None, clip: np.ndarray) -> float:
    """The manifest's ``motion_bucket_id``, else the bucket of ``clip``'s optical flow
    (``uint8`` ``(F, H, W, 3)``, the frames the model sees)."""
    if entry_bucket is not None:
        return float(entry_bucket)
    return float(motion_bucket(motion_score(clip), clip.shape[2]))
