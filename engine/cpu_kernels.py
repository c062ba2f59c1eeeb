"""Our C kernels for the CPU (`engine/csrc/`), compiled once per machine with the system C
compiler and loaded with ctypes.

Why not a PyTorch C++ extension: compiling against PyTorch's headers takes about a minute on
two cores; this plain C file compiles in under a second and needs only data pointers. It is
built with `-march=native` for the CPU it runs on, into a cache keyed by the source, the flags,
the compiler and the CPU's feature flags. Without a compiler, or with
`SERVECAT_ENGINE_KERNELS=torch`, the engine keeps its plain PyTorch paths (both are tested).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch  # first: the kernels' libgomp must resolve to the one PyTorch loaded

log = logging.getLogger(__name__)

SOURCES = tuple(Path(__file__).parent / "csrc" / name
                for name in ("paged_attention.c", "rms_norm.c"))
HEADERS = (Path(__file__).parent / "csrc" / "bf16.h",)
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=gnu11")


def enabled() -> bool:
    """False under SERVECAT_ENGINE_KERNELS=torch: plain PyTorch everywhere (packed linears too)."""
    return os.environ.get("SERVECAT_ENGINE_KERNELS", "auto") != "torch"


def cache_dir() -> Path:
    return Path(os.environ.get("SERVECAT_KERNEL_CACHE",
                               Path.home() / ".cache" / "servecat" / "kernels"))


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def _build(cc: str) -> Path | None:
    texts = [f.read_text() for f in SOURCES + HEADERS]
    key = hashlib.sha256("\0".join([*texts, *FLAGS, cc, platform.machine(),
                                    _cpu_flags()]).encode()).hexdigest()[:16]
    lib = cache_dir() / f"servecat-kernels-{key}.so"
    if lib.exists():
        return lib
    tmp = lib.with_name(f".{lib.name}.{os.getpid()}.tmp")
    try:
        lib.parent.mkdir(parents=True, exist_ok=True)
        out = subprocess.run([cc, *FLAGS, "-o", str(tmp), *map(str, SOURCES), "-lm"],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            log.warning("CPU kernels not built (%s exited %d): %s; using PyTorch attention",
                        cc, out.returncode, out.stderr.strip()[-500:])
            tmp.unlink(missing_ok=True)
            return None
        os.replace(tmp, lib)  # whole or absent, even with several processes building at once
    except (OSError, subprocess.TimeoutExpired) as exc:  # no compiler, unwritable cache, ...
        log.warning("CPU kernels not built (%s); using PyTorch attention", exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return None
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None where they cannot be built here."""
    if not enabled():
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log.warning("no C compiler found; using PyTorch attention on CPU")
        return None
    path = _build(cc)
    if path is None:
        return None
    lib = ctypes.CDLL(str(path))
    fn = lib.paged_decode_attention
    fn.restype = ctypes.c_int
    fn.argtypes = ([ctypes.c_void_p] * 3 + [ctypes.c_int] + [ctypes.c_void_p] * 2
                   + [ctypes.c_int] * 8 + [ctypes.c_float, ctypes.c_void_p])
    lib.rms_norm.restype = None
    lib.rms_norm.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 2 + [ctypes.c_float,
                                                                         ctypes.c_int]
    return lib


def available() -> bool:
    return enabled() and library() is not None


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, ctx_lens: torch.Tensor,
                           scale: float, window: int | None = None) -> torch.Tensor:
    """q [B, heads, D] (one token per sequence) -> [B, heads, D], attending each sequence's
    first ctx_lens[b] tokens (the last WINDOW of them, if set) through block_tables
    [B, max_blocks] (int32)."""
    lib = library()
    if lib is None:
        raise RuntimeError("CPU kernels are not available")
    if k_cache.dtype not in (torch.float32, torch.bfloat16) or not k_cache.is_contiguous():
        raise ValueError(f"KV pool must be contiguous fp32 or bf16, not {k_cache.dtype}")
    for name, t in (("block_tables", block_tables), ("ctx_lens", ctx_lens)):
        if t.dtype != torch.int32 or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous int32 tensor")
    b, heads, d = q.shape
    kv_heads, num_blocks, block_size, _ = k_cache.shape
    qf = q.to(torch.float32).contiguous()
    out = torch.empty_like(qf)
    rc = lib.paged_decode_attention(
        qf.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(),
        int(k_cache.dtype == torch.bfloat16), block_tables.data_ptr(), ctx_lens.data_ptr(), b,
        block_tables.shape[1], heads, kv_heads, num_blocks, block_size, d, window or 0, scale,
        out.data_ptr())
    if rc != 0:
        raise MemoryError("paged_decode_attention could not allocate its work buffers")
    return out.to(q.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    """RMSNorm of X's rows in one pass (csrc/rms_norm.c), or None where the kernel does not
    apply (no kernels, or not contiguous fp32/bf16 rows of the weight's length and dtype)."""
    lib = library()
    n = weight.shape[-1]
    if (lib is None or x.dtype not in (torch.float32, torch.bfloat16) or weight.dtype != x.dtype
            or not x.is_contiguous() or not weight.is_contiguous() or x.shape[-1] != n
            or x.device.type != "cpu"):
        return None
    out = torch.empty_like(x)
    lib.rms_norm(x.data_ptr(), weight.data_ptr(), out.data_ptr(), x.numel() // n, n, eps,
                 int(x.dtype == torch.bfloat16))
    return out
