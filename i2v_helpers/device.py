"""One place that picks the device and dtype for everything else, and the few device
settings and waits the rest share: :func:`describe` (the machine in words, for reports),
:func:`enable_tf32` and :func:`sync` (wait for queued GPU work before reading a clock).

CUDA and ROCm both report through ``torch.cuda`` (a ROCm build of torch sets
``torch.version.hip``); Apple GPUs through ``torch.backends.mps``; otherwise CPU.

Introduced in notebook 00 (welcome and setup).
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from dataclasses import dataclass
from importlib import metadata

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


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


def describe(dev) -> str:
    """The machine ``dev`` (a device or its name) stands for, in words, with torch's version:
    ``"NVIDIA H100 80GB HBM3 (torch 2.8.0)"`` for a GPU, ``"x86_64 CPU, 16 threads (torch 2.8.0)"``
    otherwise."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (torch {torch.__version__})"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"


def enable_tf32() -> None:
    """Let fp32 matmuls and convolutions on CUDA use TF32 tensor cores (Ampere and newer: inputs
    rounded to a 10-bit mantissa, fp32 accumulation), which is faster than full fp32. Process-wide;
    no effect on other devices."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def sync(dev) -> None:
    """Wait until the work queued on a CUDA or ROCm ``dev`` is done, before reading a clock or a
    peak-memory counter; on any other device (CPU, MPS) it returns at once."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def environment_report() -> dict:
    """Versions of the libraries this course depends on, plus the picked device."""
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


# Environment variables that change speed or memory on CUDA and ROCm (sources in notebook 10).
TUNING_VARIABLES = (
    "PYTORCH_CUDA_ALLOC_CONF",  # e.g. expandable_segments:True (less fragmentation)
    "PYTORCH_HIP_ALLOC_CONF",  # the ROCm spelling of the same allocator settings
    "MIOPEN_FIND_MODE",  # ROCm convolutions: how hard MIOpen searches for kernels on first use
    "MIOPEN_USER_DB_PATH",  # where MIOpen keeps what it found (reuse it between runs)
    "TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL",  # 1: flash/efficient SDPA on consumer AMD cards
    "FLASH_ATTENTION_TRITON_AMD_ENABLE",  # flash-attn's Triton backend on AMD
    "HIP_VISIBLE_DEVICES",
    "CUDA_VISIBLE_DEVICES",
)


def sdpa_backends(spec: DeviceSpec | None = None, shape: tuple[int, int, int, int] = (2, 5, 256, 64),
                  repeats: int = 5) -> dict[str, dict]:
    """Which attention kernel ``F.scaled_dot_product_attention`` can use here, found by calling it.

    Each backend is forced alone (``torch.nn.attention.sdpa_kernel``) on a ``(B, heads, tokens, head_dim)``
    tensor in the device's dtype. A backend that cannot run raises, and the warning torch gives says why;
    the ones that run are timed (median of ``repeats`` calls, in ms). On ROCm this is how to see that
    attention silently fell back to the slow ``MATH`` kernel.
    """
    spec = spec or pick_device()
    q = torch.randn(shape, device=spec.device, dtype=spec.dtype)
    out = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                    SDPBackend.MATH):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with sdpa_kernel([backend]):
                    times = []
                    for _ in range(repeats + 1):  # the first call warms up
                        sync(spec.device)
                        t0 = time.perf_counter()
                        F.scaled_dot_product_attention(q, q, q)
                        sync(spec.device)
                        times.append(time.perf_counter() - t0)
                out[backend.name.lower()] = {"ok": True, "ms": round(1e3 * sorted(times[1:])[repeats // 2], 3),
                                             "why": None}
            except RuntimeError as err:
                reasons = [str(w.message).splitlines()[0] for w in caught]
                out[backend.name.lower()] = {"ok": False, "ms": None,
                                             "why": "; ".join(reasons) or str(err).splitlines()[0]}
    return out


def tuning_report() -> dict:
    """The settings that decide GPU speed and memory beyond the code: allocator, MIOpen, cuDNN, 8-bit Adam."""
    rep = {name: os.environ.get(name, "(unset)") for name in TUNING_VARIABLES}
    rep["cudnn.benchmark"] = torch.backends.cudnn.benchmark  # on ROCm this switches MIOpen's search on first use
    rep["cudnn.enabled"] = torch.backends.cudnn.enabled
    try:
        rep["bitsandbytes"] = metadata.version("bitsandbytes")  # AMD wheels from 0.50 (notebook 10)
    except metadata.PackageNotFoundError:
        rep["bitsandbytes"] = "not installed (use_8bit_adam needs it)"
    return rep
