"""Reading and writing videos and images.

Videos are ``uint8`` arrays of shape ``(F, H, W, 3)`` (RGB). Containers (mp4, webm,
gif, ...) are decoded with PyAV; a folder of numbered images is a video too. Errors
are :class:`MediaError` with a message that names the file and the fix.

Introduced in notebook 05 (dataset).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from .conditioning import DEFAULT_FPS
from .frames import float01_to_uint8

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".gif", ".mov", ".mkv", ".avi"}


class MediaError(ValueError):
    """A video or image file that cannot be used; the message says why and how to fix it."""


def to_rgb_uint8(img: Image.Image | np.ndarray, where: str = "image") -> np.ndarray:
    """Any PIL image mode (L, LA, P, RGBA, I;16, ...) or array → ``uint8`` ``(H, W, 3)``.

    16-bit images are scaled down to 8 bits; alpha is composited over black.
    """
    if isinstance(img, np.ndarray):
        arr = img
    else:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            top = 65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0
            arr = (arr / top * 255).round().clip(0, 255).astype(np.uint8)
        elif img.mode == "F":
            arr = float01_to_uint8(np.asarray(img, dtype=np.float64))
        else:
            if img.mode in ("P", "PA"):
                img = img.convert("RGBA")
            if img.mode in ("RGBA", "LA"):
                rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
                arr = (rgba[..., :3] * (rgba[..., 3:] / 255.0)).round().astype(np.uint8)
            else:
                arr = np.asarray(img.convert("RGB"))
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 65535 * 255).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.dtype != np.uint8:
        raise MediaError(f"{where}: unsupported pixel layout {arr.shape} {arr.dtype}; "
                         "save it as an 8-bit RGB PNG or JPEG")
    return np.ascontiguousarray(arr[..., :3])


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``uint8`` RGB ``(H, W, 3)``, whatever its mode."""
    path = Path(path)
    _require_file(path)
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb_uint8(im, str(path))
    except MediaError:
        raise
    except Exception as e:  # PIL raises many types for broken files
        raise MediaError(f"{path}: not a readable image ({type(e).__name__}: {e}); "
                         "re-export it as PNG or JPEG") from e


def _frame_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MediaError(f"{folder}: folder holds no frame images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _video_stream(container, path: Path):
    """The first video stream and its frame rate; a clear error when the file has none."""
    if not container.streams.video:
        raise MediaError(f"{path}: has no video stream; give a video file (mp4, webm, gif) or a frame folder")
    s = container.streams.video[0]
    return s, (float(s.average_rate) if s.average_rate else None)


def _require_file(path: Path):
    if not path.is_file():
        raise MediaError(f"{path}: file not found; check the path (relative paths start at the manifest's folder)")


def probe_video(path: str | Path) -> dict:
    """Cheap metadata without decoding every frame: ``frames``, ``fps``, ``width``, ``height``.

    ``frames`` comes from the container and may be 0 (unknown) for some files.
    """
    import av

    path = Path(path)
    if path.is_dir():
        files = _frame_files(path)
        w, h = Image.open(files[0]).size
        return {"frames": len(files), "fps": None, "width": w, "height": h}
    _require_file(path)
    try:
        with av.open(str(path)) as c:
            s, fps = _video_stream(c, path)
            return {"frames": int(s.frames or 0), "fps": fps, "width": s.codec_context.width,
                    "height": s.codec_context.height}
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(f"{path}: not a readable video ({type(e).__name__}: {e}); "
                         "re-encode it, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4") from e


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float | None]:
    """Decode a whole video (or a folder of frame images) → (``uint8`` ``(F, H, W, 3)``, fps).

    fps is read from the container (``None`` for frame folders). Decoding errors part-way
    through (truncated files) raise :class:`MediaError`, never return a half clip silently.
    Decodes with PyAV; where PyAV is not installed (the GPU build machine), with OpenCV.
    """
    path = Path(path)
    if path.is_dir():
        frames = [read_image(f) for f in _frame_files(path)[:max_frames]]
        if len({f.shape for f in frames}) > 1:
            raise MediaError(f"{path}: frame images have different sizes; resize them to one size")
        return np.stack(frames), None
    _require_file(path)
    try:
        import av
    except ImportError:
        return _read_video_opencv(path, max_frames)
    frames = []
    try:
        with av.open(str(path)) as c:
            s, fps = _video_stream(c, path)
            for frame in c.decode(s):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames and len(frames) >= max_frames:
                    break
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(f"{path}: not a readable video ({type(e).__name__}: {e}); the file may be corrupt or "
                         "truncated: re-encode it, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4") from e
    if not frames:
        raise MediaError(f"{path}: no frames could be decoded; the file is empty, truncated or not a video")
    return np.stack(frames), fps


def _read_video_opencv(path: Path, max_frames: int | None) -> tuple[np.ndarray, float | None]:
    """:func:`read_video` without PyAV: OpenCV's FFmpeg reader (colours may differ by a rounding step)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or None
    frames = []
    while not max_frames or len(frames) < max_frames:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise MediaError(f"{path}: no frames could be decoded (OpenCV); install PyAV (pip install av) or re-encode it")
    return np.stack(frames), fps


def write_video(path: str | Path, frames: np.ndarray, fps: float = DEFAULT_FPS, quality: int = 18) -> Path:
    """Write ``uint8`` ``(F, H, W, 3)`` frames as mp4 (H.264, yuv420p), webm, gif or a frame folder.

    The file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    import av

    path = Path(path)
    frames = float01_to_uint8(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == "":  # frame folder
        path.mkdir(exist_ok=True)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(path / f"{i:04d}.png")
        return path
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if suffix == ".gif":
        imgs = [Image.fromarray(f) for f in frames]
        imgs[0].save(tmp, save_all=True, append_images=imgs[1:], duration=int(round(1000 / fps)), loop=0)
    else:
        codec = "libvpx-vp9" if suffix == ".webm" else "libx264"
        h, w = frames.shape[1:3]
        with av.open(str(tmp), mode="w") as c:
            # PyAV wants an int or a Fraction: 25 / 4 = 6.25 fps → Fraction(25, 4); NTSC 29.97 → 30000/1001
            s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            s.width, s.height = w + w % 2, h + h % 2
            s.pix_fmt = "yuv420p"
            if codec == "libx264":
                s.options = {"crf": str(quality), "preset": "medium"}
            for f in frames:
                if w % 2 or h % 2:
                    f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    c.mux(packet)
            for packet in s.encode():
                c.mux(packet)
    tmp.replace(path)
    return path
