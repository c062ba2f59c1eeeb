"""Whether a workload's figures measure the server, as MLPerf's LoadGen marks a run INVALID
when the load it asked for was not the load it gave.

An open-loop (rate) workload is valid when the client kept to its own schedule:

- **p99 dispatch lag** (dispatched - scheduled) at most min(10 ms, half the mean
  inter-arrival time 1/λ). TTFT and E2E count from the scheduled time, so the client's own lag
  lands in them: 10 ms is ~2% of the tightest TTFT SLO in configs/profiles.yaml (450 ms).
  A lag near the gap between arrivals reshapes the arrival process itself (requests bunch up
  and go out together), so at high rates the bound shrinks with the gap. Half the gap, not
  less: a busy host's scheduler alone lags ~4 ms (one 250 Hz tick), which at 80-100 req/s is
  still a faithful Poisson process and a sound measurement.
- **dispatch rate** at least 98% of its schedule's rate, over the same requests: the client
  did not fall behind as the run went on. A shortfall within the lag bound is let by (in a
  0.2 s run at 100 req/s, 2% is 4 ms: one late last request, which the lag rule judges).
  Both rules read the client's scheduler (dispatch), not the send: with `max_concurrency` a
  request may wait for a free slot behind a saturated server, which is a true measurement
  (the wait counts in its TTFT), not a client failure. And the schedule's own rate, not λ: a
  12-request Poisson schedule is ±30% off λ by chance.

A closed loop schedules each request the moment a worker is free (no lag by construction).
Any workload that stopped early (the endpoint failed too many requests) is invalid.
"""

from __future__ import annotations

import numpy as np

MAX_LAG_MS = 10.0
LAG_SHARE_OF_GAP = 0.5
MIN_RATE_SHARE = 0.98


def lag_bound_ms(target_rate: float | None) -> float:
    """The largest valid p99 dispatch lag at TARGET_RATE requests/s."""
    if not target_rate or target_rate <= 0:
        return MAX_LAG_MS
    return min(MAX_LAG_MS, LAG_SHARE_OF_GAP * 1000.0 / target_rate)


def invalid_reason(scheduled_s: np.ndarray, dispatched_s: np.ndarray,
                   target_rate: float | None, stop_reason: str | None = None) -> str | None:
    """Why the workload's figures are not a valid measurement, or None when they are.

    SCHEDULED_S and DISPATCHED_S are per request (seconds, one clock); TARGET_RATE is None for
    a closed loop; STOP_REASON says why the run stopped early, if it did."""
    reasons = []
    if stop_reason is not None:
        reasons.append(f"stopped early: {stop_reason}")
    if target_rate is not None:
        keep = ~(np.isnan(scheduled_s) | np.isnan(dispatched_s))
        sched, disp = scheduled_s[keep], dispatched_s[keep]
        reasons += (_lag_reason(sched, disp, target_rate)
                    + _rate_reason(sched, disp, lag_bound_ms(target_rate)))
    return "; ".join(reasons) or None


def _lag_reason(sched: np.ndarray, disp: np.ndarray, target_rate: float) -> list[str]:
    if not sched.size:
        return []
    p99 = float(np.percentile((disp - sched) * 1000.0, 99))
    bound = lag_bound_ms(target_rate)
    if p99 <= bound:
        return []
    return [f"client fell behind its schedule: p99 dispatch lag {p99:.2f} ms > {bound:.2f} ms "
            f"(min of {MAX_LAG_MS:g} ms and {LAG_SHARE_OF_GAP:g} x the mean gap at "
            f"{target_rate:g} req/s)"]


def _rate_reason(sched: np.ndarray, disp: np.ndarray, slack_ms: float) -> list[str]:
    planned, achieved = _rate(sched), _rate(disp)
    if planned is None or achieved is None or achieved >= MIN_RATE_SHARE * planned:
        return []
    behind_ms = (np.ptp(disp) - np.ptp(sched)) * 1000.0  # how much longer the sends took
    if behind_ms <= slack_ms:
        return []
    return [f"client dispatched {achieved:.3g} req/s, under {MIN_RATE_SHARE:.0%} of its "
            f"schedule's {planned:.3g} req/s"]


def _rate(times: np.ndarray) -> float | None:
    """(n - 1) / (last - first): requests per second over a span of event times."""
    times = np.sort(times)
    if times.size < 2 or times[-1] <= times[0]:
        return None
    return float((times.size - 1) / (times[-1] - times[0]))
