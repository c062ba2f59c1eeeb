"""A capacity search: the load levels a deployment measures, chosen as it goes.

A search row of the matrix (`search` true) names a load kind, a range, the profiles whose
capacity it brackets and a precision. For each profile in turn, double_then_bisect doubles the
load from the range's bottom while the profile's SLO holds (servecat.slo), then bisects
(geometrically for rates, which span decades; by halves for integer concurrencies) until the
last pass and the first failure are within the precision: fail <= pass x (1 + precision), or
adjacent concurrencies. The profiles share one table of probes, so a load measured for one is
never measured again for another, and a probe is a config of its own, with an id derived from
its search and its load, so a resumed search finds the probes it already measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.matrix import load_tag, slug, stable_hash
from bench.search import double_then_bisect
from servecat.slo import Slo, level_holds

# Significant digits of a probed rate: a readable id, and far finer than any useful precision.
RATE_DIGITS = 3


@dataclass(frozen=True, slots=True)
class Search:
    """One capacity search: load kind, range, the profiles it brackets, its precision."""

    kind: str  # "concurrency" or "rate"
    low: float
    high: float
    profiles: tuple[str, ...]
    precision: float

    @classmethod
    def of(cls, config: Mapping) -> Search:
        """The search a matrix row describes."""
        return cls(str(config["load"]), float(config["search_min"]), float(config["search_max"]),
                   tuple(p for p in str(config["search_slo"]).split(",") if p),
                   float(config["search_precision"]))

    @property
    def geometric(self) -> bool:
        return self.kind == "rate"

    def snap(self, x: float) -> float:
        """A probe's load: a whole concurrency, or a rate to a few significant digits."""
        if self.kind == "concurrency":
            return math.floor(x)
        digits = max(RATE_DIGITS, math.ceil(-math.log10(self.precision)) + 2)
        return float(f"{x:.{digits}g}")

    def tight(self, good: float, bad: float) -> bool:
        """The bracket is narrow enough: within the precision, or adjacent concurrencies."""
        return bad <= good * (1 + self.precision) or (self.kind == "concurrency" and bad - good <= 1)

    def run(self, probe: Callable[[float], Mapping | None], slos: Mapping[str, Slo]
            ) -> dict[str, tuple[float | None, float | None]]:
        """Per profile, (last pass, first failure). PROBE returns a load's summary, or None
        when it was not measured (above a saturated probe): a failure for every profile."""
        brackets = {}
        for name in self.profiles:
            slo = slos[name]

            def passes(x: float, slo: Slo = slo) -> bool:
                summary = probe(x)
                return summary is not None and bool(level_holds(summary, slo))

            brackets[name] = double_then_bisect(
                passes, self.snap(self.low), self.snap(self.high), geometric=self.geometric,
                snap=self.snap, tight=self.tight, reach_maximum=True)
        return brackets

    def doubling_probes(self) -> int:
        """Probes the doubling climb takes at most: low, 2 low, ... and high itself."""
        return math.floor(math.log2(self.high / self.low)) + 1 + (
            not math.log2(self.high / self.low).is_integer())

    def bisection_probes(self) -> int:
        """Probes one profile's bisection takes at most, from a bracket of ratio 2."""
        if self.geometric:  # each probe halves log(fail / pass), from log 2 to log(1 + precision)
            return max(math.ceil(math.log2(math.log(2) / math.log1p(self.precision))), 0)
        return max(math.ceil(math.log2(1 / self.precision)), 0)  # width g halves down to p x g

    def max_probes(self) -> int:
        """The most probes the search measures: one climb shared, a bisection per profile."""
        return self.doubling_probes() + len(self.profiles) * self.bisection_probes()


def search_probes(configs: pd.DataFrame) -> np.ndarray:
    """Per matrix row, the most probes it measures: Search.max_probes() for a search row, 1
    for a fixed level (vectorised, for planning and the matrix summary)."""
    if "search" not in configs:
        return np.ones(len(configs), int)
    search = configs["search"].fillna(False).astype(bool).to_numpy()
    lo, hi, p = (configs[c].astype(float).to_numpy(float, na_value=np.nan)
                 for c in ("search_min", "search_max", "search_precision"))
    with np.errstate(invalid="ignore", divide="ignore"):
        octaves = np.log2(hi / lo)
        climb = np.floor(octaves) + 1 + (octaves != np.floor(octaves))
        rate = configs["load"].astype(str).to_numpy() == "rate"
        halvings = np.where(rate, np.ceil(np.log2(np.log(2) / np.log1p(p))), np.ceil(-np.log2(p)))
    profiles = configs["search_slo"].astype("string").fillna("").str.count(",").to_numpy() + 1
    total = climb + profiles * np.maximum(halvings, 0)
    return np.where(search, np.nan_to_num(total), 1).astype(int)


def grid_levels(low: float, high: float, precision: float) -> int:
    """Levels a fixed geometric grid needs to bracket any capacity in [LOW, HIGH] within
    PRECISION: neighbours a factor (1 + precision) apart, both ends included."""
    return math.ceil(math.log(high / low) / math.log1p(precision)) + 1


def probe_config(search_row: Mapping, value: float) -> dict:
    """The config that measures SEARCH_ROW at one load VALUE: the search's row with its level
    set, `probe_of` naming the search, and an id derived from the search and the value (and
    starting with the deployment's hash, like every config id)."""
    kind = search_row["load"]
    # One type per kind, so that 16 and 16.0 are one probe with one id.
    value = int(value) if kind == "concurrency" else float(value)
    level = ({"concurrency": value, "rate": None} if kind == "concurrency"
             else {"concurrency": None, "rate": value})
    row = {**search_row, **level, "search": False, "probe_of": search_row["config_id"]}
    h = stable_hash({"probe_of": search_row["config_id"], "load": kind, "level": value})
    row["config_id"] = str(search_row["config_id"])[:8] + h[:8]
    row["workload_id"] = f"{slug(str(row['lengths']), 20)}-{load_tag(row)}-{h[:6]}"
    return row


@dataclass
class SearchLog:
    """What a search did: probes measured now and reused, and where it stopped climbing."""

    measured: list[float] = field(default_factory=list)
    reused: list[float] = field(default_factory=list)
    saturated: str | None = None
    wall_s: float = 0.0


def describe(search: Search, brackets: Mapping[str, tuple[float | None, float | None]],
             log: SearchLog) -> str:
    """The search row's status reason: range, probes, and each profile's bracket."""
    unit = "/s" if search.kind == "rate" else ""
    parts = []
    for name, (good, bad) in brackets.items():
        if good is None and bad is None:
            parts.append(f"{name}: not probed")
        elif good is None:
            parts.append(f"{name}: misses at the lowest load, {bad:g}{unit}")
        elif bad is None:
            parts.append(f"{name}: holds up to the max, {good:g}{unit} (a lower bound)")
        else:
            parts.append(f"{name}: holds at {good:g}{unit}, misses at {bad:g}{unit}")
    text = (f"capacity search over {search.kind} {search.low:g}-{search.high:g}{unit} to "
            f"{search.precision:.0%}: {len(log.measured) + len(log.reused)} probes "
            f"({len(log.reused)} reused); " + "; ".join(parts))
    return text + (f"; {log.saturated}" if log.saturated else "")
