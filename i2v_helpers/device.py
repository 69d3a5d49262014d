"""One place that picks the device and dtype for everything else.

CUDA and ROCm both report through ``torch.cuda`` (a ROCm build of torch sets
``torch.version.hip``); Apple GPUs through ``torch.backends.mps``; otherwise CPU.

Introduced in notebook 00 (welcome and setup).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceSpec:
    device: torch.device
    dtype: torch.dtype  # the dtype to run models in (fp32 on CPU)
    backend: str  # "cuda", "rocm", "mps" or "cpu"
    bf16: bool  # does this device do bfloat16 well?
    name: str
    memory_bytes: int | None


def pick_device(prefer: str | None = None) -> DeviceSpec:
    """Pick the best available device; ``prefer`` (or env ``I2V_DEVICE``) forces one ("cpu", "cuda", "mps")."""
    prefer = prefer or os.environ.get("I2V_DEVICE")
    if prefer not in (None, "", "auto") and prefer not in ("cpu", "cuda", "mps") and not prefer.startswith("cuda:"):
        raise ValueError(f"unknown device {prefer!r}: use cpu, cuda, cuda:N or mps")
    want = prefer if prefer not in (None, "", "auto") else None
    if (want is None or want.startswith("cuda")) and torch.cuda.is_available():
        dev = torch.device(want or "cuda")
        props = torch.cuda.get_device_properties(dev)
        bf16 = torch.cuda.is_bf16_supported()
        backend = "rocm" if getattr(torch.version, "hip", None) else "cuda"
        return DeviceSpec(dev, torch.bfloat16 if bf16 else torch.float16, backend, bf16, props.name,
                          props.total_memory)
    if (want is None or want == "mps") and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return DeviceSpec(torch.device("mps"), torch.float16, "mps", False, "Apple MPS", None)
    if want not in (None, "cpu"):
        raise RuntimeError(f"device {want!r} was asked for but is not available; run `i2v env` to see what is")
    return DeviceSpec(torch.device("cpu"), torch.float32, "cpu", True, platform.processor() or platform.machine(),
                      _cpu_memory())


def _cpu_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def environment_report() -> dict:
    """Versions of the libraries this course depends on, plus the picked device."""
    from importlib import metadata

    rep = {"python": platform.python_version()}
    for pkg in ("torch", "diffusers", "peft", "transformers", "accelerate", "av", "numpy"):
        try:
            rep[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            rep[pkg] = "not installed"
    spec = pick_device()
    rep.update(device=str(spec.device), backend=spec.backend, device_name=spec.name, dtype=str(spec.dtype),
               bf16=spec.bf16, hip=getattr(torch.version, "hip", None), cuda=torch.version.cuda,
               gpu_count=torch.cuda.device_count(), cpu_threads=torch.get_num_threads())
    rep["memory_gb"] = round(spec.memory_bytes / 2**30, 1) if spec.memory_bytes else None
    return rep
