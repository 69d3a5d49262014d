"""i2v_helpers.toy: the moving-dots world and the from-nothing denoiser of notebook 02."""

import math

import torch

from i2v_helpers.objective import edm_preconditioning
from i2v_helpers.toy import DIRECTIONS, DotDenoiser, denoise, dot_tracks, loss, moving_dots, sample, track_error


def test_each_dot_moves_the_way_its_colour_says_and_stays_whole():
    clips, truth = moving_dots(64, generator=torch.Generator().manual_seed(0))
    tracks = dot_tracks(clips)
    expected = truth["start"][:, None] + torch.arange(8.0)[None, :, None] * truth["velocity"][:, None]
    assert (tracks - expected).abs().max() < 0.5  # the centroid of an anti-aliased disc, within half a pixel
    steps = tracks[:, -1] - tracks[:, 0]
    for i, (_, velocity) in enumerate(DIRECTIONS.values()):
        mine = truth["colour"] == i
        assert mine.any() and torch.allclose(steps[mine], 7 * torch.tensor(velocity, dtype=torch.float), atol=0.5)
    # whole: as much ink in the last frame as in the first (nothing cut off at the border)
    ink = (clips.amax(2) + 1).sum((-2, -1))
    assert torch.allclose(ink[:, -1], ink[:, 0], rtol=0.05)


def test_the_sampler_lands_on_the_clean_clip_its_denoiser_predicts():
    clips, _ = moving_dots(3, generator=torch.Generator().manual_seed(1))
    out = sample(None, clips[:, 0], denoiser=lambda x, s, first: clips, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, clips, atol=1e-5)  # Euler's last step, to σ = 0, returns D


def test_a_fresh_denoiser_only_shrinks_its_input():
    """The output layer starts at zero, so D(x; σ) = c_skip·x before training."""
    x, sigma = torch.randn(2, 8, 3, 16, 16), torch.tensor([0.5, 20.0])
    c_skip = edm_preconditioning(sigma)[0].view(-1, 1, 1, 1, 1)
    assert torch.allclose(denoise(DotDenoiser(), x, sigma, x[:, 0]), c_skip * x)


def test_repeating_the_first_frame_misses_by_the_distance_travelled():
    clips, truth = moving_dots(16, generator=torch.Generator().manual_seed(2))
    frozen = track_error(clips[:, :1].expand_as(clips), clips)
    speed = truth["velocity"].norm(dim=1).mean().item()  # 1 or √2 px/frame
    assert frozen["found"] == 1.0 and math.isclose(frozen["err_px"], speed * 4, rel_tol=0.1)  # mean of 1..7 frames
    assert track_error(clips, clips) == {"err_px": 0.0, "found": 1.0}


def test_a_network_that_outputs_the_v_target_has_zero_loss_and_one_that_does_not_has_more():
    """The oracle reads σ back from c_noise = ¼ ln σ and x from c_in·x, and answers (x0 − c_skip·x) / c_out:
    the preconditioning in ``denoise`` and ``loss`` must be the one it inverts."""
    g = torch.Generator().manual_seed(3)
    x0, _ = moving_dots(4, generator=g)
    sigma, noise = torch.tensor([0.05, 0.7, 5.0, 80.0]), torch.randn(x0.shape, generator=g)

    def oracle(x_in, c_noise, first):
        s = (4 * c_noise).exp()
        c_skip, c_out, c_in, _ = (c.view(-1, 1, 1, 1, 1) for c in edm_preconditioning(s))
        return (x0 - c_skip * (x_in / c_in)) / c_out

    assert loss(oracle, x0, x0[:, 0], sigma, noise).item() < 1e-8
    assert loss(DotDenoiser(), x0, x0[:, 0], sigma, noise).item() > 0.1
