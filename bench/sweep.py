"""Many workloads against one endpoint: a sweep over concurrencies or rates, and an SLO search."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.endpoint import Endpoint
from bench.errors import EndpointBroken
from bench.loadgen import WorkloadResult, run_workload
from bench.profiles import Profile
from bench.search import double_then_bisect
from bench.tokens import Tokenizer
from bench.workload import Workload
from servecat.slo import Slo, level_holds


def levels(base: Workload, concurrencies: Sequence[int] = (),
           rates: Sequence[float] = ()) -> list[Workload]:
    """`base` at each concurrency (closed loop), then at each rate (open loop)."""
    return ([dataclasses.replace(base, load="concurrency", concurrency=c, rate=None)
             for c in concurrencies]
            + [dataclasses.replace(base, load="rate", rate=r, concurrency=None) for r in rates])


def sweep(endpoint: Endpoint, base: Workload, tokenizer: str | Path | Tokenizer,
          concurrencies: Sequence[int] = (), rates: Sequence[float] = (),
          profiles: list | None = None, **kwargs) -> list[tuple[Workload, WorkloadResult]]:
    """Run `base` once per concurrency (closed loop) or per rate (open loop)."""
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer(tokenizer)
    return [(w, run_workload(endpoint, w, tok, profiles, **kwargs))
            for w in levels(base, concurrencies, rates)]


def meets(summary: dict[str, object], profile: Profile) -> bool:
    """Whether one workload's summary holds PROFILE's SLO (servecat.slo.level_holds)."""
    return level_holds(summary, Slo.of(profile))


@dataclass
class SloSearch:
    """The highest concurrency that met the profile (None if even the lowest failed), the
    lowest that failed above it (None if none did up to the maximum), and every probe."""

    profile: str
    best_concurrency: int | None
    probes: list[tuple[int, bool, dict[str, object]]] = field(default_factory=list)
    first_failure: int | None = None


def slo_search(endpoint: Endpoint, base: Workload, tokenizer: str | Path | Tokenizer,
               profile: Profile, start: int = 1, max_concurrency: int = 1024,
               requests_per_slot: int = 2, on_probe: Callable | None = None, **kwargs) -> SloSearch:
    """Double the concurrency from `start` until the profile's SLOs fail, then bisect.

    Each probe runs max(base.requests, requests_per_slot * concurrency) requests, so every
    worker sends several. A broken endpoint (early stop) counts as a failed probe; its summary
    keeps the reason as `invalid_reason`. `max_concurrency` itself is probed, so a search that
    never fails has held up to it.
    """
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer(tokenizer)
    out = SloSearch(profile.name, None)

    def probe(level: float) -> bool:
        c = int(level)
        w = dataclasses.replace(base, load="concurrency", concurrency=c, rate=None,
                                requests=max(base.requests, requests_per_slot * c))
        try:
            summary = run_workload(endpoint, w, tok, [profile], **kwargs).summary
        except EndpointBroken as exc:
            summary = {**(exc.result.summary if exc.result else {}), "early_stopped": True,
                       "valid": False, "invalid_reason": f"stopped early: {exc}"}
        ok = meets(summary, profile)
        out.probes.append((c, ok, summary))
        if on_probe:
            on_probe(c, ok, summary)
        return ok

    good, bad = double_then_bisect(probe, start, max_concurrency, snap=math.floor,
                                   reach_maximum=True)
    out.best_concurrency = None if good is None else int(good)
    out.first_failure = None if bad is None else int(bad)
    return out
