"""Shared by the LoRA and adapter tests: fixed inputs for a tiny UNet and a no-grad forward."""

import torch


def unet_inputs(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = unet.config
    x = torch.randn(1, 4, c.in_channels, c.sample_size, c.sample_size, generator=g)
    return (x, torch.tensor([0.3]), torch.randn(1, 1, c.cross_attention_dim, generator=g),
            torch.tensor([[7.0, 127.0, 0.02]]))


def run_unet(unet, inputs):
    x, t, e, ids = inputs
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=e, added_time_ids=ids, return_dict=False)[0]
