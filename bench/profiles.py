"""Profiles (use cases with SLOs) read from configs/profiles.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.errors import WorkloadError

DEFAULT_PROFILES_PATH = Path(__file__).resolve().parent.parent / "configs" / "profiles.yaml"


@dataclass(frozen=True)
class Profile:
    """A profile's SLOs: a request meets it when ttft_ms <= ttft_p99_ms and tpot_ms <= tpot_p99_ms."""

    name: str
    ttft_p99_ms: float
    tpot_p99_ms: float


def load_profiles(path: str | Path | None = None) -> list[Profile]:
    """Profiles from a YAML file (`profiles: [{name, slo: {ttft_p99_ms, tpot_p99_ms}}]`)."""
    path = Path(path) if path else DEFAULT_PROFILES_PATH
    data = yaml.safe_load(path.read_text()) or {}
    return [as_profile(p, f"{path}: profiles[{i}]") for i, p in enumerate(data.get("profiles", []))]


def as_profile(item: object, where: str = "profile") -> Profile:
    """A Profile from a Profile or a `{name, slo: {...}}` mapping."""
    if isinstance(item, Profile):
        return item
    try:
        slo = item["slo"]  # type: ignore[index]
        return Profile(str(item["name"]), float(slo["ttft_p99_ms"]), float(slo["tpot_p99_ms"]))  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as exc:
        raise WorkloadError(f"{where}: expected {{name, slo: {{ttft_p99_ms, tpot_p99_ms}}}} ({exc})") from None
