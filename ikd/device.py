"""Devices and mixed precision, for training and inference alike: `--device` parsing, the autocast dtype a
`train.amp` setting means on a device, and the autocast context."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys

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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 products in hardware (AVX-512 BF16 or AMX); elsewhere bf16 is emulated
    and slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.amp` (auto | bf16 | fp16 | off) on `device`.

    CUDA: auto = bf16 where the GPU supports it natively, else fp16. CPU: auto and off = fp32 (a recipe then
    gives the same numbers on every CPU); bf16 = bf16 autocast (fast only on CPUs with native bf16, see
    `cpu_has_native_bf16`); fp16 = fp32 (fp16 autocast on a CPU is slower than fp32 and needs a grad scaler)."""
    if setting == "off":
        return None
    if device.type == "cpu":
        return torch.bfloat16 if setting == "bf16" else None
    if device.type != "cuda":
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


@functools.cache
def keep_freed_host_memory() -> bool:
    """Let glibc's malloc serve large tensors from memory it keeps, instead of mapping fresh pages for each
    one and unmapping them when freed: a training step allocates its [tokens, V] logits and their gradient
    (tens of MB) anew every update, and on a CPU the page faults of fresh pages cost more than the arithmetic
    on them (a 35 MB zero-fill: 26 ms with fresh pages, 3.5 ms with kept ones). Beam search on a CPU gains
    as well (Test2016, beam 5, one thread: 290k page faults down to 58k, decoding 8-10% faster). The price is
    that the process keeps its peak memory until it exits. Returns whether it took effect (glibc on Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) == 1  # allocations up to 1 GiB from the heap
        return ok and libc.mallopt(m_trim_threshold, (1 << 31) - 1) == 1  # and keep what is freed
    except (OSError, AttributeError):  # not glibc (musl, another libc)
        return False
