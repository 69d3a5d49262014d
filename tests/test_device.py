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


def test_attention_probe_finds_the_cpu_kernels_and_says_why_the_others_fail():
    cpu = device.DeviceSpec(torch.device("cpu"), torch.float32, "cpu", True, "cpu", None)
    found = device.sdpa_backends(cpu, shape=(1, 2, 16, 8), repeats=1)
    assert set(found) == {"flash_attention", "efficient_attention", "cudnn_attention", "math"}
    assert found["math"]["ok"] and found["math"]["ms"] > 0  # the reference kernel runs everywhere
    # torch has no CPU memory-efficient or cuDNN kernel: the probe must not report them usable
    for name in ("efficient_attention", "cudnn_attention"):
        assert not found[name]["ok"] and found[name]["ms"] is None and found[name]["why"]


def test_tuning_report_reads_the_allocator_and_miopen_settings(monkeypatch):
    monkeypatch.setenv("PYTORCH_HIP_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.delenv("MIOPEN_FIND_MODE", raising=False)
    rep = device.tuning_report()
    assert rep["PYTORCH_HIP_ALLOC_CONF"] == "expandable_segments:True" and rep["MIOPEN_FIND_MODE"] == "(unset)"
    assert isinstance(rep["cudnn.benchmark"], bool)


def test_describe_names_the_machine_with_torchs_version(monkeypatch):
    import platform

    cpu = torch.device("cpu")
    version = f"(torch {torch.__version__})"
    assert device.describe(cpu) == device.describe("cpu") == \
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads {version}"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: "NVIDIA H100 80GB HBM3")
    assert device.describe(torch.device("cuda:0")) == f"NVIDIA H100 80GB HBM3 {version}"
    device.sync(cpu)  # nothing queued on a CPU: returns at once
