"""Device and precision choice.

`auto` device: CUDA when present, else the CPU. `auto` precision: fp16 on CUDA; on a CPU bf16
where it has bf16 instructions (AMX-BF16 or AVX512-BF16: oneDNN's bf16 convolutions then run
2-3 times as fast as fp32, docs/performance.md), else fp32 (without them bf16 is emulated and
slower than fp32).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vsdeblur.errors import UsageError
from vsdeblur.runtimes import PRECISIONS

# CPU feature flags (cpuinfo's names, which /proc/cpuinfo shares) that execute bf16 natively
_BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


def resolve_device(device: str | torch.device) -> torch.device:
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
    elif dev.type != "cpu":
        raise UsageError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return dev


def cpu_flags() -> set[str]:
    """The CPU's feature flags: from PyTorch's cpuinfo where this PyTorch has it (2.8 and
    later), else from /proc/cpuinfo; empty where neither says."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        return {name for name, value in capabilities().items() if value is True}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def auto_precision(device: torch.device) -> tuple[str, str]:
    """What `precision="auto"` picks on `device` (a PRECISIONS name), and why (for `vsdeblur info`)."""
    if device.type == "cuda":
        return "fp16", "CUDA device"
    found = [name for flag, name in _BF16_FLAGS.items() if flag in cpu_flags()]
    if found and torch.backends.mkldnn.is_available():
        return "bf16", f"the CPU has {' and '.join(found)}"
    if found:
        return "fp32", f"the CPU has {' and '.join(found)}, but this PyTorch lacks oneDNN"
    return "fp32", "the CPU has neither AMX-BF16 nor AVX512-BF16 (bf16 would be emulated, slower than fp32)"


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a PRECISIONS name."""
    return getattr(torch, PRECISIONS[precision].dtype)


def describe_auto_precision() -> list[str]:
    """What `precision="auto"` picks on each kind of usable device and why, for `vsdeblur info`."""
    lines = []
    for kind in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        name, why = auto_precision(torch.device(kind))
        lines.append(f"auto on {kind}: {name} ({why})")
    return lines


def describe_devices() -> list[str]:
    """One line per usable device, for `vsdeblur info`."""
    lines = [f"cpu ({torch.get_num_threads()} threads)"]
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(i)
        lines.append(f"cuda:{i} {props.name} ({props.total_memory / 2**30:.0f} GiB)")
    return lines
