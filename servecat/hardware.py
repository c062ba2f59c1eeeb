"""The hardware table (`configs/hardware.yaml`): GPU types, memory, bandwidth, prices."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from servecat.engines import platform_of
from servecat.errors import SpecError, from_validation_error, load_yaml, unique

DEFAULT_HARDWARE = Path(__file__).resolve().parent.parent / "configs" / "hardware.yaml"


class Hardware(BaseModel):
    """One GPU type (or the CPU host): per-GPU memory, bandwidth, peak and prices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    memory_gb: float = Field(gt=0)
    memory_bandwidth_gbps: float = Field(gt=0)
    peak_bf16_tflops: float = Field(gt=0)
    counts: list[PositiveInt] = Field(min_length=1)
    on_demand_usd_per_hour: float = Field(ge=0)
    on_demand_source: str
    on_demand_date: str
    spot_usd_per_hour: float = Field(ge=0)
    spot_source: str
    spot_date: str
    # What `nvidia-smi --query-gpu=name` prints for this GPU (the hardware check accepts any of
    # them; the first is the node label GPU feature discovery gives it, spaces -> dashes).
    # Empty for `cpu`.
    gpu_names: list[str] = Field(default_factory=list)
    # The host share a run gets per GPU (per machine for `cpu`), sized to fit the smallest
    # instance offering that many GPUs with room for the node's agents.
    host_vcpus_per_gpu: float | None = Field(default=None, gt=0)
    host_memory_gb_per_gpu: float | None = Field(default=None, gt=0)

    @property
    def is_gpu(self) -> bool:
        return platform_of(self.name) == "cuda"


class HardwareTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hardware: list[Hardware] = Field(min_length=1)

    def by_name(self) -> dict[str, Hardware]:
        return {h.name: h for h in self.hardware}


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> HardwareTable:
    try:
        table = HardwareTable.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise from_validation_error(path, exc) from None
    unique(path, "hardware", (h.name for h in table.hardware))
    return table


def load_hardware(path: str | Path | None = None) -> dict[str, Hardware]:
    """Hardware by name from PATH (default `configs/hardware.yaml`)."""
    path = Path(path or DEFAULT_HARDWARE)
    if not path.exists():
        raise SpecError(str(path), "", "hardware table not found")
    return _load(str(path), path.stat().st_mtime).by_name()


def hardware_key(name: str, count: int) -> str:
    """`h100` × 2 -> `h100x2`: the hardware token in deployment keys."""
    return f"{name}x{count}"
