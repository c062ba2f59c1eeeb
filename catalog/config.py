"""Profiles and hardware prices: data from `configs/*.yaml`, checked with errors naming file and field."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

# TOPSIS criteria a profile may weight, and whether more (max) or less (min) is better.
CRITERIA: dict[str, str] = {
    "output_tokens_per_s_per_gpu": "max",
    "ttft_p99_ms": "min",
    "tpot_p99_ms": "min",
    "cost_per_mtok_on_demand": "min",
    "goodput_rps": "max",
}

DEFAULT_HARDWARE = Path("configs/hardware.yaml")
DEFAULT_PROFILES = Path("configs/profiles.yaml")


class ConfigError(ValueError):
    """A profiles or hardware file is missing a field or holds a bad value."""


@dataclass(frozen=True, slots=True)
class Profile:
    """A use case for ranking: hard p99 SLOs plus TOPSIS weights over CRITERIA."""

    name: str
    ttft_p99_ms: float
    tpot_p99_ms: float
    weights: dict[str, float] = field(default_factory=dict)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _number(where: str, value: Any, *, positive: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        kind = "a positive number" if positive else "a number >= 0"
        raise ConfigError(f"{where}: {value!r} is not {kind}")
    return float(value)


def _entries(path: Path, key: str) -> list[Any]:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list) or not doc[key]:
        raise ConfigError(f"{path}: {key}: expected a non-empty list")
    return doc[key]


def parse_profile(where: str, entry: Any) -> Profile:
    """One profile from a mapping; WHERE (e.g. `configs/profiles.yaml: profiles[2]`) prefixes errors."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping with name, slo, weights")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: {name!r} is not a non-empty string")
    slo = entry.get("slo")
    if not isinstance(slo, Mapping):
        raise ConfigError(f"{where}.slo: expected a mapping with ttft_p99_ms and tpot_p99_ms")
    for key in slo:
        if key not in ("ttft_p99_ms", "tpot_p99_ms"):
            raise ConfigError(f"{where}.slo.{key}: unknown SLO (known: ttft_p99_ms, tpot_p99_ms)")
    ttft = _number(f"{where}.slo.ttft_p99_ms", slo.get("ttft_p99_ms"), positive=True)
    tpot = _number(f"{where}.slo.tpot_p99_ms", slo.get("tpot_p99_ms"), positive=True)
    weights = entry.get("weights")
    if not isinstance(weights, Mapping) or not weights:
        raise ConfigError(f"{where}.weights: expected a mapping of criterion -> weight")
    parsed: dict[str, float] = {}
    for key, value in weights.items():
        if key not in CRITERIA:
            raise ConfigError(f"{where}.weights.{key}: unknown criterion "
                              f"(known: {', '.join(CRITERIA)})")
        parsed[key] = _number(f"{where}.weights.{key}", value)
    if sum(parsed.values()) <= 0:
        raise ConfigError(f"{where}.weights: all weights are 0")
    return Profile(name=name, ttft_p99_ms=ttft, tpot_p99_ms=tpot, weights=parsed,
                   description=str(entry.get("description", "")))


def load_profiles(path: str | Path = DEFAULT_PROFILES) -> list[Profile]:
    """Profiles from a YAML file with a top-level `profiles:` list."""
    path = Path(path)
    profiles = [parse_profile(f"{path}: profiles[{i}]", e)
                for i, e in enumerate(_entries(path, "profiles"))]
    _unique(path, "profiles", [p.name for p in profiles])
    return profiles


def load_hardware(path: str | Path = DEFAULT_HARDWARE) -> list[Hardware]:
    """Hardware types and prices from a YAML file with a top-level `hardware:` list."""
    path = Path(path)
    out = []
    for i, entry in enumerate(_entries(path, "hardware")):
        where = f"{path}: hardware[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: {name!r} is not a non-empty string")
        counts = entry.get("counts", [1])
        if not isinstance(counts, list) or not all(isinstance(c, int) and c > 0 for c in counts):
            raise ConfigError(f"{where}.counts: {counts!r} is not a list of positive integers")
        memory = entry.get("memory_gb")
        out.append(Hardware(
            name=name,
            on_demand_usd_per_hour=_number(f"{where}.on_demand_usd_per_hour",
                                           entry.get("on_demand_usd_per_hour")),
            spot_usd_per_hour=_number(f"{where}.spot_usd_per_hour", entry.get("spot_usd_per_hour")),
            memory_gb=None if memory is None else _number(f"{where}.memory_gb", memory),
            counts=tuple(counts),
            description=str(entry.get("description", "")),
        ))
    _unique(path, "hardware", [h.name for h in out])
    return out


def _unique(path: Path, key: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"{path}: {key}[{i}].name: {name!r} appears twice")
        seen.add(name)


def as_profiles(profiles: Sequence[Profile] | str | Path) -> list[Profile]:
    """Accept profiles already loaded or a path to a profiles YAML file."""
    return load_profiles(profiles) if isinstance(profiles, str | Path) else list(profiles)


def as_hardware(hardware: Sequence[Hardware] | str | Path) -> list[Hardware]:
    """Accept hardware already loaded or a path to a hardware YAML file."""
    return load_hardware(hardware) if isinstance(hardware, str | Path) else list(hardware)
