"""Engine settings: one dataclass, filled from `servecat serve` flags or by a caller."""

from __future__ import annotations

from dataclasses import dataclass

from servecat.engines import DTYPE_ALIASES, WEIGHT_QUANTIZATIONS
from servecat.engines import TORCH_DTYPES as DTYPES

__all__ = ["DTYPES", "DTYPE_ALIASES", "WEIGHT_QUANTIZATIONS", "EngineConfig"]


@dataclass(slots=True)
class EngineConfig:
    """Everything that shapes one loaded engine; sizes are in tokens unless named otherwise."""

    model: str
    dtype: str = "auto"  # auto | fp32 | bf16 | fp16 (activations and KV cache)
    quantization: str | None = None  # None | int8 | int4 (weight-only)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    block_size: int = 16
    kv_cache_memory: int | None = None  # bytes for the KV pool; None: a fraction of free memory
    kv_cache_fraction: float = 0.3  # of free memory, when kv_cache_memory is None
    enable_prefix_caching: bool = True
    max_waiting: int = 512  # requests queued beyond this are refused (HTTP 429)
    num_threads: int | None = None  # torch intra-op threads on CPU; None: torch's default
