"""What `make demo` prints: its progress (deployments and workloads done of total, with an
ETA), the results in the store, and the recommendation for each profile. No Dagster here."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import pandas as pd

from catalog.report import recommendations_text
from resources.store import ResultStore
from resources.warehouse import Warehouse


@dataclass
class Progress:
    """Deployments and workloads done of the demo's total. The ETA comes from this demo's own
    pace (seconds per workload it measured), so finished workloads a re-run skips cost nothing."""

    deployments: int
    workloads: int
    deployments_done: int = 0
    workloads_done: int = 0  # finished, by this demo or an earlier one
    measured: int = 0  # finished by this demo: the pace is taken from these
    started: float = field(default_factory=time.monotonic)

    def workload_finished(self, now: bool = True) -> None:
        self.workloads_done += 1
        self.measured += now

    def line(self, at: float | None = None) -> str:
        return (f"{self.deployments_done}/{self.deployments} deployments, "
                f"{self.workloads_done}/{self.workloads} workloads, ETA {self.eta(at)}")

    def eta(self, at: float | None = None) -> str:
        left = self.workloads - self.workloads_done
        if left <= 0:
            return "0 s"
        if not self.measured:
            return "unknown until a workload finishes"
        elapsed = (time.monotonic() if at is None else at) - self.started
        return duration(left * elapsed / self.measured)


def duration(seconds: float) -> str:
    """SECONDS as a person reads a wait: `45 s`, `3 min 05 s`, `1 h 02 min`."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def results_table(store: ResultStore, warehouse: Warehouse, matrices: list[str]) -> str:
    """Every summary row of the MATRICES' deployments: the raw load levels (--verbose)."""
    with warehouse.connect(store, read_only=True) as con:
        df = con.execute("""
            SELECT deployment, workload_id, status, round(output_tokens_per_s, 1) AS tok_s,
                   round(ttft_p50_ms) AS ttft_p50, round(ttft_p99_ms) AS ttft_p99,
                   round(tpot_p50_ms, 1) AS tpot_p50, round(tpot_p99_ms, 1) AS tpot_p99,
                   round(error_rate, 3) AS err
            FROM summary WHERE list_contains(?, matrix) ORDER BY deployment, workload_index""",
            [matrices]).df()
    return "results (every measured load level):\n" + df.to_string(index=False)


def store_counts(store: ResultStore, warehouse: Warehouse) -> str:
    with warehouse.connect(store, read_only=True) as con:
        n = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
             for t in ("matrix", "summary", "requests")}
    return (f"store: {n['summary']} summary rows, {n['requests']} request rows, "
            f"{n['matrix']} matrix rows")


def recommendations(deployments: pd.DataFrame, profiles: list[Mapping], keys: Collection[str],
                    demand_rps: float | None = None) -> str:
    """The recommendation for each model × length profile × profile among the demo's
    deployments KEYS (the store may hold others, e.g. from benchmark requests)."""
    mine = deployments[deployments["deployment"].isin(set(keys))]
    return ("recommendations (deployments ranked at their operating points; load levels are "
            "never ranked):\n\n"
            + recommendations_text(mine, {p["name"]: p for p in profiles}, demand_rps))
