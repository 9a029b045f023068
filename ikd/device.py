"""Devices and mixed precision, for training and inference alike: `--device` parsing, the autocast dtype a
`train.amp` setting means on a device, and the autocast context."""

from __future__ import annotations

import contextlib

import torch

from ikd.errors import IkdError

DEVICE_HELP = "auto, cpu, cuda or cuda:N (auto: cuda when available)"


def resolve_device(device: str | torch.device | None, local_rank: int | None = None) -> torch.device:
    """ "auto"/None -> cuda when available, else cpu; "cpu", "cuda", "cuda:N" as torch reads them.

    `local_rank` (a torchrun process) picks cuda:LOCAL_RANK for a plain "cuda" or "auto"."""
    name = "auto" if device is None else str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise IkdError(f"--device {name!r}: expected {DEVICE_HELP} ({e})") from None
    if dev.type not in ("cpu", "cuda"):
        raise IkdError(f"--device {name!r}: expected {DEVICE_HELP}")
    if dev.type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise IkdError(f"--device {name}: CUDA is not available on this machine")
    if dev.index is None:
        dev = torch.device("cuda", local_rank or 0)
    if dev.index >= torch.cuda.device_count():
        raise IkdError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: None (fp32) on CPU or when off; auto = bf16 where the GPU supports it, else fp16."""
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if setting == "fp16":
        return torch.float16
    # native bf16 only (Ampere and newer): torch's default check also counts emulated bf16 (V100, T4)
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision on `device` in `dtype`; a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
