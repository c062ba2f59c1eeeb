"""The fleet file (`configs/fleet.yaml`): the GPUs of each type a cluster has, the quotas of
the providers servecat rents from, and how a run is placed on ECS or Kubernetes."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    field_validator,
)

from servecat.errors import SpecError, from_validation_error, load_yaml
from servecat.hardware import Hardware, load_hardware

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FLEET = ROOT / "configs" / "fleet.yaml"
LOCAL_FLEET = ROOT / "configs" / "deploy" / "local" / "fleet.yaml"

Capacity = Literal["spot", "on-demand"]
Launcher = Literal["ecs", "kubernetes"]
# Engines whose server runs at a provider (RunPod, any OpenAI-compatible URL): their runs use
# no GPU of the fleet, only a slot of the provider's quota.
REMOTE_ENGINES: tuple[str, ...] = ("runpod", "openai")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FleetHardware(_Strict):
    """The GPUs of one type in the cluster (machines for `cpu`), and how they are bought."""

    gpus: int = Field(ge=0)
    capacity: Capacity = "on-demand"


class EcsPlacement(_Strict):
    """ECS: the capacity provider of each hardware x capacity, and instance-type constraints."""

    # Formatted with {hardware} and {capacity}; one capacity provider per GPU node group.
    capacity_provider: str = "servecat-{hardware}-{capacity}"
    # hardware -> ECS cluster-query pattern of instance types, e.g. `p5.*` for h100.
    instance_types: dict[str, str] = Field(default_factory=dict)

    @field_validator("capacity_provider")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        try:
            value.format(hardware="h100", capacity="spot")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{value!r}: only {{hardware}} and {{capacity}} may appear "
                             f"({type(exc).__name__}: {exc})") from None
        return value


class K8sPlacement(_Strict):
    """Kubernetes: node labels and taints of the GPU node pools."""

    gpu_product_label: str = "nvidia.com/gpu.product"
    capacity_node_selector: dict[Capacity, dict[str, str]] = Field(default_factory=dict)
    gpu_tolerations: list[dict[str, str]] = Field(default_factory=lambda: [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    capacity_tolerations: dict[Capacity, list[dict[str, str]]] = Field(default_factory=dict)


class Fleet(_Strict):
    """GPUs per hardware type, provider quotas, and placement on the launchers in use."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    hardware: dict[str, FleetHardware] = Field(default_factory=dict)
    quotas: dict[Literal["runpod", "openai"], NonNegativeInt] = Field(default_factory=dict)
    # Which launchers' tags a run carries (none for the embedded default).
    launchers: list[Launcher] = Field(default_factory=list)
    # Spot runs are retried this many times (an interruption kills the run worker); the rerun
    # resumes at the first unfinished workload.
    spot_max_retries: int = Field(default=3, ge=0)
    # The `benchmark` pool of `benchmark_runs` (steps at once on the instance) and where it is
    # enforced; default: every GPU and quota slot of the fleet.
    pool_limit: int | None = Field(default=None, ge=0)
    pool_granularity: Literal["run", "op"] | None = None
    ecs: EcsPlacement = EcsPlacement()
    kubernetes: K8sPlacement = K8sPlacement()

    def gpus(self, hardware: str) -> int:
        entry = self.hardware.get(hardware)
        return entry.gpus if entry else 0

    def capacity(self, hardware: str) -> Capacity:
        entry = self.hardware.get(hardware)
        return entry.capacity if entry else "on-demand"


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> Fleet:
    try:
        return Fleet.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise from_validation_error(path, exc) from None


def load_fleet(path: str | Path | None = None,
               table: Mapping[str, Hardware] | None = None) -> Fleet:
    """The fleet at PATH (default `configs/fleet.yaml`), its hardware checked against TABLE."""
    path = Path(path or DEFAULT_FLEET)
    source = str(path)
    if not path.exists():
        raise SpecError(source, "", "fleet file not found")
    fleet = _load(source, path.stat().st_mtime)
    table = table if table is not None else load_hardware()
    for section, names in (("hardware", fleet.hardware), ("ecs.instance_types",
                                                          fleet.ecs.instance_types)):
        for name in names:
            if name not in table:
                raise SpecError(source, f"{section}.{name}",
                                f"unknown hardware {name!r}: choose from {', '.join(table)}")
    return fleet
