"""The SLO rule: one definition of "meets the SLO", per request and per load level.

A request meets a profile's SLO when it succeeded, its TTFT is within the p99 TTFT limit and
its TPOT is not over the p99 TPOT limit (a one-token output has no TPOT: NaN passes). A load
level holds the SLO when its p99 TTFT is within the limit, its p99 TPOT is not over its limit
(NaN passes) and its error rate is at most the profile's max error rate (default 0: a failed
request breaks the SLO). Unknown p99 TTFT or error rate (NaN, None) never holds.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

# The SLOs of a profile, in the order misses() reports them; also the summary columns they read.
SLO_METRICS = ("ttft_p99_ms", "tpot_p99_ms", "error_rate")
SLO_LABELS = {"ttft_p99_ms": "p99 TTFT", "tpot_p99_ms": "p99 TPOT", "error_rate": "error rate"}


@dataclass(frozen=True, slots=True)
class Slo:
    """A profile's SLOs: p99 TTFT and p99 TPOT limits in ms and the highest tolerated error rate."""

    ttft_p99_ms: float
    tpot_p99_ms: float
    max_error_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("ttft_p99_ms", "tpot_p99_ms"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and value > 0 and math.isfinite(value)):
                raise ValueError(f"slo.{name}: {value!r} is not a positive number")
        if not (isinstance(self.max_error_rate, numbers.Real) and 0 <= self.max_error_rate <= 1):
            raise ValueError(f"slo.max_error_rate: {self.max_error_rate!r} is not in [0, 1]")

    @classmethod
    def of(cls, profile: Any) -> Slo:
        """The SLO of anything carrying ttft_p99_ms and tpot_p99_ms (and maybe max_error_rate)."""
        if isinstance(profile, Slo):
            return profile
        return cls(float(profile.ttft_p99_ms), float(profile.tpot_p99_ms),
                   float(getattr(profile, "max_error_rate", 0.0) or 0.0))

    @classmethod
    def from_mapping(cls, slo: Mapping, where: str = "slo") -> Slo:
        """The SLO of a profile's YAML `slo:` block; errors name WHERE and the field."""
        if not isinstance(slo, Mapping):
            raise ValueError(f"{where}: expected a mapping with ttft_p99_ms and tpot_p99_ms")
        known = ("ttft_p99_ms", "tpot_p99_ms", "max_error_rate")
        for key in slo:
            if key not in known:
                raise ValueError(f"{where}.{key}: unknown SLO (known: {', '.join(known)})")
        values = {}
        for key in known:
            if key == "max_error_rate" and key not in slo:
                continue
            value = slo.get(key)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{where}.{key}: {value!r} is not a number")
            values[key] = value
        try:
            cls(**values)  # checks the values as written, so errors quote them unchanged
        except ValueError as exc:
            raise ValueError(f"{where}.{str(exc).removeprefix('slo.')}") from None
        return cls(**{k: float(v) for k, v in values.items()})

    def scaled(self, factor: float) -> Slo:
        """The latency limits times FACTOR (error rate unchanged): e.g. a saturation margin."""
        return replace(self, ttft_p99_ms=self.ttft_p99_ms * factor,
                       tpot_p99_ms=self.tpot_p99_ms * factor)

    def limits(self) -> np.ndarray:
        """The limits in SLO_METRICS order."""
        return np.array([self.ttft_p99_ms, self.tpot_p99_ms, self.max_error_rate])


def request_meets(ok: Any, ttft_ms: Any, tpot_ms: Any, slo: Slo) -> np.ndarray:
    """Per request: succeeded, TTFT within the limit and TPOT not over it (NaN TPOT passes)."""
    ok = np.asarray(ok, dtype=bool)
    ttft, tpot = np.asarray(ttft_ms, dtype=float), np.asarray(tpot_ms, dtype=float)
    return ok & (ttft <= slo.ttft_p99_ms) & ~(tpot > slo.tpot_p99_ms)


def misses(ttft_p99_ms: Any, tpot_p99_ms: Any, error_rate: Any, slo: Slo) -> np.ndarray:
    """Per load level, which SLOs it misses: bool array (..., 3) in SLO_METRICS order."""
    ttft, tpot, err = (np.asarray(v, dtype=float) for v in (ttft_p99_ms, tpot_p99_ms, error_rate))
    # `not <=` so that an unknown p99 TTFT or error rate misses; a NaN TPOT (one-token outputs) passes.
    return np.stack(np.broadcast_arrays(~(ttft <= slo.ttft_p99_ms), tpot > slo.tpot_p99_ms,
                                        ~(err <= slo.max_error_rate)), axis=-1)


def holds(ttft_p99_ms: Any, tpot_p99_ms: Any, error_rate: Any, slo: Slo) -> np.ndarray:
    """Per load level: p99 TTFT within, p99 TPOT not over (NaN passes), error rate at most the max."""
    return ~misses(ttft_p99_ms, tpot_p99_ms, error_rate, slo).any(axis=-1)


def level_columns(summary: Mapping | pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p99 TTFT, p99 TPOT, error rate) of summary rows; the error rate falls back to
    num_failed / num_requests, and to 0 where num_failed is 0."""
    ttft, tpot, err = (_column(summary, c) for c in SLO_METRICS)
    failed, total = _column(summary, "num_failed"), _column(summary, "num_requests")
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(np.isnan(err), np.where(total > 0, failed / total, np.nan), err)
    return ttft, tpot, np.where(np.isnan(err) & (failed == 0), 0.0, err)


def level_holds(summary: Mapping | pd.DataFrame, slo: Slo) -> Any:
    """holds() on summary rows: a bool for one summary dict, a bool array for a DataFrame."""
    out = holds(*level_columns(summary), slo)
    return out if isinstance(summary, pd.DataFrame) else bool(out[0])


def level_misses(summary: Mapping | pd.DataFrame, slo: Slo) -> np.ndarray:
    """misses() on summary rows: (rows, 3) bools in SLO_METRICS order."""
    return misses(*level_columns(summary), slo)


def describe_misses(values: Any, missed: Any, slo: Slo) -> str:
    """`p99 TTFT 812 ms > 450 ms, error rate 2.0% > 0.0%` for one level's values and misses."""
    limits = slo.limits()
    parts = []
    for name, value, limit, miss in zip(SLO_METRICS, values, limits, missed, strict=True):
        if not miss:
            continue
        if name == "error_rate":
            shown = "unknown" if np.isnan(value) else f"{value:.1%}"
            parts.append(f"error rate {shown} > {limit:.1%}")
        else:
            shown = "unknown" if np.isnan(value) else f"{value:.4g} ms"
            parts.append(f"{SLO_LABELS[name]} {shown} > {limit:.4g} ms")
    return ", ".join(parts)


def _column(summary: Mapping | pd.DataFrame, name: str) -> np.ndarray:
    """A column as float64 with None / NA as NaN: length 1 for a summary dict."""
    if isinstance(summary, pd.DataFrame):
        if name not in summary:
            return np.full(len(summary), np.nan)
        return pd.to_numeric(summary[name], errors="coerce").to_numpy(float, na_value=np.nan)
    value = summary.get(name)
    return np.array([np.nan if value is None or pd.isna(value) else value], dtype=float)
