"""vLLM deployments: `vllm serve` (or its API-server module) as a managed child process group.

vLLM lives in its own environment (its pins differ from ours), so the launch command is a
template. The default uses the API-server module, because the `vllm` script of PyPI's CPU
build fails its package-name lookup; `SERVECAT_VLLM_COMMAND` replaces it (e.g. with
`vllm serve {model_id} ...` on a GPU host).
"""

from __future__ import annotations

import os
from pathlib import Path

from servecat.deployment import Deployment
from servecat.engines import TORCH_DTYPES as DTYPES
from targets.target import ProcessTarget, TargetError, command_target

DEFAULT_VLLM_PYTHON = Path(os.environ.get("SERVECAT_VLLM_VENV",
                                          Path.home() / ".cache/servecat/vllm-venv")) / "bin/python"
DEFAULT_COMMAND = (
    "{vllm_python} -m vllm.entrypoints.openai.api_server --host 127.0.0.1 --port {port} "
    "--model {model_id} --served-model-name {model} --dtype {dtype} "
    "--max-num-seqs {max_num_seqs} --max-num-batched-tokens {max_num_batched_tokens} "
    "--tensor-parallel-size {tensor_parallel_size} --max-model-len {max_model_len} "
    "{quantization_flag} {gpu_flags}"
)
# Our weight-only quantizations -> vLLM's checkpoint formats (a GPU checkpoint must be in it).
QUANT_FLAGS = {"int8": "--quantization compressed-tensors", "int4": "--quantization awq"}


def vllm_python() -> Path:
    return Path(os.environ.get("SERVECAT_VLLM_PYTHON", DEFAULT_VLLM_PYTHON))


def vllm_target(deployment: Deployment, log_path: Path | None = None, health_timeout_s: float = 300.0,
                command: str | None = None) -> ProcessTarget:
    """A vLLM server for DEPLOYMENT on a free 127.0.0.1 port, sized from the matrix row."""
    python = vllm_python()
    template = command or os.environ.get("SERVECAT_VLLM_COMMAND") or DEFAULT_COMMAND
    if "{vllm_python}" in template and not python.exists():
        raise TargetError(f"vLLM is not installed at {python.parent.parent}: run `make vllm-env` "
                          "(or set SERVECAT_VLLM_PYTHON / SERVECAT_VLLM_COMMAND)")
    cpu = deployment.hardware == "cpu"
    quant = deployment.quantization
    context = (deployment.input_max or 0) + (deployment.output_max or 0)
    extra: dict[str, object] = {
        "vllm_python": str(python), "dtype": DTYPES.get(quant, "auto"),
        "max_model_len": max(context, 256),
        "quantization_flag": QUANT_FLAGS.get(quant, ""),
        "gpu_flags": "" if cpu else "--gpu-memory-utilization 0.9",
    }
    for key, default in (("max_num_seqs", 256), ("max_num_batched_tokens", 8192),
                         ("tensor_parallel_size", 1)):
        if getattr(deployment, key) is None:
            extra[key] = default
    target = command_target(template, deployment, log_path, health_timeout_s, extra)
    kv_gb = deployment.kv_cache_gb or 0.0
    target.env |= {"VLLM_CPU_KVCACHE_SPACE": str(max(1, round(1.25 * kv_gb + 0.5))),
                   "VLLM_CPU_OMP_THREADS_BIND": f"0-{(os.cpu_count() or 1) - 1}",
                   "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    if cpu:
        target.env.pop("CUDA_VISIBLE_DEVICES", None)
    return target
