"""Profiles (`configs/profiles.yaml`): use cases with SLOs and ranking weights — one loader.

The bench layer reads a profile's SLO (what meets it is servecat.slo's rule) and the catalog
reads its weights too; both load them here, so one file means one thing everywhere. Errors
are SpecErrors naming the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from servecat.errors import SpecError, load_yaml, unique
from servecat.slo import Slo

DEFAULT_PROFILES = Path(__file__).resolve().parent.parent / "configs" / "profiles.yaml"

# Criteria a profile may weight, and whether more (max) or less (min) is better.
CRITERIA: dict[str, str] = {
    "output_tokens_per_s_per_gpu": "max",
    "ttft_p99_ms": "min",
    "tpot_p99_ms": "min",
    "cost_per_mtok_on_demand": "min",
    "goodput_rps": "max",
}
# Quality against the model's most precise deployment measured (bench/quality_compare.py). A
# deployment may have no figure (never probed, no logprobs), so unlike the criteria above it is
# required only where a profile weights it; no profile weights it unless its YAML says so.
QUALITY_CRITERIA: dict[str, str] = {"quality_kl": "min"}
# What a deployment is ranked on at its operating point (catalog/recommend.py): the criteria
# above plus its capacity and quality. Profiles may weight any of these; per-config rows ignore
# capacity_rps and quality_kl.
DEPLOYMENT_CRITERIA: dict[str, str] = {**CRITERIA, "capacity_rps": "max", **QUALITY_CRITERIA}
# The quality figures `max_quality_loss` may limit, and which way: a KL or perplexity ratio at
# most the limit, a greedy agreement at least it.
QUALITY_LIMITS: dict[str, str] = {"kl": "max", "perplexity_ratio": "max", "agreement": "min"}


@dataclass(frozen=True, slots=True)
class Profile:
    """A use case for ranking: hard SLOs (p99 TTFT, p99 TPOT, error rate) plus criteria weights."""

    name: str
    ttft_p99_ms: float
    tpot_p99_ms: float
    weights: dict[str, float] = field(default_factory=dict)
    description: str = ""
    max_error_rate: float = 0.0
    # Quality figure -> limit (QUALITY_LIMITS); empty: quality does not gate the ranking.
    max_quality_loss: dict[str, float] = field(default_factory=dict)

    @property
    def slo(self) -> Slo:
        return Slo(self.ttft_p99_ms, self.tpot_p99_ms, self.max_error_rate)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_profile(entry: Any, where: str, source: str = "profile",
                  need_weights: bool = True) -> Profile:
    """One profile from its YAML mapping; WHERE (`profiles[2]`) and SOURCE name errors."""
    def fail(path: str, message: str) -> SpecError:
        return SpecError(source, path, message)

    if not isinstance(entry, Mapping):
        raise fail(where, "expected a mapping with name, slo, weights")
    unknown = sorted(set(entry) - {"name", "description", "slo", "weights", "max_quality_loss"})
    if unknown:
        raise fail(f"{where}.{unknown[0]}", "unknown field (known: name, description, slo, "
                                            "weights, max_quality_loss)")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail(f"{where}.name", f"{name!r} is not a non-empty string")
    try:
        slo = Slo.from_mapping(entry.get("slo"), "slo")
    except ValueError as exc:  # "slo.ttft_p99_ms: -1 is not ..." -> this file's field path
        path, _, message = str(exc).partition(": ")
        raise fail(f"{where}.{path}", message) from None
    weights = entry.get("weights")
    if weights is None and not need_weights:
        weights = {}
    elif not isinstance(weights, Mapping) or not weights:
        raise fail(f"{where}.weights", "expected a mapping of criterion -> weight")
    parsed: dict[str, float] = {}
    for key, value in weights.items():
        if key not in DEPLOYMENT_CRITERIA:
            raise fail(f"{where}.weights.{key}",
                       f"unknown criterion (known: {', '.join(DEPLOYMENT_CRITERIA)})")
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or value < 0:
            raise fail(f"{where}.weights.{key}", f"{value!r} is not a number >= 0")
        parsed[key] = float(value)
    if parsed and sum(parsed.values()) <= 0:
        raise fail(f"{where}.weights", "all weights are 0")
    limits = (_quality_limits(entry["max_quality_loss"], f"{where}.max_quality_loss", source)
              if "max_quality_loss" in entry else {})
    return Profile(name=name, ttft_p99_ms=slo.ttft_p99_ms, tpot_p99_ms=slo.tpot_p99_ms,
                   weights=parsed, description=str(entry.get("description", "")),
                   max_error_rate=slo.max_error_rate, max_quality_loss=limits)


def _quality_limits(value: Any, where: str, source: str) -> dict[str, float]:
    """A profile's `max_quality_loss` mapping, each limit checked against its figure's range."""
    if not isinstance(value, Mapping) or not value:
        raise SpecError(source, where, f"expected a mapping of quality figure -> limit "
                                       f"({', '.join(QUALITY_LIMITS)})")
    # Why each range: a KL is >= 0; agreement is a share; a perplexity-ratio limit below 1
    # would turn away the reference deployment itself (its ratio is 1 by definition).
    ranges = {"kl": (0.0, math.inf, "a number >= 0"),
              "agreement": (0.0, 1.0, "a number in [0, 1]"),
              "perplexity_ratio": (1.0, math.inf, "a number >= 1")}
    out: dict[str, float] = {}
    for key, limit in value.items():
        if key not in QUALITY_LIMITS:
            raise SpecError(source, f"{where}.{key}", f"unknown quality figure (known: "
                                                      f"{', '.join(QUALITY_LIMITS)})")
        low, high, words = ranges[key]
        if isinstance(limit, bool) or not isinstance(limit, int | float) \
                or not math.isfinite(limit) or not low <= limit <= high:
            raise SpecError(source, f"{where}.{key}", f"{limit!r} is not {words}")
        out[key] = float(limit)
    return out


def load_profiles(path: str | Path | None = None, need_weights: bool = True) -> list[Profile]:
    """Profiles from a YAML file with a top-level non-empty `profiles:` list, names unique."""
    path = Path(path or DEFAULT_PROFILES)
    if not path.is_file():
        raise SpecError(str(path), "", "file not found")
    doc = load_yaml(path)
    entries = doc.get("profiles") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SpecError(str(path), "profiles", "expected a non-empty list")
    profiles = [parse_profile(e, f"profiles[{i}]", str(path), need_weights)
                for i, e in enumerate(entries)]
    unique(str(path), "profiles", (p.name for p in profiles))
    return profiles
