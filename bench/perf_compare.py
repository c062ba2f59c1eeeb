"""What `servecat perf engine` compares, and what it refuses to.

A ratio is taken only inside one group: rows of one method, dtype and workload from one run,
so one client, one transport and one set of engine limits. Only `http` rows are compared:
there every system is a server driven by bench.loadgen. The `in-process` rows are ceilings,
not peers: our step loop, HF `generate` and transformers' batching manager each take their
timestamps at a different point, so no ratio is taken between them either. The served builtin
engine against its own in-process core is not a ratio but the serving overhead, kept apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.perf_rows import HTTP, IN_PROCESS, PerfRow

COMPARED_METHODS = (HTTP,)
# The figures that answer each workload's question.
HEADLINE: dict[str, tuple[str, ...]] = {
    "A": ("tok_s",),  # throughput, all requests at once
    "B": ("ttft_p99_ms", "tpot_p50_ms"),  # latency under open-loop arrivals
    "c1": ("tpot_p50_ms", "ttft_p50_ms"),  # one request at a time
    "prefix": ("tok_s", "ttft_p50_ms"),  # a shared prompt prefix
}
HIGHER_IS_BETTER = frozenset({"tok_s"})


@dataclass(frozen=True, slots=True)
class Ratio:
    """How many times better the reference row is than a peer on one metric (>1: better)."""

    method: str
    dtype: str
    workload: str
    metric: str
    reference: str
    peer: str
    value: float


@dataclass(frozen=True, slots=True)
class ServingOverhead:
    """What serving over HTTP costs the builtin engine: served row vs its in-process core."""

    dtype: str
    workload: str
    served: str
    ceiling: str
    tok_s_lost_pct: float | None  # (ceiling - served) / ceiling; None for an open loop
    ttft_p50_added_ms: float | None
    tpot_p50_added_ms: float | None


def group(row: PerfRow) -> tuple[str, str, str]:
    """Rows with equal groups were measured the same way in the same run."""
    return row.method, row.dtype, row.workload


def ratios(rows: list[PerfRow]) -> list[Ratio]:
    """Each reference row against every other row of its group, on the workload's headline."""
    out = []
    for ref in rows:
        if not ref.reference or ref.method not in COMPARED_METHODS:
            continue
        for peer in rows:
            if peer is ref or group(peer) != group(ref):
                continue
            for metric in HEADLINE.get(ref.workload, ("tok_s",)):
                value = _times_better(metric, getattr(ref, metric), getattr(peer, metric))
                if value is not None:
                    out.append(Ratio(*group(ref), metric, ref.system, peer.system, value))
    return out


def _times_better(metric: str, ours: float | None, peer: float | None) -> float | None:
    if not ours or not peer:
        return None
    return round(ours / peer if metric in HIGHER_IS_BETTER else peer / ours, 2)


def serving_overheads(rows: list[PerfRow]) -> list[ServingOverhead]:
    """Per served reference row, the in-process builtin row of its dtype and workload."""
    out = []
    for served in rows:
        if not (served.reference and served.method == HTTP and served.engine == "builtin"):
            continue
        core = next((r for r in rows if r.method == IN_PROCESS and r.engine == "builtin"
                     and (r.dtype, r.workload) == (served.dtype, served.workload)), None)
        if core is None:
            continue
        # An open loop's throughput is its arrival rate, whatever serving costs.
        lost = (None if not (core.tok_s and served.tok_s) or served.rate is not None
                else round(100 * (core.tok_s - served.tok_s) / core.tok_s, 1))
        out.append(ServingOverhead(
            served.dtype, served.workload, served.system, core.system, lost,
            _added(served.ttft_p50_ms, core.ttft_p50_ms),
            _added(served.tpot_p50_ms, core.tpot_p50_ms)))
    return out


def _added(served: float | None, core: float | None) -> float | None:
    return None if served is None or core is None else round(served - core, 1)
