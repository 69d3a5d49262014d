"""viz.frame_strips: the labelled frame strips the notebooks show wherever the text talks about frames."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from i2v_helpers.viz import frame_strips  # noqa: E402


def _clip(frames, value_of):
    return np.stack([np.full((8, 8, 3), value_of(f), np.uint8) for f in range(frames)])


def test_each_cell_shows_its_rows_frame_under_its_number_and_label():
    real, model = _clip(16, lambda f: f * 10), _clip(16, lambda f: 255 - f * 10)
    fig = frame_strips({"real": real, "model": model}, frames=(0, 5, 15), title="t")
    axes = np.array(fig.axes).reshape(2, 3)
    assert [a.get_title() for a in axes[0]] == ["frame 0", "frame 5", "frame 15"]
    assert [a.get_ylabel() for a in axes[:, 0]] == ["real", "model"]
    for r, clip in enumerate((real, model)):
        for c, f in enumerate((0, 5, 15)):
            (img,) = axes[r, c].get_images()
            np.testing.assert_array_equal(img.get_array(), clip[f])
            assert img.get_interpolation() == "nearest"  # 64 px frames drawn large stay sharp
    plt.close(fig)


def test_a_frame_past_a_clips_end_leaves_its_cell_empty():
    fig = frame_strips({"long": _clip(16, lambda f: f), "short": _clip(4, lambda f: f)}, frames=(0, 3, 9))
    axes = np.array(fig.axes).reshape(2, 3)
    assert [len(a.get_images()) for a in axes[1]] == [1, 1, 0]
    plt.close(fig)
