"""Shared by the LoRA and adapter tests: fixed inputs for a tiny UNet and a no-grad forward."""

import torch

from i2v_helpers.models import example_unet_inputs


def unet_inputs(unet, seed=0):
    return example_unet_inputs(unet, frames=4, seed=seed)


def run_unet(unet, inputs):
    with torch.no_grad():
        return unet(**inputs)[0]
