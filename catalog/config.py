"""Profiles and hardware prices as the catalog uses them; both files are read by the one loader
of each in servecat/ (errors name file and field)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from servecat.errors import SpecError
from servecat.hardware import DEFAULT_HARDWARE
from servecat.hardware import load_hardware as _load_hardware
from servecat.profiles import CRITERIA, Profile, load_profiles

__all__ = ["CRITERIA", "ConfigError", "Hardware", "Profile", "as_hardware", "as_profiles",
           "load_hardware", "load_profiles"]

# One error type for bad YAML everywhere (file and field in the message); the old name stays.
ConfigError = SpecError


@dataclass(frozen=True, slots=True)
class Hardware:
    """A GPU type (or the CPU host) with its prices per GPU-hour in USD."""

    name: str
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float
    memory_gb: float | None = None
    counts: tuple[int, ...] = (1,)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["counts"] = list(self.counts)
        return d


def load_hardware(path: str | Path = DEFAULT_HARDWARE) -> list[Hardware]:
    """The price view of the hardware table, read by servecat.hardware's loader (the one loader)."""
    return [Hardware(name=h.name, on_demand_usd_per_hour=h.on_demand_usd_per_hour,
                     spot_usd_per_hour=h.spot_usd_per_hour, memory_gb=h.memory_gb,
                     counts=tuple(h.counts), description=h.description)
            for h in _load_hardware(path).values()]


def as_profiles(profiles: Sequence[Profile] | str | Path) -> list[Profile]:
    """Accept profiles already loaded or a path to a profiles YAML file."""
    return load_profiles(profiles) if isinstance(profiles, str | Path) else list(profiles)


def as_hardware(hardware: Sequence[Hardware] | str | Path) -> list[Hardware]:
    """Accept hardware already loaded or a path to a hardware YAML file."""
    return load_hardware(hardware) if isinstance(hardware, str | Path) else list(hardware)
