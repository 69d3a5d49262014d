"""Pictures of clips for previews, notebooks and reports, and the live loss plot of notebook 06.

Introduced in notebook 05 (dataset).
"""

from __future__ import annotations

import shutil

import numpy as np

from .metrics import beyond_two_se


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


def frame_strips(rows: dict[str, np.ndarray], frames=(0, 3, 6, 9, 12, 15), size: float = 1.3,
                 title: str | None = None):
    """Labelled frame strips: one row per clip (``{label: uint8 (F, H, W, 3)}``, e.g. real | model), the
    chosen frame numbers on top, each frame drawn ``size`` inches wide with nearest-neighbour pixels (a 64 px
    frame stays sharp). A frame number past a clip's end leaves that cell empty. Returns the matplotlib figure.
    The one picture the notebooks use wherever the text talks about frames."""
    import matplotlib.pyplot as plt

    frames = list(frames)
    fig, axes = plt.subplots(len(rows), len(frames), squeeze=False,
                             figsize=(size * len(frames) + 1.2, size * len(rows) + (0.5 if title else 0.25)))
    for r, (label, clip) in enumerate(rows.items()):
        for c, f in enumerate(frames):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if f < len(clip):
                ax.imshow(clip[f], interpolation="nearest")
            if r == 0:
                ax.set_title(f"frame {f}", fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")
    top = 1.0
    if title:
        fig.suptitle(title, fontsize=10)
        top = 1 - 0.3 / fig.get_figheight()  # room for the title above the frame numbers
    fig.tight_layout(pad=0.3, w_pad=0.1, h_pad=0.2, rect=(0, 0, 1, top))
    return fig


def paired_plot(diffs: dict, title: str | None = None, width: float = 2.4):
    """Paired differences with their error bars: one panel per metric, one row per comparison
    (``{"b - a": {metric: (mean, SE, clips)}}``, :func:`i2v_helpers.evaluation.paired_differences`),
    a dot at the mean difference and a bar of ± 2 SE, a line at 0. A bar clear of 0 is a difference
    beyond two standard errors (the course's "significant"); the clip count is in each label.
    Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(k for d in diffs.values() for k in d))
    rows = list(diffs)
    fig, axes = plt.subplots(1, len(metrics), squeeze=False, sharey=True,
                             figsize=(width * len(metrics) + 1.5, 0.45 * len(rows) + 1.0))
    for ax, k in zip(axes[0], metrics):
        for y, name in enumerate(rows):
            if k not in diffs[name]:
                continue
            d, se, n = diffs[name][k]
            clear = beyond_two_se(d, se, n)
            ax.errorbar(d, y, xerr=2 * se if n > 1 else None, fmt="o", capsize=3,
                        color="tab:red" if clear else "tab:gray")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(k, fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0, 0].set_yticks(range(len(rows)))
    axes[0, 0].set_yticklabels([f"{r} ({max(v[2] for v in diffs[r].values()) if diffs[r] else 0} clips)"
                                for r in rows], fontsize=8)
    axes[0, 0].set_ylim(len(rows) - 0.5, -0.5)
    fig.suptitle(title or "paired difference, ± 2 SE over clips (red: clear of 0)", fontsize=10)
    fig.tight_layout()
    return fig


def setup_mediapy():
    """Let ``mediapy.show_video`` work without a system ffmpeg: point it at the binary that
    the ``imageio-ffmpeg`` package (in the ``course`` extra) ships. Returns the ffmpeg path."""

    import mediapy

    path = shutil.which("ffmpeg")
    if path is None:
        import imageio_ffmpeg

        path = imageio_ffmpeg.get_ffmpeg_exe()
        mediapy.set_ffmpeg(path)
    return path


class LiveTrainingPlot:
    """A :func:`i2v_helpers.training.train` callback that redraws the loss curve in a notebook
    while training runs, and keeps the validation videos it receives.

        plot = LiveTrainingPlot(every=10)
        result = train(cfg, callbacks=[plot])
        plot.videos            # {step: uint8 (F, H, W, 3)} of the first validation image

    Outside IPython it only records (``steps``, ``losses``, ``val_steps``, ``val_losses``).
    Introduced in notebook 06 (stage 1).
    """

    def __init__(self, every: int = 10, title: str = "training loss", smooth: int = 10):
        self.every, self.title, self.smooth = every, title, smooth
        self.steps, self.losses, self.val_steps, self.val_losses = [], [], [], []
        self.videos: dict[int, np.ndarray] = {}
        try:
            from IPython import get_ipython
            from IPython.display import Markdown, display

            self.handle = display(Markdown(f"*{title}: waiting for step {every}...*"), display_id=True) \
                if get_ipython() is not None else None
        except ImportError:
            self.handle = None

    def __call__(self, event: str, info: dict) -> None:
        if event == "step":
            self.steps.append(info["step"])
            self.losses.append(info["loss"])
            if info["step"] % self.every == 0:
                self.draw()
        elif event == "val":
            self.val_steps.append(info["step"])
            self.val_losses.append(info["val_loss"])
            self.draw()
        elif event == "video" and info["path"].endswith("_0.mp4"):
            self.videos[info["step"]] = info["frames"]

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(self.steps, self.losses, color="tab:blue", alpha=0.3, label="train (per step)")
        if len(self.losses) >= self.smooth:
            k = np.ones(self.smooth) / self.smooth
            ax.plot(self.steps[self.smooth - 1:], np.convolve(self.losses, k, "valid"), color="tab:blue",
                    label=f"train ({self.smooth}-step mean)")
        if self.val_steps:
            ax.plot(self.val_steps, self.val_losses, "o-", color="tab:orange", label="validation")
        ax.set(xlabel="step", ylabel="EDM loss", title=self.title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        plt.close(fig)
        return fig

    def draw(self) -> None:
        if self.handle is not None and self.steps:
            self.handle.update(self.figure())
