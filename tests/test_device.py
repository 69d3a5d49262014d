"""The device layer picks CUDA / ROCm / MPS / CPU and a matching dtype."""

import pytest
import torch

from i2v_helpers import device


def test_cpu_when_no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    spec = device.pick_device()
    assert spec.device.type == "cpu" and spec.dtype == torch.float32 and spec.backend == "cpu"


def test_rocm_is_reported_through_torch_cuda(monkeypatch):
    class Props:
        name, total_memory = "AMD Instinct MI300X", 192 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: Props())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.version, "hip", "6.2.0", raising=False)
    spec = device.pick_device()
    assert spec.backend == "rocm" and spec.dtype == torch.bfloat16 and spec.memory_bytes == 192 * 2**30
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    spec = device.pick_device()
    assert spec.backend == "cuda" and spec.dtype == torch.float16


def test_forcing_an_absent_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="not available"):
        device.pick_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        device.pick_device("tpu")
