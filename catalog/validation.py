"""The estimates checked against real measurements (tests/fixtures/validation/): leave-one-
deployment-out error and interval coverage of the calibrated roofline, and how soon measuring
in the sensor's order (catalog.measure_order) recovers every profile's true top 3, beside a
random order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from catalog.calibration import error_table, leave_one_deployment_out
from catalog.estimates import METRICS, estimates_table, measured_points, workload_rows
from catalog.measure_order import candidates, priorities
from catalog.physical import level_rows, physical_leave_one_out
from catalog.recommend import build_deployments
from catalog.roofline import Assumptions, estimate
from servecat.hardware import Hardware
from servecat.profiles import Profile

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "validation"
SCORED = ("capacity_rps", "tpot_p50_ms")  # what the acceptance figures are about


@dataclass(frozen=True, slots=True)
class Measured:
    """A fixture's summary with the catalog built from it: the truth the estimates face."""

    summary: pd.DataFrame
    deployments: pd.DataFrame  # catalog.recommend's deployment table (ranked)
    levels: pd.DataFrame
    points: pd.DataFrame       # catalog.estimates.measured_points

    @property
    def names(self) -> list[str]:
        return sorted(self.summary["deployment"].astype(str).unique())


def load_fixture(folder: str | Path = FIXTURE) -> pd.DataFrame:
    """The summary rows of a validation fixture (summary.parquet); a clear error if absent."""
    path = Path(folder) / "summary.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no validation fixture at {path}: measure one with "
                                f"tests/fixtures/validation/README.md's command")
    return pd.read_parquet(path)


def measured(summary: pd.DataFrame, hardware_path: str | Path,
             profiles: Sequence[Profile]) -> Measured:
    """The catalog of SUMMARY (no bootstrap: the point figures are what is scored)."""
    cat = build_deployments(summary, None, hardware_path, list(profiles))
    return Measured(summary, cat.deployments, cat.levels,
                    measured_points(cat.deployments, cat.levels))


def held_out_errors(m: Measured, hardware: Mapping[str, Hardware],
                    profiles: Sequence[Profile], model: str = "physical"
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-row held-out predictions, the error table per metric and profile). MODEL:
    `physical` (catalog/physical.py, the estimates' own: closed loops in mixed steps), or for
    comparison `queue` (the same with closed loops as a queue's bounds) or `ridge`/`factor`
    (regressions of the operating points, catalog/calibration.py)."""
    rows = workload_rows(m.summary)
    if model in ("physical", "queue"):
        base = Assumptions() if model == "physical" else Assumptions(closed_loop="queue")
        held = physical_leave_one_out(rows, level_rows(m.summary), m.points, hardware,
                                      profiles, METRICS, base)
    else:
        held = leave_one_deployment_out(estimate(rows, hardware, profiles), m.points, METRICS,
                                        model=model)
    return held, error_table(held)


def true_top(m: Measured, top: int = 3) -> set[str]:
    """Every deployment in the top TOP of some model × length profile × profile."""
    ranked = m.deployments[pd.to_numeric(m.deployments["rank"], errors="coerce") <= top]
    return set(ranked["deployment"].astype(str))


def sensor_order(m: Measured, hardware: Mapping[str, Hardware], profiles: Sequence[Profile],
                 stop: set[str] | None = None, draws: int = 200, seed: int = 0) -> list[str]:
    """Deployments in the order the sensor measures them: each step refits the calibration on
    what is measured so far, ranks the rest by P(top 3) and measures the first. Stops once
    every deployment of STOP is measured (default: goes through all)."""
    configs = workload_rows(m.summary)
    done: list[str] = []
    names = m.names
    while len(done) < len(names) and not (stop is not None and stop <= set(done)):
        dep = m.deployments[m.deployments["deployment"].astype(str).isin(done)]
        pts = m.points[m.points["deployment"].astype(str).isin(done)]
        est = estimates_table(configs, pts, hardware, profiles,
                              summary=m.summary[m.summary["deployment"].astype(str).isin(done)])
        pri = priorities(candidates(est, dep), profiles, draws, seed + len(done))
        pri = pri[~pri["deployment"].isin(done)]
        done.append(str(pri["deployment"].iat[0]) if len(pri) else
                    next(n for n in names if n not in done))
    return done


def recovered_after(order: Sequence[str], top: set[str]) -> int:
    """How many of ORDER are measured when the last of TOP is."""
    return max(list(order).index(d) for d in top) + 1 if top else 0


def recovery(m: Measured, hardware: Mapping[str, Hardware], profiles: Sequence[Profile],
             seeds: int = 20) -> dict:
    """Share of the deployments measured when every true top 3 is, in the sensor's order and
    in random orders (mean and range over SEEDS seeds)."""
    top, n = true_top(m), len(m.names)
    sensor = sensor_order(m, hardware, profiles, stop=top)
    randoms = [recovered_after(list(np.random.default_rng(s).permutation(m.names)), top)
               for s in range(seeds)]
    # No order recovers them before it has measured them all: the floor of any order.
    return {"deployments": n, "true_top3_deployments": len(top), "best_share": len(top) / n,
            "sensor_measured": recovered_after(sensor, top),
            "sensor_share": recovered_after(sensor, top) / n,
            "random_mean_measured": float(np.mean(randoms)),
            "random_share_mean": float(np.mean(randoms)) / n,
            "random_share_min": min(randoms) / n, "random_share_max": max(randoms) / n,
            "seeds": seeds, "sensor_order": sensor}
