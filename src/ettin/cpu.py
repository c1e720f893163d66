"""Process settings for running on CPU.

CPU PyTorch has no caching allocator: tensors come straight from malloc, and glibc serves the large ones
(above its mmap threshold, 128 KiB to 32 MiB) with fresh mmaps that are returned to the system when freed. A training
loop allocates the same large tensors every step, so every step pays one page fault (and the kernel's zeroing) per
4 KiB page of them. `tune_allocator` keeps such memory in the heap instead. Measured on the 2-core development box
(bench/README.md, one implementation per process): +1-7% tokens/s for ettin's training step (it keeps its own large
buffers), +15-56% for transformers' classes, which allocate more large tensors. The price: resident memory stays near
the process's peak. Buffers that ettin keeps itself (`scratch`) help wherever this tuning is not applied.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_applied: bool | None = None


def tune_allocator() -> bool:
    """On Linux with glibc: allocations below 1 GiB from the heap, freed memory kept for reuse. Idempotent;
    `ETTIN_MALLOC=default` leaves malloc as it is. Returns whether the settings are in force."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("ETTIN_MALLOC", "tuned") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only: musl has no such mallopt parameters
        return False
    ok = all(
        libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1
        for param, value in ((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 256 << 20))
    )
    _applied = ok
    return ok


# ------------------------------------------------------------------------------------- kept buffers
_SCRATCH = threading.local()


def release_scratch() -> None:
    """Free this thread's kept buffers (the head's, the attention scores'); they are re-made when next needed."""
    _SCRATCH.buffers = {}


def scratch(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A buffer that lives between calls, on CPU only (per thread; one per name, re-made larger when a call needs
    more elements, otherwise a view of its first elements).

    CPU PyTorch has no caching allocator: with glibc as shipped (no `tune_allocator`, e.g. ettin used as a library)
    each step's fresh multi-MB buffers come from mmap and pay a page fault per 4 KB page, tens of ms a step at the
    17m shape. Only for buffers that are dead when the call returns (not saved for backward, not returned). CUDA's
    caching allocator already reuses memory."""
    import torch

    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    cache = getattr(_SCRATCH, "buffers", None)
    if cache is None:
        cache = _SCRATCH.buffers = {}
    buf = cache.get(name)
    if buf is None or buf.dtype != dtype or buf.numel() < math.prod(shape):
        buf = cache[name] = torch.empty(math.prod(shape), dtype=dtype, device=device)
    return buf[: math.prod(shape)].view(shape)


def matmul_rate(dtype: torch.dtype, n: int = 512, seconds: float = 0.3) -> float:
    """FLOP/s of an (n, n) @ (n, n) matmul in `dtype` on this process's threads (best of repeated calls)."""
    import time

    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)  # warm-up
    best, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def faster_precision(margin: float = 1.3) -> tuple[str, dict[str, float]]:
    """"bf16" when this CPU's bf16 matmul is at least `margin` times its fp32 rate, else "fp32", with both
    rates (FLOP/s). Hosts differ: some run bf16 at 2-4x fp32, others (no bf16 instructions) far slower."""
    import torch

    rates = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}
    return ("bf16" if rates["bf16"] >= margin * rates["fp32"] else "fp32"), rates
