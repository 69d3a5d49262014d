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


def test_paired_plot_draws_each_comparisons_difference_with_two_se_bars():
    """Model b is a's flow_epe minus 1 on every clip (± a little): a bar clear of 0, in red; c ties a on
    average (differences of ±1 around 0): a grey bar crossing 0. The dot is paired_difference's mean."""
    from i2v_helpers.evaluation import paired_difference, paired_differences
    from i2v_helpers.viz import paired_plot

    rng = np.random.default_rng(0)
    base = rng.uniform(1, 3, 8)

    def result(values):
        return {"rows": [{"clip": i, "seed": s, "flow_epe": v, "object_err_px": float("nan")}
                         for i, v in enumerate(values) for s in (0, 1)]}

    res = {"a": result(base), "b": result(base - 1 + 0.01 * rng.standard_normal(8)),
           "c": result(base + np.tile([1.0, -1.0], 4))}
    diffs = paired_differences(res, [("a", "b"), ("a", "c")], metrics=("flow_epe", "object_err_px"))
    assert list(diffs) == ["b - a", "c - a"] and list(diffs["b - a"]) == ["flow_epe"]  # no clip has objects
    fig = paired_plot(diffs)
    (ax,) = fig.axes
    assert ax.get_title() == "flow_epe" and [t.get_text() for t in ax.get_yticklabels()] == ["b - a (8 clips)",
                                                                                              "c - a (8 clips)"]
    bars = [c for c in ax.containers]
    for container, name in zip(bars, ("b", "c")):
        d, se, n = paired_difference(res["a"], res[name], "flow_epe")
        (x,), (y,) = container.lines[0].get_data()
        segment = container.lines[2][0].get_segments()[0]
        assert x == d and segment[0][0] == np.float64(d - 2 * se) and segment[1][0] == np.float64(d + 2 * se)
    red, grey = (c.lines[0].get_color() for c in bars)
    assert (red, grey) == ("tab:red", "tab:gray")
    plt.close(fig)
