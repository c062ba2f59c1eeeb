"""A workload: prompt/output length distribution x load pattern x request count or duration."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

from bench.errors import WorkloadError

DISTS = ("fixed", "uniform", "normal")
LOADS = ("concurrency", "rate")
ARRIVALS = ("constant", "poisson", "gamma")
APIS = ("completions", "chat")


@dataclass(frozen=True, kw_only=True)
class Workload:
    """One workload of the matrix; the matrix writes exactly these fields as columns.

    Lengths: `input_dist` fixed (always `input_tokens`), uniform (integers in
    [input_min, input_max]) or normal (mean `input_tokens`, std `input_std`, clipped to
    [input_min, input_max] when given); the same for output. Load: `concurrency` N requests in
    flight (closed loop), or `rate` requests/s with constant, Poisson or gamma arrivals
    (`burstiness` is the gamma shape: 1 is Poisson, below 1 burstier), optionally capped at
    `max_concurrency` (open loop). The run stops after `requests` measured requests or
    `duration_s` seconds, whichever comes first; `warmup_requests` run before and are not
    measured.
    """

    lengths: str = "custom"
    input_dist: str = "fixed"
    input_tokens: int = 128
    input_min: int | None = None
    input_max: int | None = None
    input_std: float = 0.0
    output_dist: str = "fixed"
    output_tokens: int = 128
    output_min: int | None = None
    output_max: int | None = None
    output_std: float = 0.0
    load: str = "concurrency"
    concurrency: int | None = None
    rate: float | None = None
    arrival: str = "poisson"
    burstiness: float = 1.0
    max_concurrency: int | None = None
    requests: int = 100
    duration_s: float | None = None
    warmup_requests: int = 0
    shared_prefix_tokens: int = 0
    api: str = "completions"
    seed: int = 0

    def __post_init__(self) -> None:
        for side in ("input", "output"):
            self._check_lengths(side)
        self._check(self.load in LOADS, "load", f"{self.load!r} is not one of {', '.join(LOADS)}")
        if self.load == "concurrency":
            self._check(_positive(self.concurrency), "concurrency",
                        f"must be a positive integer with load=concurrency, got {self.concurrency!r}")
        else:
            self._check(_finite_positive(self.rate), "rate",
                        f"must be a finite number > 0 with load=rate, got {self.rate!r}")
            self._check(self.arrival in ARRIVALS, "arrival",
                        f"{self.arrival!r} is not one of {', '.join(ARRIVALS)}")
            self._check(_finite_positive(self.burstiness), "burstiness",
                        f"must be a finite number > 0, got {self.burstiness!r}")
            self._check(self.max_concurrency is None or _positive(self.max_concurrency),
                        "max_concurrency", f"must be a positive integer, got {self.max_concurrency!r}")
        self._check(_positive(self.requests), "requests", f"must be >= 1, got {self.requests!r}")
        self._check(self.duration_s is None or _finite_positive(self.duration_s), "duration_s",
                    f"must be a finite number > 0, got {self.duration_s!r}")
        self._check(self.warmup_requests >= 0, "warmup_requests", "must be >= 0")
        self._check(self.shared_prefix_tokens >= 0, "shared_prefix_tokens", "must be >= 0")
        self._check(self.api in APIS, "api", f"{self.api!r} is not one of {', '.join(APIS)}")

    def _check_lengths(self, side: str) -> None:
        dist, mean = getattr(self, f"{side}_dist"), getattr(self, f"{side}_tokens")
        lo, hi, std = (getattr(self, f"{side}_{k}") for k in ("min", "max", "std"))
        self._check(dist in DISTS, f"{side}_dist", f"{dist!r} is not one of {', '.join(DISTS)}")
        self._check(_positive(mean), f"{side}_tokens", f"must be >= 1, got {mean!r}")
        if dist == "uniform":
            self._check(_positive(lo) and _positive(hi) and lo <= hi, f"{side}_min/{side}_max",
                        f"uniform needs 1 <= min <= max, got {lo!r}..{hi!r}")
        if dist == "normal":
            self._check(std >= 0, f"{side}_std", f"must be >= 0, got {std!r}")
            self._check((lo is None or _positive(lo)) and (hi is None or _positive(hi))
                        and (lo is None or hi is None or lo <= hi), f"{side}_min/{side}_max",
                        f"normal clips to 1 <= min <= max, got {lo!r}..{hi!r}")

    def _check(self, ok: bool, field: str, why: str) -> None:
        if not ok:
            raise WorkloadError(f"workload {self.lengths!r}: {field}: {why}")

    @property
    def target_rate(self) -> float | None:
        """Requests/s asked for (open loop), None for a closed loop."""
        return self.rate if self.load == "rate" else None

    @property
    def level(self) -> str:
        """The load level in words: `concurrency 8` or `rate 2.5/s` (requests per second)."""
        return (f"concurrency {self.concurrency}" if self.load == "concurrency"
                else f"rate {self.rate:g}/s")


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _finite_positive(value: object) -> bool:
    """A real number > 0 that is not inf or NaN (NaN compares false, so `> 0` alone lets it by)."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


WORKLOAD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Workload))

_SPEC = re.compile(r"^(?:(fixed|uniform|normal):)?([0-9.:]+)$")


def parse_length_spec(spec: str, side: str) -> dict[str, object]:
    """`N`, `fixed:N`, `uniform:MIN:MAX` or `normal:MEAN:STD[:MIN:MAX]` -> Workload fields."""
    m = _SPEC.match(spec.strip())
    try:
        if not m:
            raise ValueError
        dist, parts = m.group(1) or "fixed", m.group(2).split(":")
        if dist == "fixed" and len(parts) == 1:
            return {f"{side}_dist": "fixed", f"{side}_tokens": int(parts[0])}
        if dist == "uniform" and len(parts) == 2:
            lo, hi = int(parts[0]), int(parts[1])
            return {f"{side}_dist": "uniform", f"{side}_tokens": (lo + hi) // 2,
                    f"{side}_min": lo, f"{side}_max": hi}
        if dist == "normal" and len(parts) in (2, 4):
            out: dict[str, object] = {f"{side}_dist": "normal", f"{side}_tokens": int(parts[0]),
                                      f"{side}_std": float(parts[1])}
            if len(parts) == 4:
                out |= {f"{side}_min": int(parts[2]), f"{side}_max": int(parts[3])}
            return out
        raise ValueError
    except ValueError:
        raise WorkloadError(
            f"--{side}-tokens {spec!r}: expected N, fixed:N, uniform:MIN:MAX or "
            "normal:MEAN:STD[:MIN:MAX]") from None
