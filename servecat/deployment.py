"""A deployment as one typed value: what a server is started with, built once from the matrix.

The matrix stores a deployment's settings on every one of its config rows (one per workload);
a run reads those rows, and `Deployment.of` turns them into this value, sized for the largest
workload. Targets, tracking and run tags take it instead of a row mapping, so missing values
are cleaned here, once (servecat.values.plain): a Parquet null, pandas' NA or a NaN all
become None.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from servecat.values import plain

# Sized for the deployment's largest workload: the server must hold the longest request.
LARGEST = ("kv_cache_gb", "input_max", "output_max")


@dataclass(frozen=True)
class Deployment:
    """One deployment of the matrix: model × hardware × GPU count × engine × settings."""

    key: str  # the partition key, e.g. small-cpux1-builtin-bf16-2ab3ab98
    model: str  # the name the server answers to
    model_id: str  # what the server loads (a hub id or a local directory)
    hardware: str
    gpu_count: int
    engine: str
    quantization: str
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    tensor_parallel_size: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    parameters: float | None = None
    weights_gb: float | None = None
    usable_memory_gb: float | None = None
    kv_cache_gb: float | None = None
    input_max: int | None = None
    output_max: int | None = None
    capacity: str | None = None  # spot / on-demand, where the matrix says

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Deployment:
        """The deployment of one matrix row (its workload columns are ignored)."""
        values = {f.name: plain(row.get("deployment" if f.name == "key" else f.name))
                  for f in fields(cls)}
        missing = [name for name in ("key", "model", "model_id", "hardware", "gpu_count",
                                     "engine", "quantization") if values[name] is None]
        if missing:
            raise ValueError(f"a deployment row lacks {', '.join(missing)}")
        args = values["engine_args"]
        values["engine_args"] = json.loads(args) if isinstance(args, str) else dict(args or {})
        for name in ("gpu_count", "tensor_parallel_size", "max_num_seqs",
                     "max_num_batched_tokens", "input_max", "output_max"):
            if values[name] is not None:
                values[name] = int(values[name])
        return cls(**values)

    @classmethod
    def of(cls, configs: Sequence[Mapping[str, Any]]) -> Deployment:
        """The deployment whose config rows are CONFIGS, sized for its largest workload."""
        if not configs:
            raise ValueError("a deployment needs at least one config row")
        row = dict(configs[0])
        for name in LARGEST:
            present = [v for c in configs if (v := plain(c.get(name))) is not None]
            row[name] = max(present) if present else None
        return cls.from_row(row)

    def values(self) -> dict[str, Any]:
        """Flat values for launch-command and URL templates, tags and tracking parameters:
        every field (the key also as `deployment`) and each engine argument by its name."""
        out = {k: v for k, v in asdict(self).items() if k != "engine_args"}
        return {**{str(k): plain(v) for k, v in self.engine_args.items()}, **out,
                "deployment": self.key, "engine_args": json.dumps(dict(self.engine_args),
                                                                  sort_keys=True)}
