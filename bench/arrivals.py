"""Open-loop arrival schedules: constant, Poisson and gamma (burstiness) inter-arrival times."""

from __future__ import annotations

import numpy as np

from bench.errors import WorkloadError


def arrival_offsets(arrival: str, rate: float, n: int, burstiness: float = 1.0,
                    seed: int = 0) -> np.ndarray:
    """n send offsets in seconds from the start, the first at 0.

    Poisson: exponential gaps (coefficient of variation 1). Gamma: shape `burstiness`, so the
    CV is 1/sqrt(burstiness) (below 1 is burstier than Poisson). The random gaps are rescaled
    so that their mean is exactly 1/rate: a short run then has the asked rate, not a sample of it.
    """
    if n <= 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    if arrival == "constant":
        gaps = np.full(n - 1, 1.0 / rate)
    elif arrival in ("poisson", "gamma"):
        shape = 1.0 if arrival == "poisson" else burstiness
        gaps = rng.gamma(shape, 1.0 / (rate * shape), size=n - 1)
        if n > 1 and gaps.sum() > 0:
            gaps *= (n - 1) / rate / gaps.sum()
    else:
        raise WorkloadError(f"arrival {arrival!r} is not one of constant, poisson, gamma")
    return np.concatenate([[0.0], np.cumsum(gaps)])
