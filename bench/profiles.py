"""Profiles as the bench layer uses them: their SLOs (servecat.profiles is the one loader)."""

from __future__ import annotations

from pathlib import Path

from bench.errors import WorkloadError
from servecat.errors import SpecError
from servecat.profiles import DEFAULT_PROFILES, Profile, parse_profile
from servecat.profiles import load_profiles as _load

DEFAULT_PROFILES_PATH = DEFAULT_PROFILES

__all__ = ["DEFAULT_PROFILES_PATH", "Profile", "as_profile", "load_profiles"]


def load_profiles(path: str | Path | None = None) -> list[Profile]:
    """Profiles from a YAML file; a profile for benchmarking needs its SLO, weights are optional."""
    try:
        return _load(path, need_weights=False)
    except SpecError as exc:
        raise WorkloadError(str(exc)) from None


def as_profile(item: object, where: str = "profile") -> Profile:
    """A Profile from a Profile or a `{name, slo: {...}}` mapping."""
    if isinstance(item, Profile):
        return item
    try:
        return parse_profile(item, where, need_weights=False)
    except SpecError as exc:
        raise WorkloadError(str(exc)) from None
