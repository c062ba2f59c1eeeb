"""One deployment's sweep: its workloads in matrix order against one running server.

Pure logic below the Dagster line: which workloads still need measuring (resume), when to stop
climbing load levels (saturation), and what each workload's outcome row says. The caller
writes each outcome as soon as it exists, so an interrupted sweep loses at most the workload
in flight.

A capacity search row (bench.capacity_search) is measured as the probes its search chooses,
each written as a config of its own; the search row itself is then written as `skipped` with
the brackets found as its reason (it is no load level: capacity and the catalog leave it out,
and a finished search is not run again). Probes already finished are recalled, not measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime

import pyarrow as pa

from bench.capacity_search import Search, SearchLog, describe, probe_config
from bench.endpoint import Endpoint
from bench.errors import EndpointBroken
from bench.loadgen import run_workload
from bench.profiles import Profile
from bench.server_metrics import server_view
from bench.telemetry import GpuSampler
from bench.workload import Workload
from servecat.slo import Slo, level_holds
from servecat.values import plain

WORKLOAD_FIELDS = tuple(f.name for f in fields(Workload))
DONE_STATUSES = ("ok", "skipped")


@dataclass
class Outcome:
    """What happened to one config: measured (ok), skipped with a reason, or failed."""

    config: dict
    status: str
    reason: str | None = None
    summary: dict | None = None
    requests: pa.Table | None = None

    def summary_row(self) -> dict:
        """The summary row: config identity + status + metrics (nulls when not measured)."""
        return {**self.config, "status": self.status, "status_reason": self.reason,
                "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                **(self.summary or {})}


@dataclass(frozen=True)
class Saturation:
    """When to stop climbing: the loosest profile's SLO, latencies scaled by `margin`, does not
    hold (servecat.slo) and output throughput grew by less than `min_growth` over the last level."""

    ttft_p99_ms: float
    tpot_p99_ms: float
    margin: float = 2.0
    min_growth: float = 0.05
    max_error_rate: float = 0.0

    @classmethod
    def loosest(cls, profiles: Iterable[Profile], **kw) -> Saturation:
        profs = [Slo.of(p) for p in profiles]
        return cls(max(p.ttft_p99_ms for p in profs), max(p.tpot_p99_ms for p in profs),
                   max_error_rate=max(p.max_error_rate for p in profs), **kw)

    def reason(self, summary: Mapping, previous: Mapping | None) -> str | None:
        """Why the levels above this one are not worth measuring, or None."""
        if previous is None:
            return None
        slo = Slo(self.ttft_p99_ms, self.tpot_p99_ms, self.max_error_rate).scaled(self.margin)
        now, before = summary.get("output_tokens_per_s") or 0.0, previous.get("output_tokens_per_s") or 0.0
        if not level_holds(summary, slo) and now < before * (1 + self.min_growth):
            ttft, tpot = summary.get("ttft_p99_ms") or 0.0, summary.get("tpot_p99_ms") or 0.0
            return (f"saturated: p99 TTFT {ttft:.0f} ms / TPOT {tpot:.1f} ms / errors "
                    f"{summary.get('error_rate') or 0.0:.1%} miss {self.margin:g}x the loosest "
                    f"SLOs ({self.ttft_p99_ms:.0f} / {self.tpot_p99_ms:.0f} ms, errors <= "
                    f"{self.max_error_rate:.1%}) and throughput {now:.1f} tok/s did not grow "
                    f"over {before:.1f} tok/s")
        return None


def workload_of(config: Mapping) -> Workload:
    """The Workload a matrix row describes."""
    values = {f: plain(config[f]) for f in WORKLOAD_FIELDS if f in config}
    for f in ("concurrency", "max_concurrency", "input_min", "input_max", "output_min",
              "output_max", "input_tokens", "output_tokens", "requests", "warmup_requests"):
        if values.get(f) is not None:
            values[f] = int(values[f])
    return Workload(**values)


def _level_group(config: Mapping) -> tuple:
    return (config["lengths"], config["load"])


def is_search(config: Mapping) -> bool:
    """A capacity search row (measured as the probes it chooses), not a load level."""
    return bool(plain(config.get("search")))


def sweep(configs: list[dict], endpoint: Endpoint, tokenizer, profiles: list[Profile],
          done: Collection[str], on_outcome: Callable[[Outcome], None],
          check_alive: Callable[[], None] = lambda: None,
          saturation: Saturation | None = None, log: Callable[[str], None] = print,
          scrape: Callable[[], dict[str, float]] | None = None,
          recall: Callable[[dict], Mapping | None] | None = None,
          realtime: bool = False, sampler: GpuSampler | None = None) -> list[Outcome]:
    """Measure CONFIGS (one deployment, matrix order) except those in DONE; call ON_OUTCOME
    after each. A failed workload (server died, error threshold) ends the sweep with it.
    SCRAPE (the server's parsed /metrics) adds the server's own view as `server_*` columns.
    RECALL gives the summary row of a finished config (a search's probe in DONE), so a resumed
    search reuses it; without it such a probe is measured again. REALTIME runs the load
    generator at real-time priority where allowed (bench.priority). SAMPLER (this host's
    GPUs) adds their utilisation, memory and power during each workload as `gpu_*` columns."""
    saturation = saturation or Saturation.loosest(profiles)

    def measure(config: dict) -> Outcome:
        before = scrape() if scrape else {}
        if sampler:
            sampler.start()
        try:
            outcome = _measure(config, endpoint, tokenizer, profiles, check_alive, log, realtime)
        finally:
            gpu = sampler.stop() if sampler else {}
        if outcome.summary is not None:
            outcome.summary.update(gpu)
        if scrape and outcome.summary is not None:
            outcome.summary.update(server_view(before, scrape()))
        return outcome

    outcomes: list[Outcome] = []
    previous: dict[tuple, dict] = {}
    stopped: dict[tuple, str] = {}
    for config in configs:
        group = _level_group(config)
        if config["config_id"] in done:
            continue
        if is_search(config):
            outcomes += search_outcomes(config, measure, on_outcome, profiles, saturation, done,
                                        recall)
            if outcomes and outcomes[-1].status == "failed":
                break
            continue
        if group in stopped:
            outcome = Outcome(config, "skipped", stopped[group])
        else:
            outcome = measure(config)
            if outcome.status == "ok":
                why = saturation.reason(outcome.summary, previous.get(group))
                if why:
                    stopped[group] = f"{why} (at {_level(config)})"
                previous[group] = outcome.summary
        on_outcome(outcome)
        outcomes.append(outcome)
        if outcome.status == "failed":
            break
    return outcomes


class _ProbeFailed(Exception):
    """A probe failed (server died, error threshold): the search and the sweep end."""


def search_outcomes(config: dict, measure: Callable[[dict], Outcome],
                    on_outcome: Callable[[Outcome], None], profiles: list[Profile],
                    saturation: Saturation, done: Collection[str] = (),
                    recall: Callable[[dict], Mapping | None] | None = None) -> list[Outcome]:
    """Run one capacity search row: each probe measured (MEASURE) or recalled, and written
    (ON_OUTCOME) as it finishes, then the search row itself, `skipped` with its brackets.

    The saturation stop holds inside a search too: above a probe where the loosest SLO (with
    its margin) fails and throughput stopped growing, no load is measured: each counts as a
    failure for every profile. A failed probe ends the search, failed, and nothing is written
    for the search row, so a re-run resumes it.
    """
    search = Search.of(config)
    by_name = {p.name: Slo.of(p) for p in profiles}
    unknown = [n for n in search.profiles if n not in by_name]
    if unknown:
        out = Outcome(config, "failed", f"capacity search: unknown profile {unknown[0]!r} "
                                        f"(profiles: {', '.join(by_name)})")
        on_outcome(out)
        return [out]
    outcomes: list[Outcome] = []
    seen: dict[float, Mapping | None] = {}
    trace = SearchLog()
    saturated_at = math.inf

    def probe(x: float) -> Mapping | None:
        nonlocal saturated_at
        if x in seen:
            return seen[x]
        if x >= saturated_at:
            seen[x] = None
            return None
        pc = probe_config(config, x)
        row = recall(pc) if recall and pc["config_id"] in done else None
        if row is not None and row.get("status") == "ok":
            trace.reused.append(x)
            summary: Mapping = row
        else:
            outcome = measure(pc)
            on_outcome(outcome)
            outcomes.append(outcome)
            if outcome.status == "invalid":  # no load at or above x can be given: stop there
                saturated_at = min(saturated_at, x)
                trace.saturated = f"not measured at or above {_level(pc)}: {outcome.reason}"
                seen[x] = None
                return None
            if outcome.status != "ok":
                raise _ProbeFailed
            trace.measured.append(x)
            summary = outcome.summary
        trace.wall_s += summary.get("wall_s") or 0.0
        below = [v for v, s in seen.items() if v < x and s is not None]
        why = saturation.reason(summary, seen[max(below)] if below else None)
        if why and x < saturated_at:
            saturated_at = x
            trace.saturated = f"not measured above {_level(pc)}: {why}"
        seen[x] = summary
        return summary

    try:
        brackets = search.run(probe, by_name)
    except _ProbeFailed:
        return outcomes
    out = Outcome(config, "skipped", describe(search, brackets, trace), {"wall_s": trace.wall_s})
    on_outcome(out)
    return [*outcomes, out]


def _level(config: Mapping) -> str:
    return (f"concurrency {config['concurrency']}" if config["load"] == "concurrency"
            else f"rate {config['rate']:g}/s")


def _why_broken(exc: EndpointBroken, check_alive: Callable[[], None],
                grace_s: float = 2.0) -> str:
    """A dying server refuses connections a moment before its exit status can be read (the
    kernel closes its sockets first): wait that moment, so its exit is the reason reported."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            check_alive()
        except Exception as dead:  # the server died: that is the reason to report
            return str(dead)
        if time.monotonic() >= deadline:
            return f"endpoint broken: {exc}"
        time.sleep(0.05)


def _measure(config, endpoint, tokenizer, profiles, check_alive, log,
             realtime: bool = False) -> Outcome:
    started = time.perf_counter()
    try:
        check_alive()
        result = run_workload(endpoint, workload_of(config), tokenizer, profiles=profiles,
                              realtime=realtime)
        check_alive()
    except EndpointBroken as exc:
        return Outcome(config, "failed", _why_broken(exc, check_alive))
    except Exception as exc:
        return Outcome(config, "failed", f"{type(exc).__name__}: {exc}")
    s = result.summary
    s["wall_s"] = time.perf_counter() - started  # warm-up included: what the sweep spent
    log(f"{config['workload_id']}: {s.get('output_tokens_per_s', 0):.1f} tok/s, "
        f"p99 TTFT {s.get('ttft_p99_ms') or 0:.0f} ms, errors {s.get('error_rate', 0):.1%} "
        f"({time.perf_counter() - started:.1f} s)")
    if s.get("valid") is False:  # the client did not give the load asked for (bench/validity.py)
        return Outcome(config, "invalid", s.get("invalid_reason"), s, result.requests)
    return Outcome(config, "ok", None, s, result.requests)
