"""FIFO queues with C servers: the waits a queueing scripted server imposes, computed on their own.

The scripted server in queueing mode (bench.scripted_server, `slots`) holds one of C slots per
request for the request's service time and queues the rest first come, first served. These
functions compute the same waits from arrival times alone (the Kiefer–Wolfowitz recursion, the
C-server form of Lindley's: a request starts at max(its arrival, the earliest time a slot is
free)), so a test checks the server, and the capacity a search finds, against a number that
shares no code with them. With Poisson arrivals and a fixed service time this is the M/D/C
queue; its p99 wait has no closed form, so it is simulated: seeded, vectorised over rates and
replications, looping only over arrivals (the recursion is sequential in them).

Rates share one arrival pattern scaled by 1/rate (common random numbers), as the load
generator's seeded schedules do (bench.arrivals), so a quantile is monotone in the rate and
the capacity bisection is exact for the sample. Pass the load generator's own pattern to get the
capacity of the very run it measures: a p99 over a few hundred requests swings by tens of
percent around the long-run value, so only that comparison can be tight.
"""

from __future__ import annotations

import numpy as np

# Arrivals per replication of the long-run sample, and the share dropped as warm-up there
# (the queue starts empty).
ARRIVALS = 20_000
REPS = 4
WARMUP_SHARE = 0.1


def fifo_waits(arrivals_s: np.ndarray, service_s: float | np.ndarray, servers: int) -> np.ndarray:
    """Each request's wait for a free server, FIFO: ARRIVALS_S (..., n) ascending, SERVICE_S a
    scalar or per request (broadcast to the arrivals), SERVERS slots, all free at the start."""
    a = np.asarray(arrivals_s, dtype=float)
    shape = a.shape
    a = a.reshape(-1, shape[-1])
    s = np.broadcast_to(np.asarray(service_s, dtype=float), shape).reshape(a.shape)
    rows = np.arange(len(a))
    free = np.full((len(a), int(servers)), -np.inf)  # when each slot is next free
    waits = np.empty_like(a)
    for i in range(a.shape[1]):
        slot = free.argmin(axis=1)
        start = np.maximum(a[:, i], free[rows, slot])
        waits[:, i] = start - a[:, i]
        free[rows, slot] = start + s[:, i]
    return waits.reshape(shape)


def poisson_pattern(arrivals: int = ARRIVALS, reps: int = REPS, seed: int = 0) -> np.ndarray:
    """(REPS, ARRIVALS) Poisson arrival times at 1 req/s, the first at 0: divide by a rate."""
    gaps = np.random.default_rng(seed).exponential(1.0, size=(reps, arrivals - 1))
    return np.concatenate([np.zeros((reps, 1)), np.cumsum(gaps, axis=1)], axis=1)


def wait_quantile(rates: float | np.ndarray, servers: int, service_s: float, q: float = 0.99,
                  pattern: np.ndarray | None = None, warmup_share: float | None = None
                  ) -> np.ndarray:
    """The Q-quantile wait (s) at each arrival rate (req/s), C=SERVERS, fixed SERVICE_S.

    PATTERN: arrival times at 1 req/s, (n,) or (reps, n); default the long-run Poisson sample
    (M/D/C), whose first WARMUP_SHARE is dropped. A given pattern keeps every request unless
    WARMUP_SHARE says otherwise: it stands for a whole measured run that starts empty.
    """
    r = np.atleast_1d(np.asarray(rates, dtype=float))
    if pattern is None:
        pattern, warmup_share = poisson_pattern(), WARMUP_SHARE if warmup_share is None else warmup_share
    unit = np.atleast_2d(np.asarray(pattern, dtype=float))
    waits = fifo_waits(unit[None] / r[:, None, None], service_s, servers)
    waits = waits[..., int(unit.shape[1] * (warmup_share or 0.0)):]
    return np.quantile(waits.reshape(len(r), -1), q, axis=1)


def queue_capacity(max_wait_s: float, servers: int, service_s: float, q: float = 0.99,
                   pattern: np.ndarray | None = None, rel_tol: float = 1e-3, grid: int = 32,
                   warmup_share: float | None = None) -> float:
    """The highest rate (req/s) at which the Q-quantile wait is at most MAX_WAIT_S: with
    MAX_WAIT_S = the TTFT limit - the unqueued TTFT, the highest rate holding p99 TTFT.

    Default PATTERN: the long-run M/D/C value. Searched below the saturation rate
    SERVERS / SERVICE_S on a grid, refined until the bracket is within REL_TOL of it.
    """
    lo, hi = 0.0, servers / service_s
    while hi - lo > rel_tol * hi:
        rates = np.linspace(lo, hi, grid + 2)[1:-1]
        ok = wait_quantile(rates, servers, service_s, q, pattern, warmup_share) <= max_wait_s
        # Monotone in the rate (one pattern for all rates): the passes are a prefix of the grid.
        lo = float(rates[ok].max()) if ok.any() else lo
        hi = float(rates[~ok].min()) if (~ok).any() else hi
    return lo
