"""Which engine serves which quantization on which platform: the one source of truth.

Pure data with no imports, so both `engine/` (to refuse an unsupported combination) and
`bench/` (to prune the matrix) read the same table without depending on each other.
"""

from __future__ import annotations

QUANTIZATIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8", "int4")
ENGINES: tuple[str, ...] = ("builtin", "vllm", "runpod", "openai", "tgi", "lmdeploy", "sglang")

# Bytes per weight and per KV-cache element at each quantization (weight-only quantization
# keeps the KV cache in 16-bit; fp32 keeps it in fp32).
WEIGHT_BYTES: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5}
KV_BYTES: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 2.0, "int4": 2.0}

# Quantization words that are plain dtypes -> the dtype names torch, vLLM and HF use; the
# others (int8, int4) are weight-only quantizations over a 16-bit (GPU) or fp32 (CPU) model.
TORCH_DTYPES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DTYPE_ALIASES: dict[str, str] = {
    **{w: w for w in TORCH_DTYPES}, **{t: w for w, t in TORCH_DTYPES.items()},
    "float": "fp32", "half": "fp16",
}
WEIGHT_QUANTIZATIONS: tuple[str, ...] = ("int8", "int4")

_GPU_ALL = frozenset({"fp16", "bf16", "int8", "int4"})

# engine -> platform ("cpu" | "cuda") -> quantizations it serves there.
SUPPORT: dict[str, dict[str, frozenset[str]]] = {
    # Our engine: fp32/bf16 and int8 weight-only on CPU (fp16 matmuls are slow or missing on
    # x86 CPUs); on CUDA fp16/bf16/int8/int4 weight-only (torchao).
    "builtin": {"cpu": frozenset({"fp32", "bf16", "int8"}), "cuda": _GPU_ALL},
    # vLLM: CUDA builds serve AWQ/GPTQ (int4) and W8A8 (int8); the CPU build serves fp32/bf16.
    "vllm": {"cpu": frozenset({"fp32", "bf16"}), "cuda": _GPU_ALL},
    # RunPod runs vLLM workers on its GPUs; it has no CPU endpoints.
    "runpod": {"cuda": _GPU_ALL},
    # An existing OpenAI-compatible server: whatever it was started with.
    "openai": {"cpu": frozenset(QUANTIZATIONS), "cuda": frozenset(QUANTIZATIONS)},
    "tgi": {"cuda": _GPU_ALL},
    "lmdeploy": {"cuda": frozenset({"fp16", "bf16", "int8", "int4"})},
    "sglang": {"cuda": _GPU_ALL},
}


# engine -> (most tensor-parallel ranks, most GPUs one server uses). Our engine runs on one
# device; the managed engines shard over a node's GPUs; a remote endpoint is whatever it is.
SCALE: dict[str, tuple[int, int]] = {
    "builtin": (1, 1), "vllm": (8, 8), "runpod": (8, 8), "openai": (8, 8),
    "tgi": (8, 8), "lmdeploy": (8, 8), "sglang": (8, 8),
}


def unsupported_scale(engine: str, gpu_count: int, tensor_parallel_size: int) -> str | None:
    """Why ENGINE cannot serve on GPU_COUNT GPUs with TENSOR_PARALLEL_SIZE, or None."""
    max_tp, max_gpus = SCALE.get(engine, (1, 1))
    if tensor_parallel_size > max_tp:
        return (f"engine {engine} has no tensor parallelism beyond {max_tp}" if max_tp > 1
                else f"engine {engine} has no tensor parallelism")
    if gpu_count > max_gpus:
        return f"engine {engine} uses at most {max_gpus} GPU{'s' if max_gpus > 1 else ''}"
    return None


def platform_of(hardware: str) -> str:
    """`cpu` for the CPU host, `cuda` for every GPU type."""
    return "cpu" if hardware == "cpu" else "cuda"


def supported(engine: str, hardware: str, quantization: str) -> bool:
    """Whether ENGINE serves QUANTIZATION on HARDWARE (a name from configs/hardware.yaml)."""
    return quantization in SUPPORT.get(engine, {}).get(platform_of(hardware), frozenset())


def unsupported_reason(engine: str, hardware: str, quantization: str) -> str:
    """The sentence both the engine and the matrix use for an unsupported combination."""
    platform = platform_of(hardware)
    allowed = sorted(SUPPORT.get(engine, {}).get(platform, frozenset()))
    if not allowed:
        return f"engine {engine} does not run on {platform}"
    return (f"engine {engine} does not support {quantization} on {platform} "
            f"(supported: {', '.join(allowed)})")
