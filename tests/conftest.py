"""Shared by the unit tests: the repository's root, the tiny-UNet helpers and the tiny-model fixtures.

Test modules import the constants and helpers by name (``from conftest import REPO``): tests/ has no
``__init__.py``, so pytest (default ``prepend`` import mode) puts tests/ on ``sys.path`` to import this
file, and it is this module that ``conftest`` names while tests/ is collected (the root conftest.py,
loaded before it, only marks the notebooks slow)."""

from pathlib import Path

import pytest
import torch

from i2v_helpers.models import TinySVDConfig, build_tiny_pipeline, build_tiny_unet, example_unet_inputs

REPO = Path(__file__).resolve().parents[1]


def unet_inputs(unet, seed=0):
    """Fixed inputs for a tiny UNet, 4 frames."""
    return example_unet_inputs(unet, frames=4, seed=seed)


def run_unet(unet, inputs):
    """A no-grad forward: the UNet's output sample."""
    with torch.no_grad():
        return unet(**inputs)[0]


@pytest.fixture
def unet():
    """A fresh tiny UNet (4 frames, seed 0) in eval mode, for the LoRA and adapter tests."""
    torch.manual_seed(0)
    return build_tiny_unet(TinySVDConfig(num_frames=4)).eval()


@pytest.fixture(scope="module")
def small_pipe():
    """A tiny SVD pipeline (4 frames, seed 0, random weights), one per test module."""
    return build_tiny_pipeline(TinySVDConfig(num_frames=4), seed=0)
